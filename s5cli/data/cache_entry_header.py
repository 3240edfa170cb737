"""A token cache entry's safetensors header, read without loading any tensor: whether the entry is complete
and holds the tokens every reader assumes (`verify_safetensors`), and the metadata stored with them.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

TOKENS_KEY = "tokens"


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


def stored_metadata(path: Path) -> dict[str, str]:
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

