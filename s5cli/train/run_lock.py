"""One training process per run folder: an exclusive lock on the folder's `.training.lock` while it trains.

Why: two trainers in one folder (a preemptible job restarted while the old one still ran, or the same
command launched twice) both trained to the end, wrote each other's checkpoints and interleaved their
metrics. The second one now stops at once with one line naming the first one's process id. The kernel
releases the lock when the process ends, however it ends, so a killed run never leaves its folder locked.
Under torchrun only rank 0 takes it (the ranks of one job share the folder). Without `fcntl` (Windows)
nothing is locked.
"""

from __future__ import annotations

import os
from pathlib import Path

from s5cli.errors import UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".training.lock"
_held: dict[str, int] = {}  # real path of a run folder -> descriptor holding its lock


def hold_run_folder(out_dir: Path) -> None:
    """Lock `out_dir` (created if missing) for this process until it exits; UserError if another has it."""
    if fcntl is None or os.environ.get("RANK", "0") != "0":
        return
    out_dir = Path(out_dir)
    key = os.path.realpath(out_dir)
    if key in _held:
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(out_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise UserError(f"run folder {out_dir} is in use by another training (pid {holder}): wait for it to "
                        "finish, or train into another folder (--out)") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode("ascii"))
    _held[key] = fd


def release_run_folder(out_dir: Path) -> None:
    """Give the lock back before the process ends (in-process callers such as tests train several runs)."""
    fd = _held.pop(os.path.realpath(Path(out_dir)), None)
    if fd is not None:
        os.close(fd)
