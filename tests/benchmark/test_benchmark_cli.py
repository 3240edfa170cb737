"""`s5 benchmark` end to end on tiny sizes: JSON schema, every model present, ratios from the measured
numbers, over-budget handling, plot file, kernel stage. Mechanics only: nothing here asserts a speed."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from s5cli.benchmark import kernel as kernel_module
from s5cli.cli.app import app

REPO_ROOT = Path(__file__).resolve().parents[2]
# --min-time 0: exactly --repeat steps (the default would keep tiny models stepping for a second each).
TINY = ["--frames", "4", "--tokens-per-frame", "6", "--dim", "16", "--batch", "2", "--repeat", "2",
        "--min-time", "0", "--device", "cpu"]


def _invoke(args: list[str]):
    return CliRunner().invoke(app, ["benchmark", *args])


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "out.json"
    result = _invoke([*TINY, "--compare", "vit,s4", "--threads", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def test_json_has_schema_settings_and_one_row_per_model_and_mode(tiny_report: dict) -> None:
    assert tiny_report["schema"] == "s5cli-benchmark/1"
    assert tiny_report["stage"] == "model"
    assert {"settings", "machine", "results", "ratios", "slopes", "targets"} <= set(tiny_report)
    settings = tiny_report["settings"]
    assert (settings["tokens_per_frame"], settings["dim"], settings["batch"]) == (6, 16, 2)
    assert settings["threads"] == 1 and settings["processes"] == 1
    assert settings["cuda_graphs"] is False  # on for CUDA only
    pairs = {(r["model"], r["mode"]) for r in tiny_report["results"]}
    assert pairs == {(m, mode) for m in ("s5", "transformer", "s4") for mode in ("infer", "train")}
    for row in tiny_report["results"]:
        assert row["status"] == "ok", row
        assert len(row["times"]) == 2 and all(t > 0 for t in row["times"])
        assert row["process_medians"] == [row["seconds"]["median"]]  # one process: its median is the row's
        assert row["seconds"]["q1"] <= row["seconds"]["median"] <= row["seconds"]["q3"]
        assert row["peak_memory_bytes"] > 0
        assert row["params"] > 0
        assert row["threads"] == 1  # reported by the worker itself after --threads 1
        assert row["cuda_graph"] is False and row["graph_error"] is None
        assert math.isclose(row["clips_per_s"], 2 / row["seconds"]["median"])
        assert math.isclose(row["tokens_per_s"], 2 * 4 * 6 / row["seconds"]["median"])


def test_ratios_are_computed_from_the_rows(tiny_report: dict) -> None:
    rows = {(r["model"], r["mode"]): r for r in tiny_report["results"]}
    ratios = tiny_report["ratios"]
    assert {(r["model"], r["mode"]) for r in ratios} == {
        (m, mode) for m in ("transformer", "s4") for mode in ("infer", "train")}
    for ratio in ratios:
        s5, other = rows[("s5", ratio["mode"])], rows[(ratio["model"], ratio["mode"])]
        assert math.isclose(ratio["s5_throughput_ratio"], s5["clips_per_s"] / other["clips_per_s"])
        assert math.isclose(ratio["s5_memory_ratio"], s5["peak_memory_bytes"] / other["peak_memory_bytes"])
    # Targets exist for the transformer and S4 comparisons only, and agree with the ratios.
    by_pair = {(r["model"], r["mode"]): r for r in ratios}
    limits = {("transformer", "throughput"): 4.0, ("transformer", "memory"): 0.5,
              ("s4", "throughput"): 1.5, ("s4", "memory"): 0.77}
    assert len(tiny_report["targets"]) == 8
    for check in tiny_report["targets"]:
        ratio = by_pair[(check["model"], check["mode"])]
        limit = limits[(check["model"], check["metric"])]
        assert check["threshold"] == limit and check["target"] == f"{check['comparison']} {limit}"
        if check["metric"] == "throughput":
            assert check["value"] == ratio["s5_throughput_ratio"] and check["met"] == (check["value"] >= limit)
        else:
            assert check["value"] == ratio["s5_memory_ratio"] and check["met"] == (check["value"] <= limit)


@pytest.mark.parametrize(("value", "threshold", "printed"), [
    (0.7731, 0.77, "0.773"),  # two decimals would print the target itself next to "missed"
    (0.742, 0.77, "0.74"),
    (1.497, 1.5, "1.497"),
    (27.06, 4.0, "27.06"),
])
def test_a_target_value_is_never_printed_as_the_target_itself(value: float, threshold: float, printed: str) -> None:
    from s5cli.benchmark.report import _target_value

    assert _target_value({"value": value, "threshold": threshold}) == printed


@pytest.mark.parametrize(("stop", "code", "word"), [("ctrl-c", 130, "interrupted"), ("sigterm", 143, "terminated")])
def test_a_stop_mid_sweep_reports_and_writes_the_lengths_already_measured(
    tmp_path: Path, monkeypatch, stop: str, code: int, word: str
) -> None:
    from s5cli.benchmark import runner
    from s5cli.benchmark.worker_process import worker_pids
    from s5cli.errors import Terminated

    real_run_group, calls = runner.run_group, {"n": 0}

    def interrupted_at_the_second_length(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Terminated() if stop == "sigterm" else KeyboardInterrupt()
        return real_run_group(*args, **kwargs)

    monkeypatch.setattr(runner, "run_group", interrupted_at_the_second_length)
    out = tmp_path / "sweep.json"
    result = _invoke([*TINY, "--compare", "s4", "--mode", "infer", "--sweep", "2,4,8", "--repeat", "1",
                      "--threads", "1", "--json", str(out)])
    assert result.exit_code == code, result.output
    assert f"{word}; the results above" in result.output and "Traceback" not in result.output
    report = json.loads(out.read_text())
    assert report["settings"]["interrupted"] is True
    assert {(r["model"], r["frames"], r["status"]) for r in report["results"]} == {("s5", 2, "ok"), ("s4", 2, "ok")}
    assert not worker_pids()  # no worker left behind


def test_tiny_time_budget_marks_models_over_budget_without_crashing(tmp_path: Path) -> None:
    out = tmp_path / "sweep.json"
    result = _invoke([*TINY, "--compare", "vit", "--mode", "infer", "--sweep", "2,4", "--time-budget", "1e-6", "--repeat", "1",
                      "--json", str(out)])
    # Rows and JSON as usual, but a run that measured nothing must not look like a success to a script.
    assert result.exit_code == 1, result.output
    assert "over budget" in result.output and "Traceback" not in result.output
    assert "error: nothing was measured: every model went over its budget" in result.output
    report = json.loads(out.read_text())
    assert len(report["results"]) == 4  # 2 models x 2 lengths, all reported
    for row in report["results"]:
        assert row["status"] == "over budget"
        assert row["clips_per_s"] is None
    longer = [r for r in report["results"] if r["frames"] == 4]
    assert all("not run" in r["reason"] for r in longer)  # skipped after failing at 2 frames


def test_sweep_reports_slopes_and_writes_plot(tmp_path: Path) -> None:
    out, plot = tmp_path / "sweep.json", tmp_path / "sweep.png"
    result = _invoke([*TINY, "--compare", "random", "--mode", "infer", "--sweep", "2,4", "--repeat", "1", "--json", str(out),
                      "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads(out.read_text())
    assert sorted({r["frames"] for r in report["results"]}) == [2, 4]
    slopes = {(s["model"], s["mode"]): s for s in report["slopes"]}
    assert set(slopes) == {("s5", "infer"), ("random", "infer")}
    s5 = sorted((r for r in report["results"] if r["model"] == "s5"), key=lambda r: r["frames"])
    expected = math.log(s5[1]["seconds"]["median"] / s5[0]["seconds"]["median"]) / math.log(2)
    assert math.isclose(slopes[("s5", "infer")]["time_slope"], expected)
    assert any(c["metric"] == "time_slope" for c in report["targets"])


def test_kernel_stage_reports_rates_against_machine_limits(tmp_path: Path) -> None:
    out = tmp_path / "kernel.json"
    result = _invoke(["--stage", "kernel", "--frames", "8", "--tokens-per-frame", "8", "--dim", "16",
                      "--repeat", "2", "--device", "cpu", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["stage"] == "kernel" and report["length"] == 64 and report["channels"] == 16
    assert report["limits"]["matmul_gflops"] > 0 and report["limits"]["copy_gbps"] > 0
    stages = [r["stage"] for r in report["results"]]
    assert stages == ["dplr kernel", "dplr kernel + backward", "fft conv", "dplr ssm (kernel + fft conv)", "s4d kernel",
                      "s4d ssm (kernel + fft conv)"]
    for row in report["results"]:
        assert math.isclose(row["gflops"], row["gflop"] / row["best_seconds"])
        assert row["best_seconds"] == row["seconds"]["min"]
        assert math.isclose(row["fraction_of_copy"], row["gbps"] / report["limits"]["copy_gbps"])


def test_kernel_stage_generates_the_kernel_in_every_timed_call(monkeypatch) -> None:
    """Layers reuse their kernel at inference; the stage must time generation, not the reuse."""
    from s5cli.benchmark.kernel import kernel_stage
    from s5cli.models import s4_kernels

    calls = {"dplr": 0, "s4d": 0}
    for kind, cls in (("dplr", s4_kernels.DPLRKernel), ("s4d", s4_kernels.DiagonalKernel)):
        original = cls.forward

        def counting(self, *args, _original=original, _kind=kind, **kwargs):
            calls[_kind] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "forward", counting)
    kernel_stage(channels=8, length=32, batch=1, repeat=3, warmup=1, profile=False)
    # dplr: kernel, kernel + backward, ssm (4 calls each) + the length fix; s4d: kernel, ssm + the length fix.
    assert calls["dplr"] >= 3 * 4 + 1 and calls["s4d"] >= 2 * 4 + 1, calls


def test_kernel_stage_times_the_fused_kernels_beside_the_matmul_form(monkeypatch) -> None:
    """Where the fused Triton kernels run (GPUs; here Triton's CPU interpreter), the DPLR rows time them and
    two more rows time the matmul form they replaced, which must not call them."""
    pytest.importorskip("triton")
    from s5cli.benchmark.kernel import kernel_stage
    from s5cli.models import cauchy, cauchy_fused

    monkeypatch.setattr(cauchy, "fused_kernels_usable",
                        lambda g: g.dtype == torch.complex64 and not cauchy._matmul_form_forced)
    fused_calls: list[str] = []
    for name in ("generating_function", "generating_function_backward"):
        original = getattr(cauchy_fused, name)
        monkeypatch.setattr(cauchy_fused, name,
                            lambda *a, _original=original, _name=name: fused_calls.append(_name) or _original(*a))
    fused_calls_per_timing: list[int] = []  # the machine limits' two timings first, then one per stage

    def counting_timer(fn, repeat, warmup, sync, _original=kernel_module._timer):
        before = len(fused_calls)
        times = _original(fn, repeat, warmup, sync)
        fused_calls_per_timing.append(len(fused_calls) - before)
        return times

    monkeypatch.setattr(kernel_module, "_timer", counting_timer)
    report = kernel_stage(channels=4, length=16, batch=1, d_state=8, repeat=2, warmup=0, profile=False)
    stages = [row["stage"] for row in report["results"]]
    assert report["dplr_implementation"] == "fused Triton kernels"
    assert stages[:4] == ["dplr kernel, fused", "dplr kernel + backward, fused", "dplr kernel, matmul form",
                          "dplr kernel + backward, matmul form"]
    calls = fused_calls_per_timing[-len(stages):]
    assert calls[0] == 2 and calls[1] == 4, calls  # two timed runs; forward + backward in each
    assert calls[2] == 0 and calls[3] == 0, calls
    # The fused rows' bytes count only what the kernels read and write: far less than the matmul form's.
    rows = report["results"]
    assert rows[0]["gbytes"] < rows[2]["gbytes"] and rows[0]["gflop"] == rows[2]["gflop"]
    # The whole-ssm row runs the fused kernels too: its bytes are theirs plus the convolution's.
    by_stage = {row["stage"]: row for row in rows}
    ssm, conv = by_stage["dplr ssm (kernel + fft conv)"], by_stage["fft conv"]
    assert math.isclose(ssm["gbytes"], rows[0]["gbytes"] + conv["gbytes"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--compare", "nope"], "unknown model"),
        (["--dim", "12"], "multiple of 8"),
        (["--mode", "fast"], "--mode"),
        (["--keep-ratio", "0"], "--keep-ratio 0.0 is out of range: use a value in (0, 1]"),
        (["--memory-budget", "lots"], "--memory-budget"),
        (["--sweep", "a,b"], "--sweep"),
        (["--threads", "0"], "--threads"),
        (["--processes", "0"], "--processes must be at least 1"),
        (["--min-time", "-1"], "--min-time must be 0 or more seconds"),
        (["--stage", "kernel", "--processes", "2"], "drop --processes"),
        (["--stage", "kernel", "--plot", "x.png"], "--plot"),
        (["--stage", "kernel", "--compare", "s4", "--mode", "infer"], "drop --compare, --mode"),
        (["--memory-budget", "0"], "must be more than 0"),
        (["--plot", "results.xyz"], "matplotlib cannot write .xyz"),
        (["--plot", "-"], "--plot -: a plot cannot go to stdout; name a file, e.g. --plot benchmark.png"),
        (["--json", "r.png", "--plot", "./r.png"], "--json and --plot are both r.png: the plot would replace the JSON"),
        (["--time-budget", "nan"], "--time-budget nan: must be a positive number of seconds"),
        (["--json", "pyproject.toml/r.json"], "--json folder pyproject.toml is a file"),
        (["--json", "pyproject.toml"], "--json pyproject.toml exists and is not a .json file; refusing to replace"),
        (["--seed", "-1"], "--seed -1 is out of range: use a whole number from 0 to 4294967295"),
        (["--cuda-graphs"], "--cuda-graphs needs a GPU (--device cuda); this run is on cpu"),
        (["--amp"], "--amp needs a GPU (--device cuda); on cpu the models run in float32"),
        (["--device", ""], "--device is empty: use cpu, cuda, cuda:N or auto"),
        (["--stage", "kernel", "--no-cuda-graphs"], "drop --cuda-graphs/--no-cuda-graphs"),
    ],
)
def test_bad_flags_are_one_line_user_errors(args: list[str], message: str, monkeypatch) -> None:
    """Refused before any model runs (an output path checked only at the end would waste the run)."""
    import s5cli.benchmark.runner as runner

    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setattr(runner, "run_group", lambda *a, **k: pytest.fail("a model ran before the flags were checked"))
    result = _invoke([*TINY, *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "line"),
    [
        # An explicit 0 or '' once fell through `x or default` and ran the default size.
        (["--tokens-per-frame", "0"], "--tokens-per-frame 0: must be at least 1"),
        (["--dim", "0"], "--dim must be a positive multiple of 8 (the S4 decoder halves it 3 times), got 0"),
        (["--sweep", ""], "--sweep '': needs at least one frame count, e.g. 15,30,60"),
        (["--stage", "kernel", "--tokens-per-frame", "0"], "--tokens-per-frame 0: must be at least 1"),
        # Each flag is named alone, with its value, not as one of a list.
        (["--frames", "0"], "--frames 0: must be at least 1"),
        (["--sweep", "0,15"], "--sweep 0,15: every frame count must be at least 1"),
        (["--batch", "0"], "--batch 0: must be at least 1"),
        (["--batch", "-3"], "--batch -3: must be at least 1"),
        (["--warmup", "-1"], "--warmup -1: must be 0 or more"),
        (["--repeat", "0"], "--repeat 0: must be at least 1"),
        (["--threads", "0"], "--threads 0: must be at least 1"),
        # Sizes whose input has more numbers than an int64 counts failed every measurement with an overflow.
        (["--frames", str(10**20)], "--batch x frames x --tokens-per-frame x --dim is 1.92e+22 numbers, more than "
                                    "a tensor can hold (9.22e+18): use smaller sizes"),
        (["--sweep", f"15,{10**17}"], "--batch x frames x --tokens-per-frame x --dim is 1.92e+19 numbers, more "
                                      "than a tensor can hold (9.22e+18): use smaller sizes"),
        (["--stage", "kernel", "--dim", str(2**62)], "--batch x frames x --tokens-per-frame x --dim is 2.21e+20 "
                                                     "numbers, more than a tensor can hold (9.22e+18): use smaller sizes"),
    ],
)
def test_a_zero_or_empty_size_is_refused_by_its_flag_and_value(args: list[str], line: str, monkeypatch) -> None:
    import s5cli.benchmark.runner as runner
    import s5cli.cli.benchmark as command

    monkeypatch.setattr(runner, "run_group", lambda *a, **k: pytest.fail("a model ran before the flags were checked"))
    monkeypatch.setattr(command, "_run_kernel_stage", lambda *a, **k: pytest.fail("the kernel stage ran"))
    result = _invoke([*TINY, *args])
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [f"error: {line}"]


def test_unset_sizes_still_take_the_cpu_defaults(monkeypatch) -> None:
    """The `is None` checks that refuse an explicit 0 must leave the defaults of an omitted flag alone."""
    import s5cli.cli.benchmark as command

    seen: list[tuple] = []
    monkeypatch.setattr(command, "_run_kernel_stage", lambda *args: seen.append(args))
    result = _invoke(["--stage", "kernel", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    (device, channels, length, batch, *_), = seen
    assert (device, channels, length, batch) == ("cpu", command.CPU_DIM, 60 * command.CPU_TOKENS_PER_FRAME, 1)


def test_plot_without_matplotlib_is_a_clear_user_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import importlib.util
    import sys

    from s5cli.benchmark.plot import write_plot
    from s5cli.errors import UserError

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real_find_spec(name, *a))
    result = _invoke([*TINY, "--plot", str(tmp_path / "x.png")])
    assert result.exit_code == 2
    assert "pip install" in result.output and "matplotlib" in result.output
    assert not (tmp_path / "x.png").exists()  # refused before any model ran
    # The plot module itself says the same when the import fails.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(UserError, match="matplotlib"):
        write_plot({"results": []}, tmp_path / "y.png")


def test_a_pgf_plot_without_its_tex_program_is_refused_before_the_run(monkeypatch, tmp_path: Path) -> None:
    """matplotlib lists pgf among its formats, but writes it with a TeX program: without one the plot failed
    with a traceback after the whole run."""
    import shutil

    import matplotlib

    import s5cli.benchmark.runner as runner

    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)
    monkeypatch.setattr(runner, "run_group", lambda *a, **k: pytest.fail("a model ran before the flags were checked"))
    result = _invoke([*TINY, "--plot", str(tmp_path / "out.pgf")])
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [
        f"error: --plot {tmp_path / 'out.pgf'}: matplotlib writes .pgf with {matplotlib.rcParams['pgf.texsystem']}, "
        "which is not on PATH; use .png, .svg or .pdf, or install TeX"]


def test_a_plot_that_cannot_be_written_is_one_line_and_the_json_is_kept(monkeypatch, tmp_path: Path) -> None:
    from s5cli.benchmark import plot
    from tests.benchmark.fake_worker import use_fake_workers

    use_fake_workers(monkeypatch, {"s5": {}, "s4": {}})

    def write_plot(report, path):
        raise RuntimeError("latex was not able to process the following string:\nb'lp'")

    monkeypatch.setattr(plot, "write_plot", write_plot)
    out, figure = tmp_path / "r.json", tmp_path / "r.png"
    result = _invoke([*TINY, "--compare", "s4", "--mode", "infer", "--json", str(out), "--plot", str(figure)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.output.splitlines()[-1] == (
        f"error: --plot {figure}: the plot could not be written: latex was not able to process the following "
        f"string; the results are in --json {out}")
    assert {row["model"] for row in json.loads(out.read_text())["results"]} == {"s5", "s4"}


def test_ctrl_c_in_the_kernel_stage_writes_nothing_as_the_help_says(monkeypatch, tmp_path: Path) -> None:
    """The help promised partial results on Ctrl-C for both stages; the kernel stage keeps none."""
    help_text = " ".join(CliRunner().invoke(app, ["benchmark", "--help"], env={"COLUMNS": "200"}).output.split())
    assert "what was measured so far, exit 130 (--stage kernel then writes nothing)" in help_text

    def interrupted(**kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(kernel_module, "kernel_stage", interrupted)
    out = tmp_path / "kernel.json"
    result = _invoke(["--stage", "kernel", "--frames", "8", "--tokens-per-frame", "8", "--dim", "16",
                      "--device", "cpu", "--json", str(out)])
    assert result.exit_code == 130 and "error: interrupted" in result.output
    assert not out.exists()


def test_the_plot_says_where_a_model_went_over_budget_and_labels_every_length(tmp_path: Path, monkeypatch) -> None:
    """Over-budget lengths were left out of the plot (and of its x ticks): a line ending at 8 frames read
    like a sweep that ended there, and a model over budget everywhere was not in the legend at all."""
    import matplotlib.pyplot as plt

    from s5cli.benchmark import plot

    def row(model: str, frames: int, status: str = "ok") -> dict:
        ok = status == "ok"
        return {"model": model, "mode": "infer", "frames": frames, "status": status,
                "seconds": {"median": 0.01 * frames} if ok else None, "peak_memory_bytes": 2**20 * frames if ok else None}

    report = {"settings": {"frames": [4, 8, 16, 32]},
              "results": [row("s5", 4), row("s5", 8), row("s5", 16, "over budget"),
                          row("transformer", 4, "over budget")]}
    assert plot.series_label("s5", "infer", report["results"]) == "s5 (infer), over budget from 16 frames"
    assert plot.series_label("transformer", "infer", report["results"]) == (
        "transformer (infer), over budget from 4 frames")
    assert plot.tick_frames(report) == [4, 8, 16, 32]
    drawn: list = []
    monkeypatch.setattr(plt, "close", drawn.append)  # keep the figure to read its legend
    plot.write_plot(report, tmp_path / "p.png")
    legends = [[t.get_text() for t in axis.get_legend().get_texts()] for axis in drawn[0].axes]
    assert legends == [["s5 (infer), over budget from 16 frames", "transformer (infer), over budget from 4 frames"]] * 2
    assert [int(t) for t in drawn[0].axes[0].get_xticks()] == [4, 8, 16, 32]


def test_help_shows_the_cpu_and_cuda_default_sizes() -> None:
    result = CliRunner().invoke(app, ["benchmark", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "[default: 50 on CPU, 197 on CUDA]" in text  # brackets escaped, not eaten as Rich markup
    assert "[default: 768 on CPU, 1024 on CUDA]" in text


@pytest.mark.parametrize(("device", "graphs", "met", "hint"), [
    ("cpu", False, False, "--processes 3 or --threads 1"), ("cpu", False, True, None),
    ("cuda", True, False, "selection is a fixed cost"), ("cuda", True, True, None),
    ("cuda", False, False, "CUDA graphs (the default there)"),
])
def test_a_missed_speed_target_says_why_and_what_to_do(device: str, graphs: bool, met: bool, hint: str | None) -> None:
    from rich.console import Console

    from s5cli.benchmark.report import render

    check = {"model": "s4", "mode": "infer", "frames": 60, "metric": "throughput", "value": 1.4 if not met else 1.6,
             "target": ">= 1.5", "comparison": ">=", "threshold": 1.5, "met": met}
    memory = {**check, "metric": "memory", "value": 0.9, "target": "<= 0.77", "comparison": "<=",
              "threshold": 0.77, "met": False}  # a missed memory target is no matter of load
    report = {"settings": {"device": device, "cuda_graphs": graphs}, "results": [], "ratios": [], "slopes": [],
              "targets": [check, memory]}
    out = io.StringIO()
    render(report, Console(file=out, width=200))
    text = out.getvalue()
    for expected in ("--processes 3 or --threads 1", "selection is a fixed cost", "CUDA graphs (the default there)"):
        assert (expected in text) == (expected == hint)
    assert ("README, 'On a GPU'" in text) == (hint is not None and device == "cuda")
    assert "target S5 throughput vs s4 (infer, 60 frames)" in text


@pytest.mark.parametrize(("settings", "hint"), [
    ({"threads": 1}, "steadier: --processes 3 (benchmarks"),
    ({"threads": 1, "processes": 3}, "speed ratios vary between runs; compare several runs"),
    ({"tokens_per_frame": 50, "dim": 768}, "steadier: --processes 3 or --threads 1"),
    ({"tokens_per_frame": 8, "dim": 32}, "the targets are set for the default size (60 x 50 x 768)"),
])
def test_the_cpu_hint_offers_only_what_the_run_did_not_use(settings: dict, hint: str) -> None:
    from s5cli.benchmark.report import missed_speed_hint

    check = {"model": "s4", "mode": "infer", "frames": 60, "metric": "throughput", "met": False}
    assert hint in missed_speed_hint({"settings": {"device": "cpu", **settings}, "targets": [check]})


@pytest.mark.parametrize(("model", "mode", "thin"), [("s4", "infer", True), ("s4", "train", False),
                                                     ("transformer", "infer", False)])
def test_the_cpu_hint_says_when_the_miss_is_s5s_thin_inference_lead_over_s4(model: str, mode: str, thin: bool) -> None:
    from s5cli.benchmark.report import missed_speed_hint

    check = {"model": model, "mode": mode, "frames": 60, "metric": "throughput", "met": False}
    hint = missed_speed_hint({"settings": {"device": "cpu", "tokens_per_frame": 50, "dim": 768}, "targets": [check]})
    assert hint.startswith("one run is one sample")
    assert ("near 1.5x even in steady runs (benchmarks/README.md, v24)" in hint) == thin


def test_piped_report_keeps_each_text_line_whole(tiny_report: dict) -> None:
    """In a log the table is widened to 132 columns and no sentence is split over two lines."""
    from rich.console import Console

    from s5cli.benchmark.report import render

    out = io.StringIO()
    render(tiny_report, Console(file=out, width=80))
    lines = out.getvalue().splitlines()
    footnote = next(line for line in lines if line.startswith("S5 speedup = "))
    assert footnote.rstrip().endswith("+ optimiser state in train).")  # both modes in the table
    assert max(len(line) for line in lines) > 80  # the table's width, not a terminal's


def test_device_is_checked_as_every_command_checks_it(monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    result = CliRunner().invoke(app, ["benchmark", "--device", "cuda:7"])
    assert result.exit_code == 2  # a GPU this machine lacks used to reach the workers
    assert "error: --device cuda:7: this machine has 4 CUDA device(s), numbered from 0" in result.output
    result = CliRunner().invoke(app, ["benchmark", "--device", "gpu"])
    assert result.exit_code == 2 and "--device 'gpu' is not a device: use cpu, cuda, cuda:N or auto" in result.output


def test_json_dash_prints_the_report_on_stdout_and_the_table_on_stderr(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = _invoke([*TINY, "--compare", "vit", "--mode", "infer", "--repeat", "1", "--json", "-"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # nothing else on stdout
    assert {row["model"] for row in report["results"]} == {"s5", "transformer"}
    assert "transformer" in result.stderr and not (tmp_path / "-").exists()


def test_quiet_keeps_the_settings_and_the_table_but_no_progress_lines() -> None:
    result = _invoke([*TINY, "--compare", "s4", "--mode", "infer", "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("s5 benchmark on cpu: frames 4")
    assert "step median" in result.output  # the table
    assert not any(word in result.output for word in ("building ", "round 1/", "memory run "))


def test_a_stop_without_a_sweep_keeps_the_rounds_already_measured(tmp_path: Path, monkeypatch) -> None:
    """One group only: Ctrl-C there used to write nothing, whatever had been measured."""
    from s5cli.benchmark.worker_process import worker_pids
    from tests.benchmark.fake_worker import stop_in_round, use_fake_workers

    use_fake_workers(monkeypatch, {"s5": {"step": 0.02}, "s4": {"step": 0.03}})
    stop_in_round(monkeypatch, 4)
    out = tmp_path / "stopped.json"
    result = _invoke([*TINY, "--compare", "s4", "--mode", "infer", "--repeat", "10", "--json", str(out)])
    assert result.exit_code == 130, result.output
    assert "interrupted; the results above" in result.output and "Traceback" not in result.output
    report = json.loads(out.read_text())
    assert report["settings"]["interrupted"] is True
    assert [(r["model"], r["times"], r["interrupted"]) for r in report["results"]] == [
        ("s5", [0.02] * 3, True), ("s4", [0.03] * 3, True)]
    assert math.isclose(report["ratios"][0]["s5_throughput_ratio"], 1.5)
    assert not worker_pids()
