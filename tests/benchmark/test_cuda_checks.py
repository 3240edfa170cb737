"""benchmarks/cuda_checks.py runs every step without a GPU too, so it cannot rot between borrowed GPUs."""

from __future__ import annotations

import json

from tests.benchmark.scripts import run_script


def test_runs_every_check_on_the_cpu_and_reports_null_where_cuda_is_needed(tmp_path) -> None:
    out = tmp_path / "checks.json"
    completed = run_script("cuda_checks", "--frames", "4", "--tokens-per-frame", "6", "--dim", "32", "--batch", "2",
                           "--json", str(out))
    report = json.loads(out.read_text())
    assert json.loads(completed.stdout) == report
    assert report["device"] == "cpu" and report["cpu_vs_cuda"] is None
    assert report["sizes"] == {"frames": 4, "tokens_per_frame": 6, "dim": 32, "batch": 2}
    expected = {f"{m} {mode} amp={amp}" for m in ("s5", "s4") for mode in ("train", "infer") for amp in (False, True)}
    assert set(report["syncs"]) == expected | {"lsmcl train"}
    assert all(entry == {"syncs_per_step": None} for entry in report["syncs"].values())
