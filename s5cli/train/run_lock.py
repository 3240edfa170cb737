"""One training process per run folder: an exclusive lock on the folder's `.training.lock` while it trains.

Why: two trainers in one folder (a preemptible job restarted while the old one still ran, or the same
command launched twice) both trained to the end, wrote each other's checkpoints and interleaved their
metrics. The second one now stops at once with one line naming the first one's process id. The kernel
releases the lock when the process ends, however it ends, so a killed run never leaves its folder locked.
Under torchrun only rank 0 takes it (the ranks of one job share the folder). Without `fcntl` (Windows)
nothing is locked. Forked children (DataLoader workers) close their copy of the lock's descriptor, so the
lock ends with the trainer itself, not with the last of its workers.
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

from s5cli import torchrun_env
from s5cli.errors import UserError
from s5cli.io import NotARegularFile, open_regular_file

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".training.lock"
# real path of a run folder -> (descriptor holding its lock, the outermost folder this process created for it,
# None when the run folder existed)
_held: dict[str, tuple[int, Path | None]] = {}


def hold_run_folder(out_dir: Path) -> None:
    """Lock `out_dir` (created if missing) for this process until it exits; UserError if another has it."""
    if fcntl is None or torchrun_env.rank() != 0:
        return
    out_dir = Path(out_dir)
    key = os.path.realpath(out_dir)
    if key in _held:
        return
    created = _outermost_missing(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = open_regular_file(out_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except NotARegularFile as error:
        raise UserError(f"{error}: remove it (a training writes its process id there), or train into "
                        "another folder (--out)") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise UserError(f"run folder {out_dir} is in use by another training (pid {holder}): wait for it to "
                        "finish, or train into another folder (--out)") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode("ascii"))
    _held[key] = (fd, created)
    _leave_locks_out_of_forks()


@functools.cache
def _leave_locks_out_of_forks() -> None:
    """Have every forked child close this process's run-folder locks (registered once per process).

    Why: a flock belongs to the open file, which a fork shares; DataLoader workers that outlived a
    `kill -9`ed trainer (they notice its death seconds later) kept its folder locked, and an immediate
    `--resume` was refused, naming the dead trainer. Closing the child's copy leaves the parent's lock
    in place.
    """
    os.register_at_fork(after_in_child=_drop_held_in_child)


def _drop_held_in_child() -> None:
    """In a freshly forked child: close the inherited lock descriptors and forget them (the child neither
    holds nor releases the parent's run folders)."""
    for fd, _created in _held.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()


def release_run_folder(out_dir: Path) -> None:
    """Give the lock back; a folder this process created and never wrote into goes too, with the empty
    folders made for it (`runs/` of `runs/synthetic`).

    Why remove it: a command that fails its checks after taking the lock (a mistyped --device, a missing
    train.init, data not found) otherwise left an empty run folder holding only the lock file, named
    after the recipe, in the user's working folder.
    """
    held = _held.pop(os.path.realpath(Path(out_dir)), None)
    if held is None:
        return
    fd, created = held
    try:
        if created is not None and os.listdir(out_dir) == [LOCK_NAME]:
            # Still holding the lock, so no other trainer is using the folder; one that races in now finds
            # no folder, or a new lock file that makes rmdir fail (then the folder stays, as before).
            os.unlink(Path(out_dir) / LOCK_NAME)
            os.rmdir(out_dir)
            # The folders made for it too (`runs/` of the bundled `runs/synthetic`), while they are empty.
            folder = Path(out_dir)
            while folder != created and created in folder.parents:
                folder = folder.parent
                os.rmdir(folder)
    except OSError:
        pass
    finally:
        os.close(fd)


def _outermost_missing(folder: Path) -> Path | None:
    """The outermost of `folder` and its parents that does not exist yet (what `mkdir(parents=True)` makes
    first), None when `folder` exists."""
    missing = None
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            break
        missing = candidate
    return missing
