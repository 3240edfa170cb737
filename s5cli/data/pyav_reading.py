"""Reading frames with PyAV where decord cannot: frames whose rows FFmpeg pads, and damaged files.

Why a second decoder: decord cannot hand over frames of some widths (48 or 72 px: "from_size == to_size"),
even unscaled, refuses a whole file at its first bad packet (a faststart MP4 cut in half, of which PyAV
still decodes the first 40 %), and fails a whole read of frames when any lies past a damaged section. PyAV
decodes in order from the start, no seeking: slower, so only for the videos decord refuses or fails on.
Frames are turned as decord turns them (the display rotation), so both decoders hand over the same pictures.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from s5cli.data.probe import DAMAGED, VideoDecodeError, error_detail

if TYPE_CHECKING:
    import numpy as np


class PyAVFrameReader:
    """Frames of one video by index, decoded in order by PyAV, the decoder kept open between reads.

    Why kept open: a clip is read a chunk at a time (`OpenedClip.chunks`), each chunk after the last, and
    reopening the file decoded a film from its first frame again for every chunk (hours for a 2-hour film
    at 1 fps: chunks x position). A read that starts before the decoder's position opens the file again.
    """

    def __init__(self, path: str | os.PathLike[str], rotation: int = 0) -> None:
        self.path = path
        self.turns = (rotation // 90) % 4
        self.decoded = 0  # frames decoded in all, for tests and profiles
        self._container = None
        self._frames: Iterator | None = None
        self._position = 0  # number of the next frame `_frames` yields

    def read(self, indices: list[int] | tuple[int, ...]) -> np.ndarray:
        """Frames at `indices` as `(T, H, W, 3)` uint8 RGB, turned by the rotation."""
        import numpy as np

        wanted = set(indices)
        last = max(wanted)
        if self._frames is None or min(wanted) < self._position:
            self._open()
        found: dict[int, np.ndarray] = {}
        try:
            for frame in self._frames:
                number, self._position = self._position, self._position + 1
                self.decoded += 1
                if number in wanted:
                    found[number] = np.rot90(frame.to_ndarray(format="rgb24"), self.turns)
                if number >= last:
                    break
        except Exception as error:  # PyAV raises one error class per FFmpeg failure
            self.close()
            raise VideoDecodeError(self.path, f"{DAMAGED}{error_detail(error)}") from None
        missing = wanted - found.keys()
        if missing:
            self.close()
            raise VideoDecodeError(self.path, f"decoding failed: frame {min(missing)} is past the end of the video")
        return np.ascontiguousarray(np.stack([found[i] for i in indices]))

    def _open(self) -> None:
        import av

        self.close()
        try:
            self._container = av.open(str(self.path))
        except Exception as error:
            raise VideoDecodeError(self.path, f"{DAMAGED}{error_detail(error)}") from None
        self._frames = iter(self._container.decode(video=0))

    def close(self) -> None:
        """Let the file go (the next read opens it again)."""
        if self._container is not None:
            self._container.close()
        self._container, self._frames, self._position = None, None, 0


def decodable_frame_starts(path: str | os.PathLike[str]) -> list[float | None]:
    """Start time (s) of each frame PyAV decodes from the start before the first error (or the end); None
    for a frame without a timestamp. Their count is how many frames are usable; the times give a cut
    variable-frame-rate file its timeline (`decode._pyav_timeline`).

    One full pass, at the video's own size: only for a file decord would not open or failed on (once per
    clip: `OpenedClip._recover`), where the alternative is no result."""
    import av

    starts: list[float | None] = []
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                starts.append(frame.time)
    except Exception:  # the damage: everything before it stays usable
        pass
    return starts
