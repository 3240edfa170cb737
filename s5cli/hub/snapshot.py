"""A still copy of a checkpoint folder to push, taken while a trainer may be replacing that folder.

Why: `s5 push RUN` read the card's metadata at the start but the weights and metrics.json only during the
upload, while a running trainer replaces best/ (and a step checkpoint saved again) by renaming folders; one
push could then publish the weights of one checkpoint under the card and metrics of another. Files are
hard-linked (copied where links are impossible) into a temporary folder first, and everything the push
reads or uploads comes from that copy.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from s5cli.errors import UserError

RETRY_PAUSE_S = 0.5  # long enough for a trainer to finish the two renames of a checkpoint replace
# Reads relative to an open folder (Linux, macOS): all files then come from one directory, whatever is
# renamed meanwhile. Elsewhere paths are used, and a replace is caught by comparing the folder's inode.
_FOLDER_READS = (os.link in os.supports_dir_fd and os.stat in os.supports_dir_fd and os.open in os.supports_dir_fd
                 and hasattr(os, "O_DIRECTORY"))


class CheckpointChanged(Exception):
    """The checkpoint folder was replaced, or lost a file, while it was being copied."""


def refuse_link(source: Path, file: Path) -> UserError:
    """The refusal for a checkpoint file that is a link or not a plain file.

    Why: a checkpoint in a shared folder whose metrics.json or trainer_state.json was a symlink to the
    user's ~/.docker/config.json or an SSH key uploaded that file to the Hub (possibly a public repo).
    """
    return UserError(f"{file} is a link or lies outside the checkpoint {source}: s5 push uploads only the "
                     "files s5cli wrote there (replace the link by the file, or push another checkpoint)")


def _open_folder(folder: Path) -> int | None:
    """A descriptor of `folder`, so every file is taken from that one directory even if it is renamed away
    (and its inode cannot be reused for the next copy while held); None where the OS has no such reads."""
    if not _FOLDER_READS:
        return None
    try:
        return os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        raise CheckpointChanged from None


def _same_folder(folder: Path, fd: int | None, before: os.stat_result) -> bool:
    """Whether `folder` still names the directory the files were taken from (not replaced, not removed)."""
    try:
        now = os.stat(folder)
    except FileNotFoundError:
        return False
    held = os.fstat(fd) if fd is not None else before
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def _link_or_copy(file: Path, target: Path, folder_fd: int | None) -> None:
    """Hard-link `file` to `target` (no bytes copied; a later rename over `file` leaves the link intact), or
    copy it where links are impossible (another file system). Read through `folder_fd` when given; links
    themselves are never followed."""
    at = {"src_dir_fd": folder_fd} if folder_fd is not None else {}
    name = file.name if folder_fd is not None else file
    try:
        os.link(name, target, follow_symlinks=False, **at)
        return
    except FileNotFoundError:
        raise
    except OSError:
        pass
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    reader = os.open(name, flags, dir_fd=folder_fd) if folder_fd is not None else os.open(name, flags)
    with open(reader, "rb") as source, open(target, "xb") as copy:
        shutil.copyfileobj(source, copy)


def _mode(file: Path, folder_fd: int | None) -> int | None:
    """The file's type bits, not following links; None when it does not exist."""
    try:
        if folder_fd is not None:
            return os.stat(file.name, dir_fd=folder_fd, follow_symlinks=False).st_mode
        return os.lstat(file).st_mode
    except FileNotFoundError:
        return None


def snapshot_files(source: Path, names: Sequence[str], dest: Path) -> list[str]:
    """Link or copy each of `names` that `source` holds into `dest`; the names taken, in order.

    CheckpointChanged when a file vanished while being taken or `source` was replaced meanwhile, so that
    every file taken comes from one version of the folder. UserError for a link or a non-file entry.
    """
    try:
        before = os.stat(source)
    except FileNotFoundError:
        raise CheckpointChanged from None
    fd = _open_folder(source)
    try:
        taken = []
        for name in names:
            file = source / name
            mode = _mode(file, fd)
            if mode is None:
                continue  # an optional file this checkpoint lacks (e.g. metrics.json); required ones checked later
            if not stat.S_ISREG(mode):
                raise refuse_link(source, file)
            try:
                _link_or_copy(file, dest / name, fd)
            except FileNotFoundError:
                raise CheckpointChanged from None
            # Checked again on the copy: the file could have been swapped for a link after the check above.
            if (dest / name).is_symlink() or not (dest / name).is_file():
                raise refuse_link(source, file)
            taken.append(name)
        if not _same_folder(source, fd, before):
            raise CheckpointChanged
        return taken
    finally:
        if fd is not None:
            os.close(fd)


def take_snapshot(
    resolve: Callable[[], Path], names: Sequence[str], required: Sequence[str], dest: Path,
) -> tuple[Path, Path]:
    """(checkpoint folder, its copy under `dest`): `resolve()` names the folder, `names` are the files to take.

    A folder replaced mid-copy (a trainer saving a new best/) is resolved and copied once more after a pause;
    a second change is a UserError saying to push again, or after training.
    """
    for attempt in (1, 2):
        source = resolve()
        copy = dest / f"attempt-{attempt}"
        copy.mkdir()
        try:
            taken = snapshot_files(source, names, copy)
            if all(name in taken for name in required):
                return source, copy
        except CheckpointChanged:
            pass
        shutil.rmtree(copy, ignore_errors=True)
        if attempt == 1:
            time.sleep(RETRY_PAUSE_S)
    raise UserError(f"checkpoint {source} changed while it was being read (a running training replaced it): "
                    "push again, or after the training has finished")
