"""On-disk cache of frozen-backbone tokens: one safetensors file per video under a folder named by the settings.

The folder name is a hash of every setting that changes the tokens (`cache_settings.ExtractionSettings.key`),
so changing any of them can never reuse a stale cache. Files are written atomically, and each file's
structure is checked before a run uses it and when it is read (`cache_entry_header.verify_safetensors`:
its header, the token shape and byte count it states, and a file size that adds up): a torn or truncated
file, or a damaged header, is reported and treated as missing, so the next extraction redoes it. The
token data itself carries no checksum: bytes flipped inside it (a disk fault) go unnoticed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from s5cli.data.cache_entry_header import TOKENS_KEY, stored_metadata, verify_safetensors
from s5cli.data.cache_lock import mark_in_use
from s5cli.data.cache_settings import ExtractionSettings
from s5cli.errors import RunFailure, UserError
from s5cli.io import atomic_write_json, atomic_write_path

if TYPE_CHECKING:
    from torch import Tensor

SOURCE_BYTES = "source_bytes"  # metadata: size of the video file the tokens were extracted from


class CorruptCacheEntry(FileNotFoundError):
    """A cache file that exists but cannot be read; callers treat it like a missing entry."""


class TokensLost(RunFailure):
    """A video's token file went missing or was damaged after the run checked the cache (deleted by hand,
    a disk fault): the reason in one line, where the data loader would have shown a worker's traceback.

    `at_step_start`: no forward pass of the step had run yet, so the trainer can save a checkpoint that
    resumes exactly where an uninterrupted run would be.
    """

    at_step_start = False

    @classmethod
    def from_error(cls, error: FileNotFoundError) -> TokensLost:
        return cls(f"{lost_tokens_reason(error)} (the file went missing or was damaged during the run)")


def lost_tokens_reason(error: BaseException) -> str:
    """The loading error's own one-line message, also when a DataLoader worker raised it.

    Why: torch re-raises a worker's exception in the loading process with the worker's whole traceback
    as its message ("Caught FileNotFoundError in DataLoader worker process 0. Original Traceback ..."),
    and the original message is its last line, after the exception's class name.
    """
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if len(lines) > 1 and lines[0].startswith("Caught ") and "Original Traceback" in lines[1]:
        name, _, message = lines[-1].partition(": ")
        return message or name
    return lines[0]


def _read_rows(tokens: Any, rows: Sequence[int]) -> Tensor:
    """Frames `rows` (ascending, repeats allowed) of a safetensors slice: one read per run of consecutive
    frames, since safetensors slices only take ranges."""
    import torch

    distinct = list(dict.fromkeys(rows))
    if not distinct:
        raise ValueError("no frames to read")
    runs: list[list[int]] = []  # [first, last] of each run of consecutive rows
    for row in distinct:
        if runs and row == runs[-1][1] + 1:
            runs[-1][1] = row
        else:
            runs.append([row, row])
    read = torch.cat([tokens[first : last + 1] for first, last in runs])
    if len(distinct) == len(rows):
        return read
    position = {row: i for i, row in enumerate(distinct)}
    return read[torch.tensor([position[row] for row in rows])]


def check_video_id(video_id: str) -> str:
    """Video ids are used as file names as they are ('-abc', 'P03-cam01-P03_cereals'); refuse path separators."""
    if not video_id or "/" in video_id or "\\" in video_id or video_id in (".", "..") or "\0" in video_id:
        raise UserError(f"video id {video_id!r} cannot be used as a cache file name")
    return video_id


class FeatureCache:
    """Token files under `root/<settings key>/<video_id>.safetensors`."""

    def __init__(self, root: str | os.PathLike[str], settings: ExtractionSettings) -> None:
        self.root = Path(root).expanduser()
        self.settings = settings
        self.folder = self.root / settings.key()
        self._reported: set[str] = set()
        self._marked = False

    @cached_property
    def token_shape(self) -> tuple[int, int] | None:
        """(tokens per frame, width) every entry must have (`ExtractionSettings.token_shape`); worked out once."""
        return self.settings.token_shape()

    def mark_in_use(self) -> None:
        """Tell `s5 cache clean` that this process uses the folder (see `cache_lock`); once it exists."""
        if not self._marked and self.folder.is_dir():
            mark_in_use(self.folder)
            self._marked = True

    def create_folder(self) -> None:
        """The folder, marked in use, with its settings note: before the first claim (`cache_lock.claim`) or
        entry, so that `s5 cache ls` never shows a folder being extracted into as unknown."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.mark_in_use()
        self._write_settings_file()

    def repair_settings_file(self) -> None:
        """Rewrite the settings note of an existing folder if it is missing or damaged, when the folder can be
        written: for a run with nothing to extract, which never calls `create_folder` (a read-only cache that
        is complete stays usable as it is, and so does one whose note became a pipe after it was checked)."""
        if self.folder.is_dir():
            with contextlib.suppress(OSError, UserError):
                self._write_settings_file()

    def path(self, video_id: str) -> Path:
        """Where the tokens of `video_id` live (whether or not they exist yet)."""
        return self.folder / f"{check_video_id(video_id)}.safetensors"

    def has(self, video_id: str) -> bool:
        """True if a complete, readable entry of the settings' token shape exists (a corrupt one, or one of
        another shape, is reported and counts as missing, so extraction redoes it).

        The shape is checked here because every run checks its entries here before it reads any tokens
        (`extract_records`), so an entry of another shape is extracted again; one that passed used to stop
        training mid-epoch, when a batch stacked it with the others. `load` does not check it again.
        """
        path = self.path(video_id)
        self.mark_in_use()
        if not path.is_file():
            return False
        problem = verify_safetensors(path, self.token_shape)
        if problem is not None:
            self._report(path, problem)
            return False
        return True

    def changed_source(self, video_id: str, source: str | os.PathLike[str]) -> str | None:
        """Why the cached tokens of `video_id` were not extracted from `source` as it is now, else None.

        Why: tokens are found by video id alone, so a video replaced in data.root (a download redone, a
        re-encode, another folder of the same ids) was read from its old tokens forever, while `eval --video`
        on the same file decoded the new one. The file's name and size are stored when it is extracted
        (entries written before that carry only the name); a copy to another disk keeps both, so moving the
        data does not extract it again. A file that cannot be read now, or an entry without them, counts
        as unchanged.
        """
        source = Path(source)
        stored = stored_metadata(self.path(video_id))
        try:
            size = source.stat().st_size
        except OSError:
            return None
        name, stored_size = stored.get("source"), stored.get(SOURCE_BYTES)
        if name and name != source.name:
            return f"extracted from {name}, now {source.name}"
        if stored_size and stored_size != str(size):
            return f"{source.name} was {stored_size} bytes, now {size}"
        return None

    def discard(self, video_id: str) -> None:
        """Delete the entry of `video_id`, if any (its tokens no longer describe the video of that id)."""
        self.path(video_id).unlink(missing_ok=True)

    def cached_ids(self) -> set[str]:
        """Ids with a file in the cache folder (not verified)."""
        if not self.folder.is_dir():
            return set()
        return {
            p.name[: -len(".safetensors")]
            for p in self.folder.glob("*.safetensors")
            if not p.name.startswith(".")
        }

    def save(self, video_id: str, tokens: Tensor, metadata: dict[str, str] | None = None) -> Path:
        """Store `(T, S, D)` tokens in the settings' dtype, atomically, with the settings as metadata."""
        from s5cli.safetensors_io import save_tensors

        if tokens.dim() != 3:
            raise ValueError(f"tokens must be (T, S, D), got shape {tuple(tokens.shape)}")
        path = self.path(video_id)
        self.create_folder()
        meta = {
            **{k: str(v) for k, v in (metadata or {}).items()},
            **self.settings.metadata(),
            "video_id": video_id,
        }
        stored = tokens.detach().to("cpu", self.settings.torch_dtype).contiguous()
        with atomic_write_path(path) as tmp:
            save_tensors({TOKENS_KEY: stored}, tmp, metadata=meta)
        return path

    def load(self, video_id: str, frames: slice | Sequence[int] | None = None) -> tuple[Tensor, dict[str, str]]:
        """Tokens `(T, S, D)` and metadata; FileNotFoundError if missing, CorruptCacheEntry if unreadable.

        With `frames` (a slice, or ascending frame indices), only those frames are read from the file: an
        evaluation window or a training clip needs a minute of a video, and LVU's windows start every
        second, so loading the whole video for each one read it once per window; a clip drawn from a
        `data.frame_pool` needs only its own frames of the pool (64 of 512). Not reported here: the caller
        reports the error it raises (`has` reports a damaged file it finds, before any run reads it).
        """
        from safetensors import safe_open

        path = self.path(video_id)
        self.mark_in_use()
        missing = FileNotFoundError(f"no cached tokens for video {video_id!r} at {path}")
        if not path.is_file():
            raise missing
        problem = verify_safetensors(path)
        if problem is None:
            try:
                with safe_open(str(path), framework="pt") as handle:
                    if frames is None:
                        tokens = handle.get_tensor(TOKENS_KEY)
                    elif isinstance(frames, slice):
                        tokens = handle.get_slice(TOKENS_KEY)[frames]
                    else:
                        tokens = _read_rows(handle.get_slice(TOKENS_KEY), frames)
                    return tokens, dict(handle.metadata() or {})
            except Exception as error:  # safetensors raises its own error types for damaged files
                problem = f"unreadable ({str(error).splitlines()[0][:100]})"
        if not path.exists():  # deleted while it was being read: missing, not damaged
            raise missing
        raise CorruptCacheEntry(f"corrupt cache entry {path}: {problem}")

    def load_frames(self, video_id: str, start: int, stop: int) -> Tensor:
        """Frames [start, stop) of a video's tokens, read alone (see `load`)."""
        return self.load(video_id, slice(start, stop))[0]

    def load_rows(self, video_id: str, rows: Sequence[int]) -> Tensor:
        """Frames `rows` (ascending frame indices) of a video's tokens, read alone (see `load`)."""
        return self.load(video_id, rows)[0]

    def padded_frames(self, video_id: str) -> int:
        """How many of a video's cached frames repeat its last one (a video shorter than its sampling plan),
        from the file header; 0 when the entry does not say (written before extraction recorded it)."""
        try:
            return max(0, int(stored_metadata(self.path(video_id)).get("padded") or 0))
        except (OSError, ValueError):
            return 0

    def num_frames(self, video_id: str) -> int:
        """Cached frame count of a video, read from the file header only; the errors of `load` when the
        file went missing or was damaged since the cache was checked."""
        from safetensors import safe_open

        try:
            with safe_open(str(self.path(video_id)), framework="pt") as handle:
                return int(handle.get_slice(TOKENS_KEY).get_shape()[0])
        except Exception:  # safetensors' own error types: `load` says which of the two it is
            return int(self.load(video_id)[0].shape[0])

    def _write_settings_file(self) -> None:
        """A human-readable note of what the hashed folder holds, and its marker for `s5 cache ls`/`clean`.

        Written when missing, and rewritten (atomically) when `s5 cache ls` would call the folder unknown for
        what the note holds (`read_marker`: not JSON, no s5cli-tokens format, too big): such a note was kept
        forever, so a folder still being extracted into was listed as unknown. Never rewritten: a note of any
        s5cli-tokens format (a stale one is how `clean` finds the folder), one that cannot be read (what it
        holds is unknown), and a link, pipe or device, which is not damage but something put there, and is
        never read (a pipe blocked the run forever): the folder stays unknown, and `s5 cache ls` says why.
        """
        from s5cli.data.cache_inventory import ABSENT, NOT_A_MARKER, TOKENS, read_marker

        state, _ = read_marker(self.folder, TOKENS)
        if state in (ABSENT, NOT_A_MARKER):
            atomic_write_json(self.folder / "settings.json", self.settings.metadata())

    def _report(self, path: Path, problem: str) -> None:
        if str(path) in self._reported:
            return
        self._reported.add(str(path))
        from s5cli.cli.console import print_warning

        print_warning(
            f"corrupt cache entry {path}: {problem}; treating it as missing (it will be re-extracted)"
        )
