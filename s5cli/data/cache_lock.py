"""In-use marks on cache folders, so `s5 cache clean` never deletes what a running job reads or writes.

A job that uses a cache folder (generates synthetic videos into it, extracts tokens into it, trains from
it) takes a *shared* advisory lock (`flock`) on the folder's `.in-use.lock` file and keeps it until the
process exits; DataLoader workers and DDP ranks share or take their own. `s5 cache clean` takes the
*exclusive* lock without waiting before it deletes a folder, and skips the folder when it cannot: the
kernel releases locks of killed processes, so a crashed job never leaves a folder marked forever (unlike
a PID file). Where `fcntl` does not exist (Windows) folders are never marked and `clean` cannot tell.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from s5cli.io import NotARegularFile, open_regular_file

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".in-use.lock"
_held: dict[str, int] = {}  # real path of a folder -> the descriptor holding its shared lock


def mark_in_use(folder: str | os.PathLike[str]) -> None:
    """Mark `folder` (created if missing) as used by this process until it exits.

    Idempotent and cheap after the first call. Waits only while a `clean` is deleting the folder, then
    marks the folder as recreated. A folder this process cannot write to is not marked.
    """
    if fcntl is None:
        return
    folder = Path(folder)
    key = os.path.realpath(folder)
    if key in _held:
        return
    while True:
        lock_path = folder / LOCK_NAME
        try:
            folder.mkdir(parents=True, exist_ok=True)
            # Read-only is enough for flock, so a lock file another user created still works.
            fd = open_regular_file(lock_path, os.O_RDONLY | os.O_CREAT, 0o666)
        except OSError:  # a read-only cache (shared tokens on a read-only mount): nobody can clean it either;
            return  # a link or FIFO planted as the lock (NotARegularFile): never followed, never waited on
        fcntl.flock(fd, fcntl.LOCK_SH)
        # A clean may have deleted the folder while we waited: the lock is then on a file nobody can
        # find. Only a lock on the file now at the path counts.
        try:
            held, current = os.fstat(fd), os.stat(lock_path)
            if (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino):
                _held[key] = fd
                return
        except FileNotFoundError:
            pass
        os.close(fd)


def in_use(folder: str | os.PathLike[str]) -> bool:
    """Whether a running process has marked `folder` (never waits)."""
    with exclusive(folder) as free:
        return not free


@contextlib.contextmanager
def exclusive(folder: str | os.PathLike[str]) -> Iterator[bool]:
    """Hold `folder`'s lock exclusively for the block if nobody has it marked; yields whether it got it.

    A folder without a lock file was never marked (or is not a cache folder): yields True, locks nothing.
    """
    if fcntl is None:
        yield True
        return
    try:
        fd = open_regular_file(Path(folder) / LOCK_NAME, os.O_RDONLY)
    except NotARegularFile:  # a link or FIFO as the lock: not s5cli's, so nothing to clean on its say-so
        yield False
        return
    except (FileNotFoundError, NotADirectoryError, PermissionError):  # unreadable: deleting will say why
        yield True
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


def release_all() -> None:
    """Drop every mark this process holds (tests; a process's marks otherwise end with it)."""
    for fd in _held.values():
        os.close(fd)
    _held.clear()
