"""benchmarks/models.py: the summary of every part's target checks, without running `s5 benchmark`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.benchmark.scripts import load_script

TARGETS = [
    {"model": "s4", "mode": "infer", "frames": 60, "metric": "throughput", "value": 1.62, "target": ">= 1.5",
     "met": True, "verdict": "met"},
    {"model": "s4", "mode": "infer", "frames": 60, "metric": "memory", "value": 0.81, "target": "<= 0.77",
     "met": False, "verdict": "missed"},
    {"model": "s5", "mode": "infer", "frames": [15], "requested_frames": [15, 30, 60], "metric": "time_slope",
     "value": None, "target": "<= 1.15", "met": None, "verdict": "not fitted"},
    {"model": "s5", "mode": "train", "frames": [15, 30], "requested_frames": [15, 30, 60], "metric": "time_slope",
     "value": 1.02, "target": "<= 1.15", "met": None, "verdict": "incomplete"},
]


def test_the_summary_prints_each_verdict_and_a_value_only_where_there_is_one(tmp_path: Path, monkeypatch,
                                                                             capsys) -> None:
    """A slope that could not be fitted (value None) crashed the summary with a TypeError, and an
    "incomplete" one (met None) read MISSED."""
    models = load_script("models")
    commands: list[list[str]] = []

    def run(command: list[str], check: bool) -> subprocess.CompletedProcess:
        commands.append(command)
        Path(command[command.index("--json") + 1]).write_text(json.dumps({"targets": TARGETS}))
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(models.subprocess, "run", run)
    monkeypatch.setattr(sys, "argv", ["models.py", "--only", "sweep", "--out", str(tmp_path)])
    assert models.main() == 0
    assert commands[0][:3] == ["s5", "benchmark", "--sweep"]
    assert capsys.readouterr().out.splitlines() == [
        "sweep: S5 throughput vs s4 (infer, 60 frames) = 1.62 (target >= 1.5) met",
        "sweep: S5 memory vs s4 (infer, 60 frames) = 0.81 (target <= 0.77) MISSED",
        "sweep: S5 time_slope (infer, 15 of 15,30,60 frames) (target <= 1.15) not fitted",
        "sweep: S5 time_slope (train, 15,30 of 15,30,60 frames) = 1.02 (target <= 1.15) incomplete",
    ]
