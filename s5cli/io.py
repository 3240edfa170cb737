"""Atomic file writes: a reader never sees a half-written checkpoint, cache entry or report.

Everything is written to a temporary file in the destination folder, then renamed over the target
(`os.replace` is atomic on POSIX within one filesystem). On any error the temporary file is removed,
so an interrupted job leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_write_path(path: str | os.PathLike[str], follow_symlinks: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it onto `path` only if the block succeeds.

    A symlink at `path` is replaced by the new file, unless `follow_symlinks` (an output the user named:
    `--json`, `--out`, `recipes cp DEST`), where it is written through as `open(path, "w")` would: the link
    stays, its target gets the new file. Cache entries, checkpoints and run files never follow one: a
    link planted in a shared folder would otherwise have the job overwrite the file it points to. A
    FIFO or device (such as /dev/stdout) is refused either way: renaming over it replaced it with a
    file and reported success. A file-system error names `path`, not the temporary file.
    """
    target = _regular_file_target(Path(path), follow_symlinks)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise os_error_about(error, path) from error
    tmp = new_temp_beside(target, path)
    try:
        yield tmp
        flush_with_default_mode(tmp)
        os.replace(tmp, target)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        if error.errno is None or error.filename not in (None, str(tmp)):
            raise  # a writer's own complaint (PIL: "cannot write mode RGBA as JPEG"), or about another file
        raise os_error_about(error, path) from error
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def new_temp_beside(target: Path, named: str | os.PathLike[str]) -> Path:
    """A new empty file beside `target`, hidden and named `.STEM.XXXX.tmpSUFFIX`, for a write that is renamed
    onto `target` once whole; an OSError names `named` (what the user asked for), not the temp file.

    The real suffix stays last: some writers (PIL, PyAV, safetensors) pick the format from it."""
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    except OSError as error:
        raise os_error_about(error, named) from error
    os.close(fd)
    return Path(name)


def flush_with_default_mode(tmp: Path) -> None:
    """Flush a written temp file to disk and give it the permissions a plain open() would have (mkstemp
    creates 0600 files): the step between writing it and renaming it into place."""
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.chmod(tmp, default_file_mode())


def _regular_file_target(path: Path, follow_symlinks: bool) -> Path:
    """The file an atomic write of `path` replaces: `path`, or with `follow_symlinks` the target of a link
    there. UserError when it is something other than a regular file or folder (folders fail on their own,
    naming it)."""
    from s5cli.errors import UserError

    try:
        # Followed: /dev/stdout and /proc/self/fd/1 are the device they name. Not followed: the link itself,
        # which the rename replaces.
        mode = (os.stat(path) if follow_symlinks else os.lstat(path)).st_mode
    except OSError:
        mode = None  # nothing there yet (or a dangling link)
    kind = _special_kind(mode)
    if kind:
        raise UserError(f"{path} is {kind}, {_NOT_WRITTEN_INTO}")
    return Path(os.path.realpath(path)) if follow_symlinks and path.is_symlink() else path


_NOT_WRITTEN_INTO = ("which s5cli does not write into (it writes whole files atomically): give a file path, or - "
                     "where the option takes it for standard output")


def _special_kind(mode: int | None) -> str | None:
    """"a pipe", "a device" or "not a regular file" for a file mode s5cli does not write into; None for a
    regular file, folder or link (or nothing there: `mode` None)."""
    import stat

    if mode is None or stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a pipe"
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file"


def os_error_about(error: OSError, name: str | os.PathLike[str]) -> OSError:
    """`error` as an OSError about `name` (what the user asked to write, not a hidden temporary file):
    the CLI reports an OSError as its file name and reason in one line."""
    return OSError(error.errno, error.strerror or str(error), os.fspath(name))


def sync_folder(folder: str | os.PathLike[str], files: bool = True) -> None:
    """Flush a folder's files (if `files`) and its entries to disk (POSIX; a no-op where folders cannot be opened).

    A folder assembled under a temporary name and renamed into place (a checkpoint) is only crash-safe
    if its contents reach the disk before the rename does; otherwise a power loss can leave the new name
    pointing at empty or torn files.
    """
    folder = Path(folder)
    if files:
        for path in folder.iterdir():
            if path.is_file():
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows cannot open a folder; its renames are journaled by NTFS
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def folder_problem(folder: str | os.PathLike[str], need_write: bool = True) -> str | None:
    """Why files cannot be created in `folder` (made on demand if missing), or None when they can.

    The nearest existing folder must be a folder, and (with `need_write`) must take a real file: a probe
    file is created and removed, not `os.access`, which root passes even on read-only mounts.
    """
    folder = Path(folder).expanduser()
    existing = next(parent for parent in (folder, *folder.absolute().parents) if parent.exists())
    if not existing.is_dir():
        return f"{existing} is a file"
    if need_write:
        try:
            fd, probe = tempfile.mkstemp(prefix=".s5-write-check.", dir=existing)
            os.close(fd)
            os.unlink(probe)
        except OSError as error:
            return f"{existing}: {error.strerror}"
    return None


def check_writable_folder(folder: str | os.PathLike[str], what: str, fix: str, need_write: bool = True) -> None:
    """UserError (naming `what` and the `fix`) unless `folder` is, or can be created as, a writable folder.

    Run before a long job, so a typo in an output path fails at once and not after hours of work.
    `need_write=False` checks only that no file is in the way (a read-only cache that is already
    complete is fine to read from).
    """
    from s5cli.errors import UserError

    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{what} {folder} is a file: {fix}")
    problem = folder_problem(folder, need_write)
    if problem:
        raise UserError(f"{what} {folder} cannot be used: {problem} ({fix})")


def check_writable(path: str | os.PathLike[str], what: str = "output", example: str = "mask.gif") -> None:
    """UserError unless `path` can be created: its folder, or the nearest existing parent, takes a new file.

    Nothing is left behind: missing folders are made only when the output is written, after the work is done.
    `example` is the file name suggested when `path` is a folder.
    """
    from s5cli.errors import UserError

    target = Path(path)
    if target.is_dir():
        raise UserError(f"{what} {target} is a folder: give a file name, e.g. {target / example}")
    problem = folder_problem(target.parent)
    if problem:
        raise UserError(f"cannot write {what} {target}: folder {target.parent} is not writable ({problem})")


def refuse_replacing_another_kind(path: str | os.PathLike[str], option: str, example: str) -> None:
    """UserError when `path` exists with another suffix than `example`'s (the kind of file `option` writes).

    Why: `--json runs/x/best/model.safetensors` would otherwise replace a checkpoint with a report, and
    the atomic write makes that look like a success.
    """
    from s5cli.errors import UserError

    target = Path(path).expanduser()
    wanted = Path(example).suffix.lower()
    if target.is_file() and target.suffix.lower() != wanted:
        raise UserError(f"{option} {target} exists and is not a {wanted} file; refusing to replace it "
                        f"(write to a new {wanted} file, e.g. {target.with_name(example)})")


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """True when `a` and `b` name one file (through symlinks or relative paths), existing or not yet."""
    first, second = Path(a), Path(b)
    if first.exists() and second.exists():
        return os.path.samefile(first, second)
    return first.resolve() == second.resolve()


_STREAM_NAMES = re.compile(r"^/dev/(stdout|stderr|stdin)$|^/(dev|proc/self|proc/\d+)/fd/\d+$")


def refuse_streams_and_devices(path: str | os.PathLike[str], option: str) -> None:
    """UserError, pointing at `-`, when `path` names a standard stream (/dev/stdout, /proc/self/fd/1) or is a
    pipe or device: s5cli writes whole files atomically, never into those.

    Why first: a stream redirected to a file was taken for that existing file ("not a .json file ... write
    to e.g. /dev/metrics.json", which created a file in /dev), and `recipes cp` said "pass --force" before
    refusing the --force.
    """
    from s5cli.errors import UserError

    named = Path(path).expanduser().absolute()
    try:
        mode = os.stat(named).st_mode  # followed: a link to a pipe is the pipe
    except OSError:
        mode = None
    kind = "a standard stream" if _STREAM_NAMES.match(named.as_posix()) else _special_kind(mode)
    if kind:
        raise UserError(f"{option} {path} is {kind}, {_NOT_WRITTEN_INTO}")


def check_output_file(path: str | os.PathLike[str], option: str, example: str) -> None:
    """`check_writable`, and no existing file of another kind replaced: checked before the work, not after it."""
    refuse_streams_and_devices(path, option)
    check_writable(Path(path).expanduser(), option, example)
    refuse_replacing_another_kind(path, option, example)


def default_file_mode() -> int:
    """The permissions a plain `open(path, "w")` gives a new file under this process's umask."""
    return 0o666 & ~_umask()


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, follow_symlinks: bool = False) -> None:
    """Write `data` to `path` atomically (`follow_symlinks` as in `atomic_write_path`)."""
    with atomic_write_path(path, follow_symlinks) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, follow_symlinks: bool = False) -> None:
    """Write `text` (UTF-8) to `path` atomically (`follow_symlinks` as in `atomic_write_path`)."""
    atomic_write_bytes(path, text.encode("utf-8"), follow_symlinks)


def atomic_write_json(path: str | os.PathLike[str], obj: Any, follow_symlinks: bool = False) -> None:
    """Write `obj` as indented JSON to `path` atomically (`follow_symlinks` as in `atomic_write_path`)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n", follow_symlinks)


class NotARegularFile(OSError):
    """A lock or data file that is a link, a FIFO or a device where a regular file belongs."""


def open_regular_file(path: str | os.PathLike[str], flags: int, mode: int = 0o666) -> int:
    """`os.open` that never follows a final symlink and never blocks on a FIFO; NotARegularFile otherwise.

    Why: lock files live in folders other people can write to (a shared run or cache folder). A planted
    link made training truncate and overwrite the file it named, and a FIFO hung every job using the
    cache until it was killed.
    """
    import errno
    import stat

    try:
        fd = os.open(path, flags | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0), mode)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise NotARegularFile(f"{path} is a symbolic link, not a regular file") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotARegularFile(f"{path} is not a regular file")
    return fd


def is_stdout(path: str | os.PathLike[str] | None) -> bool:
    """Whether an output option names stdout (`--json -`): the command then prints the JSON there alone,
    its human-readable output on stderr, and writes no file named '-'."""
    return path is not None and str(path) == "-"
