"""Reading frames with PyAV where decord cannot: frames whose rows FFmpeg pads, and damaged files.

Why a second decoder: decord cannot hand over frames of some widths (48 or 72 px: "from_size == to_size"),
even unscaled, refuses a whole file at its first bad packet (a faststart MP4 cut in half, of which PyAV
still decodes the first 40 %), and fails a whole read of frames when any lies past a damaged section. PyAV
decodes in order from the start, no seeking: slower, so only for the videos decord refuses or fails on.
Frames are turned as decord turns them (the display rotation), so both decoders hand over the same pictures.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from s5cli.data.probe import DAMAGED, VideoDecodeError, error_detail

if TYPE_CHECKING:
    import numpy as np


def read_frames_pyav(path: str | os.PathLike[str], indices: list[int] | tuple[int, ...], rotation: int = 0) -> np.ndarray:
    """Frames at `indices` as `(T, H, W, 3)` uint8 RGB, decoded in order, turned by `rotation` degrees."""
    import av
    import numpy as np

    wanted = set(indices)
    last = max(wanted)
    found: dict[int, np.ndarray] = {}
    turns = (rotation // 90) % 4
    try:
        with av.open(str(path)) as container:
            for number, frame in enumerate(container.decode(video=0)):
                if number in wanted:
                    found[number] = np.rot90(frame.to_ndarray(format="rgb24"), turns)
                if number >= last:
                    break
    except Exception as error:  # PyAV raises one error class per FFmpeg failure
        raise VideoDecodeError(path, f"{DAMAGED}{error_detail(error)}") from None
    missing = wanted - found.keys()
    if missing:
        raise VideoDecodeError(path, f"decoding failed: frame {min(missing)} is past the end of the video")
    return np.ascontiguousarray(np.stack([found[i] for i in indices]))


def count_decodable_frames(path: str | os.PathLike[str]) -> int:
    """How many frames PyAV decodes from the start before the first error (or the end).

    One full pass, at the video's own size: only for a file decord would not open, or failed on before
    any frame was handed over, where the alternative is no result."""
    import av

    count = 0
    try:
        with av.open(str(path)) as container:
            for _ in container.decode(video=0):
                count += 1
    except Exception:  # the damage: everything before it stays usable
        pass
    return count
