"""In-use marks on cache folders, so `s5 cache clean` never deletes what a running job reads or writes.

A job that uses a cache folder (generates synthetic videos into it, extracts tokens into it, trains from
it) takes a *shared* advisory lock (`flock`) on the folder's `.in-use.lock` file and keeps it until the
process exits; DataLoader workers and DDP ranks share or take their own. `s5 cache clean` takes the
*exclusive* lock without waiting before it deletes a folder, and skips the folder when it cannot: the
kernel releases locks of killed processes, so a crashed job never leaves a folder marked forever (unlike
a PID file). Where `fcntl` does not exist (Windows) folders are never marked and `clean` cannot tell.

Extraction also claims each video before it decodes it (`claim`): an exclusive lock on `.<video id>.claim`
in the token folder, held until its tokens are saved, so two extractions of one cache (a finetune of S5
and one of S4 started together) share the videos instead of each extracting all of them.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from s5cli.io import NotARegularFile, open_regular_file

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".in-use.lock"
CLAIM_SUFFIX = ".claim"  # `.<video id>.claim`: a video being extracted (`claim`)
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


def is_claim(name: str) -> bool:
    """Whether a file name is a video's claim (`claim`): no cached data, left out of sizes and counts."""
    return name.startswith(".") and name.endswith(CLAIM_SUFFIX)


class Claim:
    """A video this process extracts: its claim file locked exclusively, until `release`."""

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path, self._fd = path, fd

    def release(self) -> None:
        """Delete the claim file, then unlock it: a waiter then finds the tokens saved (or takes over)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None


def claim(folder: str | os.PathLike[str], name: str, wait: bool) -> Claim | None:
    """Claim `name` (a video id) in an existing `folder`; None when another process has it and not `wait`.

    Without `fcntl` (Windows), or in a folder this process cannot write, the claim guards nothing (every
    process extracts, as before claims). The holder deletes the file when done, so a claim taken on a file
    that was deleted meanwhile is dropped and taken again on the file now at the path (as `mark_in_use`).
    """
    path = Path(folder) / f".{name}{CLAIM_SUFFIX}"
    if fcntl is None:
        return Claim(path, None)
    while True:
        try:
            fd = open_regular_file(path, os.O_RDONLY | os.O_CREAT, 0o666)
        except OSError:  # read-only folder, or a link or FIFO planted as the claim: extract unguarded
            return Claim(path, None)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            held, current = os.fstat(fd), os.stat(path)
        except BlockingIOError:
            os.close(fd)
            return None
        except FileNotFoundError:  # released (and deleted) while we waited
            os.close(fd)
            continue
        except BaseException:  # Ctrl-C while waiting
            os.close(fd)
            raise
        if (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino):
            return Claim(path, fd)
        os.close(fd)


class Claims:
    """The claims one extraction holds, by video id: taken by its decoding thread, released by its loop."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._held: dict[str, Claim] = {}
        self._lock = threading.Lock()

    def take(self, name: str, wait: bool) -> bool:
        """Whether this extraction holds `name` now (already, or claimed here); see `claim`."""
        with self._lock:
            if name in self._held:
                return True
        taken = claim(self.folder, name, wait)
        if taken is None:
            return False
        try:
            with self._lock:
                self._held[name] = taken
        except BaseException:  # Ctrl-C before it was recorded: a held, unrecorded lock blocked a later run
            taken.release()
            raise
        return True

    def release(self, name: str) -> None:
        """Give up the claim on `name`, if held."""
        with self._lock:
            taken = self._held.pop(name, None)
        if taken is not None:
            taken.release()

    def release_all(self) -> None:
        """Give up every claim (the run ended, maybe by an error: a claim left held blocked a later run of
        the same process forever, as a lock conflicts with another open file of the same process)."""
        with self._lock:
            held, self._held = list(self._held.values()), {}
        for taken in held:
            taken.release()
