"""A ./.s5/last_run naming a run that was deleted since: `s5 eval` and `s5 visualize-mask` without
--checkpoint said "no finetune run in this folder" though other runs sat beside it; they now name the
missing run and the runs there to pass instead."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from s5cli.cli.app import app


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """runs/a and runs/b (a `latest` each), runs/empty without a checkpoint, and a marker naming runs/gone."""
    monkeypatch.chdir(tmp_path)
    for name in ("a", "b"):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "latest").write_text("checkpoints/step-1\n")
    (tmp_path / "runs" / "empty").mkdir()
    _mark(tmp_path / "runs" / "gone")
    return tmp_path / "runs"


def _mark(run: Path) -> None:
    (Path(".s5")).mkdir(exist_ok=True)
    (Path(".s5") / "last_run").write_text(f"{run}\n")


def _said(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(app, args)
    return result.exit_code, " ".join(result.output.split())


@pytest.mark.parametrize("command", [["eval"], ["visualize-mask", "movie.mp4", "--out", "m.gif"]])
def test_a_deleted_last_run_is_named_with_the_runs_beside_it(runs: Path, command: list[str]) -> None:
    Path("movie.mp4").write_bytes(b"")  # checked before the model: it has to exist
    assert _said(command) == (2, f"error: the last finetune run here ({runs / 'gone'}) no longer exists; pass "
                                 "-c/--checkpoint <run folder> (runs there: runs/a, runs/b)")
    _mark(runs / "empty")  # killed before its first checkpoint
    assert _said(command) == (2, f"error: the last finetune run here ({runs / 'empty'}) holds no checkpoint; pass "
                                 "-c/--checkpoint <run folder> (runs there: runs/a, runs/b)")


def test_without_a_marker_the_message_is_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert _said(["eval"]) == (2, "error: no --checkpoint given and no finetune run in this folder: run "
                                  "`s5 finetune RECIPE` first")
