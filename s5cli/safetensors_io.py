"""Safetensors files whose bytes depend only on their contents (same tensors + metadata → same file).

Why: the `safetensors` writer keeps the `__metadata__` strings in a Rust hash map whose order is drawn at
random in every process, so two runs with the same seed wrote checkpoints and token caches with equal
tensors but different bytes. Users compare runs by checksum, and the Hub stores a changed file (and a new
commit) for an unchanged model. `save_tensors` lets the library write the file, then rewrites only its
JSON header with the metadata keys sorted: reordering keys keeps the header's length, so the tensor
data and every offset stay where the library put them.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING

from s5cli.io import default_file_mode

if TYPE_CHECKING:
    from torch import Tensor

METADATA_KEY = "__metadata__"
_LENGTH = struct.Struct("<Q")  # the header's byte length, little-endian u64, at the start of the file


def save_tensors(
    tensors: Mapping[str, Tensor], path: str | os.PathLike[str], metadata: Mapping[str, str] | None = None
) -> None:
    """`safetensors.torch.save_file`, with the metadata in sorted key order (a byte-reproducible file).

    Writes `path` in place: callers that need atomicity pass a temporary path and rename it.
    """
    from safetensors.torch import save_file

    try:
        save_file(dict(tensors), os.fspath(path), metadata=dict(metadata) if metadata is not None else None)
    except OSError:
        raise
    except Exception as error:  # safetensors wraps the OS's error: "I/O error: No space left on device (os error 28)"
        code = _os_error_code(str(error))
        if code is None:
            raise
        raise OSError(code, os.strerror(code), os.fspath(path)) from error
    sort_metadata(path)
    # The library creates its file with mode 0600; give it what any other file the job writes gets.
    os.chmod(path, default_file_mode())


def _os_error_code(message: str) -> int | None:
    """The errno in a Rust I/O error's text ("... (os error 28)"), as safetensors reports a failed write."""
    found = re.search(r"\(os error (\d+)\)", message)
    return int(found.group(1)) if found else None


def sort_metadata(path: str | os.PathLike[str]) -> bool:
    """Rewrite the header of the safetensors file at `path` with its metadata keys sorted.

    Returns whether the header changed. The file is left as it is (still valid, only not canonical)
    when the sorted header would not serialise to exactly the same length as the written one: the
    tensor offsets must not move.
    """
    with open(path, "r+b") as handle:
        (length,) = _LENGTH.unpack(handle.read(_LENGTH.size))
        written = handle.read(length).rstrip(b" ")  # the writer pads the header with spaces for alignment
        header = json.loads(written)
        metadata = header.get(METADATA_KEY)
        if not isinstance(metadata, dict) or len(metadata) < 2:
            return False
        ordered = {METADATA_KEY: dict(sorted(metadata.items()))}
        ordered.update((name, entry) for name, entry in header.items() if name != METADATA_KEY)
        # The writer's compact JSON: no spaces, non-ASCII characters as they are.
        rewritten = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if rewritten == written or len(rewritten) != len(written) or json.loads(rewritten) != header:
            return False
        handle.seek(_LENGTH.size)
        handle.write(rewritten + b" " * (length - len(rewritten)))
    return True
