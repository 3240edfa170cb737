"""The run-folder lock: a run folder that a failed start created goes again, with the folders made for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from s5cli.train import run_lock
from s5cli.train.run_lock import hold_run_folder, release_run_folder

pytestmark = pytest.mark.skipif(run_lock.fcntl is None, reason="no fcntl: run folders are not locked")


def test_a_failed_start_leaves_none_of_the_folders_it_made(tmp_path: Path) -> None:
    """`runs/` of the bundled recipes' `runs/synthetic` stayed behind, empty, after a start that failed."""
    hold_run_folder(tmp_path / "runs" / "deep" / "synthetic")
    assert (tmp_path / "runs" / "deep" / "synthetic" / run_lock.LOCK_NAME).is_file()
    release_run_folder(tmp_path / "runs" / "deep" / "synthetic")
    assert list(tmp_path.iterdir()) == []


def test_folders_that_existed_or_hold_something_else_stay(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    hold_run_folder(tmp_path / "runs" / "new" / "synthetic")
    (tmp_path / "runs" / "new" / "notes.txt").write_text("mine")  # written meanwhile: not ours to delete
    release_run_folder(tmp_path / "runs" / "new" / "synthetic")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "runs", "runs/new", "runs/new/notes.txt"]
    hold_run_folder(tmp_path / "runs" / "other")
    release_run_folder(tmp_path / "runs" / "other")
    assert (tmp_path / "runs").is_dir() and not (tmp_path / "runs" / "other").exists()
