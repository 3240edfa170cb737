"""On-disk cache of frozen-backbone tokens: one safetensors file per video under a folder named by the settings.

The folder name is a hash of every setting that changes the tokens (backbone, weights: a local file by its
contents, frames, fps, image size, storage dtype), so changing any of them can never reuse a stale cache. Files are written atomically and
checked when read: a torn or corrupt file is reported and treated as missing, so the next extraction redoes it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from s5cli.data.cache_lock import mark_in_use
from s5cli.data.frame_transform import RESIZE_MODES
from s5cli.data.weights_fingerprint import local_weights_fingerprint
from s5cli.errors import RunFailure, UserError
from s5cli.io import atomic_write_json, atomic_write_path

if TYPE_CHECKING:
    import torch
    from torch import Tensor

CACHE_FORMAT = "s5cli-tokens/1"
TOKENS_KEY = "tokens"
SOURCE_BYTES = "source_bytes"  # metadata: size of the video file the tokens were extracted from
DTYPES = ("float16", "bfloat16", "float32")


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


def check_storage_dtype(name: str) -> None:
    """UserError unless `name` is a dtype the cache stores tokens in."""
    if name not in DTYPES:
        raise UserError(f"data.cache_dtype={name!r} is not supported: use one of {', '.join(DTYPES)}")


def storage_dtype(name: str) -> torch.dtype:
    """The torch dtype of a `data.cache_dtype` name; visualize-mask rounds its tokens to it as the cache does."""
    import torch

    check_storage_dtype(name)
    return getattr(torch, name)


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


@dataclass(frozen=True)
class ExtractionSettings:
    """Everything that changes the cached tokens; `key()` names the cache folder."""

    backbone: str
    backbone_weights: str | None
    frames: int | None
    fps: float | None
    image_size: int
    dtype: str = "float16"
    resize: str = "crop"  # `frame_transform.RESIZE_MODES`: how a frame becomes the backbone's square

    def __post_init__(self) -> None:
        check_storage_dtype(self.dtype)
        if self.resize not in RESIZE_MODES:
            raise UserError(f"data.resize={self.resize!r} is not one of {', '.join(RESIZE_MODES)}")

    @property
    def torch_dtype(self) -> torch.dtype:
        """The torch dtype tokens are stored in (`dtype` names it)."""
        return storage_dtype(self.dtype)

    def key(self) -> str:
        """Short stable hash of all fields (and the file format): any change gives a new key.

        A local weights file counts by its contents (`local_weights_fingerprint`), not by the path typed:
        the same path overwritten, or `weights.safetensors` in another folder, is another network, whose
        tokens were reused as the old one's. Without a local file (no weights, a Hub id) the key is the one
        earlier versions computed, so their caches stay found (but for a real ViT preset without weights,
        whose frames are now normalised with its own mean/std); a Hub id counts as its bare `OWNER/NAME[@REV]`
        (the spelling of the bundled recipes), so `hf://` and `hf-hub:` before it no longer split the cache.
        """
        values: dict[str, Any] = asdict(self)
        # 8 and 8.0 fps are the same setting; normalise so a YAML spelling does not split the cache.
        values["fps"] = None if self.fps is None else float(self.fps)
        if self.resize == "crop":  # the only mode before `resize` existed: caches made then keep their key
            del values["resize"]
        # The real ViT presets' own mean/std where no config.json states one (`normalisation_key`): earlier
        # keys held none, and their tokens were normalised with ImageNet's. Every other key stays as it was.
        from s5cli.models.backbone import normalisation_key

        fingerprint = local_weights_fingerprint(self.backbone_weights)
        if fingerprint is not None:
            values["backbone_weights"] = {**fingerprint, **normalisation_key(self.backbone, fingerprint)}
        elif self.backbone_weights:
            values["backbone_weights"] = hub_spelling(self.backbone_weights)
        elif unstated := normalisation_key(self.backbone, {}):  # a random preset: its input changed as well
            values["normalisation"] = unstated
        text = json.dumps({"format": CACHE_FORMAT, **values}, sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]

    def token_shape(self) -> tuple[int, int] | None:
        """(tokens per frame, width) the backbone gives at `image_size`; None for a backbone not known here.

        Why: an entry of another shape (hand-made, or written under other settings and copied in) passed every
        check and stopped training mid-epoch when a batch stacked it with the others. Weights load strictly
        into the preset (`load_timm_state_dict`), so the preset's shape is the shape of every weights file.
        """
        from s5cli.models.backbone import backbone_token_shape

        return backbone_token_shape(self.backbone, self.image_size)

    def metadata(self) -> dict[str, str]:
        """The settings as safetensors metadata (string values only)."""
        fingerprint = local_weights_fingerprint(self.backbone_weights)
        return {
            **({"backbone_weights_sha256": fingerprint["sha256"]} if fingerprint else {}),
            "format": CACHE_FORMAT,
            "backbone": self.backbone,
            "backbone_weights": self.backbone_weights or "",
            "frames": "" if self.frames is None else str(self.frames),
            "fps": "" if self.fps is None else str(float(self.fps)),
            "image_size": str(self.image_size),
            "dtype": self.dtype,
            "resize": self.resize,
            "settings_key": self.key(),
        }


def hub_spelling(weights: str) -> str:
    """A Hub id as the bundled recipes spell it (`resolve_weights` takes it with `hf://` or `hf-hub:` too);
    any other text as it is, so that no key of that spelling changes."""
    text = weights.strip()
    bare = text.removeprefix("hf-hub:").removeprefix("hf://")  # as `resolve_weights` reads it
    return bare if bare != text else weights


def check_video_id(video_id: str) -> str:
    """Video ids are used as file names as they are ('-abc', 'P03-cam01-P03_cereals'); refuse path separators."""
    if not video_id or "/" in video_id or "\\" in video_id or video_id in (".", "..") or "\0" in video_id:
        raise UserError(f"video id {video_id!r} cannot be used as a cache file name")
    return video_id


def verify_safetensors(path: Path, token_shape: tuple[int, int] | None = None) -> str | None:
    """None if `path` is a complete safetensors file holding `tokens` (of `token_shape` = (tokens per frame,
    width) a frame, when given), else a short reason why not."""
    try:
        size = path.stat().st_size
        header_len, header = _read_header(path, size)
    except _MalformedHeader as error:
        return str(error)
    except (OSError, ValueError, UnicodeDecodeError) as error:
        return f"unreadable header ({type(error).__name__})"
    if not isinstance(header, dict) or TOKENS_KEY not in header:
        return f"no {TOKENS_KEY!r} tensor"
    entries = {name: entry for name, entry in header.items() if name != "__metadata__"}
    if not all(isinstance(entry, dict) and _offsets(entry) is not None for entry in entries.values()):
        return "malformed header entry"
    # What every reader assumes of the tokens: a float (T, S, D) with at least one frame. A hand-made or
    # damaged entry otherwise failed mid-epoch with a traceback instead of being re-extracted.
    tokens = entries[TOKENS_KEY]
    shape = tokens.get("shape")
    if tokens.get("dtype") not in ("F16", "BF16", "F32") or not isinstance(shape, list) or len(shape) != 3 \
            or not all(isinstance(n, int) and n >= 1 for n in shape):
        return f"{TOKENS_KEY!r} is not a float (frames, tokens, width) tensor"
    if token_shape is not None and tuple(shape[1:]) != tuple(token_shape):
        # From the header already parsed: no second read of the file.
        return (f"{TOKENS_KEY!r} has {shape[1]} tokens x {shape[2]}-d a frame, where the cache's settings give "
                f"{token_shape[0]} x {token_shape[1]}-d")
    start, end = _offsets(tokens)
    if end - start != math.prod(shape) * _TOKEN_ITEM_BYTES[tokens["dtype"]]:
        # Checked here, not at load: a load failing mid-run stopped training instead of re-extracting.
        return f"{TOKENS_KEY!r} holds {end - start} bytes, not the {shape} {tokens['dtype']} its header states"
    ends = [_offsets(entry)[1] for entry in entries.values()]
    # A file cut short (killed writer, full disk) keeps its header but loses data: sizes must add up.
    if 8 + header_len + max(ends, default=0) != size:
        return "file size does not match its header (truncated)"
    return None


_TOKEN_ITEM_BYTES = {"F16": 2, "BF16": 2, "F32": 4}


class _MalformedHeader(ValueError):
    """A safetensors file whose first bytes cannot be a header; the message says why."""


def _read_header(path: Path, size: int) -> tuple[int, Any]:
    """(header length, the parsed JSON header) of the safetensors file `path` of `size` bytes, read without
    loading any tensor; `_MalformedHeader`, OSError or a JSON error when there is none."""
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise _MalformedHeader("file is shorter than a safetensors header")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > min(size - 8, 100_000_000):
            raise _MalformedHeader("header length runs past the end of the file")
        return header_len, json.loads(handle.read(header_len))


def _stored_metadata(path: Path) -> dict[str, str]:
    """The `__metadata__` of a safetensors file's header (empty when it has none or cannot be read)."""
    try:
        _, header = _read_header(path, path.stat().st_size)
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return {k: v for k, v in metadata.items() if isinstance(v, str)} if isinstance(metadata, dict) else {}


def _offsets(entry: dict) -> tuple[int, int] | None:
    """An entry's (start, end) data offsets, or None when the header does not hold two integers there."""
    offsets = entry.get("data_offsets")
    if isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(n, int) for n in offsets):
        return offsets[0], offsets[1]
    return None


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
        stored = _stored_metadata(self.path(video_id))
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
            return max(0, int(_stored_metadata(self.path(video_id)).get("padded") or 0))
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
        # A human-readable note of what the hashed folder holds; written once per folder.
        note = self.folder / "settings.json"
        if not note.exists():
            atomic_write_json(note, self.settings.metadata())

    def _report(self, path: Path, problem: str) -> None:
        if str(path) in self._reported:
            return
        self._reported.add(str(path))
        from s5cli.cli.console import print_warning

        print_warning(
            f"corrupt cache entry {path}: {problem}; treating it as missing (it will be re-extracted)"
        )
