"""benchmarks/selection_claim.py (the README's selection table): results of an earlier invocation are reused
only aloud. A silently reused work folder once published a table that did not reproduce."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "selection_claim.py"


@pytest.fixture
def claim(monkeypatch: pytest.MonkeyPatch):
    spec = importlib.util.spec_from_file_location("selection_claim", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    commands: list[list[str]] = []
    monkeypatch.setattr(module, "run", commands.append)
    module.commands = commands
    return module


def test_a_run_and_a_probe_of_an_earlier_invocation_are_reused_aloud(claim, tmp_path, capsys) -> None:
    (tmp_path / "s5-seed0" / "best").mkdir(parents=True)
    assert claim.finished(tmp_path / "s5-seed0" / "best")
    assert f"reusing {tmp_path / 's5-seed0'}" in capsys.readouterr().err
    probe = tmp_path / "lsmcl.probe.json"
    probe.write_text(json.dumps({"probe_top1": 0.75}))
    assert claim.probe_top1(["runs/x"], tmp_path, "lsmcl") == 0.75
    assert claim.commands == []  # nothing ran again
    assert f"reusing {probe}" in capsys.readouterr().err  # it used to be reused without a word


def test_a_missing_probe_is_measured(claim, tmp_path, capsys) -> None:
    def measure(command: list[str]) -> None:
        claim.commands.append(command)
        Path(command[command.index("--json") + 1]).write_text(json.dumps({"probe_top1": 0.5}))

    claim.run = measure
    assert claim.probe_top1(["runs/x"], tmp_path, "fresh") == 0.5
    assert len(claim.commands) == 1 and "linear_probe.py" in claim.commands[0][1]
    assert "reusing" not in capsys.readouterr().err
    assert not claim.finished(tmp_path / "nothing" / "best")
