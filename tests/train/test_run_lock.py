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


def test_a_killed_trainers_forked_children_do_not_keep_its_run_folder_locked(tmp_path: Path) -> None:
    """DataLoader workers (forked) that outlive a `kill -9`ed trainer by seconds kept its lock, and an
    immediate `--resume` was refused naming the dead trainer; the trainer itself still holds it after forking."""
    import os
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    from s5cli.errors import UserError
    from tests.train.test_finetune_e2e import _env

    run, ready = tmp_path / "run", tmp_path / "child-ready"
    trainer = textwrap.dedent(f"""
        import os, sys, time
        from s5cli.train.run_lock import hold_run_folder
        hold_run_folder({str(run)!r})
        child = os.fork()
        if child == 0:  # a loader worker: lives on after its parent
            open({str(ready)!r}, "w").close()  # after the fork handlers: its copy of the lock is closed by now
            time.sleep(60)
            os._exit(0)
        print(child, flush=True)
        sys.stdin.read()
    """)
    proc = subprocess.Popen([sys.executable, "-c", trainer], env=_env(), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    if not line.isdigit():  # the trainer failed: say how
        proc.kill()
        pytest.fail(f"trainer printed {line!r}; stderr: {proc.communicate()[1]}")
    child = int(line)
    # On a loaded machine the child ran its fork handler only after the trainer had been killed, and
    # still held the lock when the test took it: wait until it has run.
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ready.exists(), "the forked child never started"
    try:
        with pytest.raises(UserError, match=f"in use by another training \\(pid {proc.pid}\\)"):
            hold_run_folder(run)  # the fork left the trainer's lock in place
        proc.kill()
        proc.wait()
        os.kill(child, 0)  # still alive
        hold_run_folder(run)  # at once: the child held no copy of the lock
        release_run_folder(run)
    finally:
        proc.kill()
        proc.wait()
        os.kill(child, signal.SIGKILL)
