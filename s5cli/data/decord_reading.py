"""Read a video's frames and facts with decord: open it, what the container says, frames by index.

Kept apart from `decode` (which plans the frames a clip samples, hands them over chunk by chunk and gets
past damage with PyAV), like `pyav_reading`: each of the two holds what one decoder library needs and
turns that library's failures into `VideoDecodeError`s that name the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from s5cli.data.probe import DAMAGED, NOT_A_VIDEO, VideoDecodeError, check_file, error_detail, probe_video
from s5cli.data.sampling import Timeline, timeline_if_variable

if TYPE_CHECKING:
    import numpy as np

# decord's failure on frames whose rows FFmpeg pads ("from_size == to_size"), as `read_frames` reports it.
ROWS_PADDED = "decoding failed (decord cannot hand over frames of this width)"


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video."""

    num_frames: int
    fps: float
    height: int
    width: int
    timeline: Timeline | None = None  # frame start times, for variable-frame-rate videos only

    @property
    def duration(self) -> float:
        """Length in seconds."""
        if self.timeline is not None:
            return self.timeline.duration
        return self.num_frames / self.fps if self.fps > 0 else 0.0

    def time_of(self, index: int) -> float:
        """Seconds from the first frame to frame `index`."""
        return self.timeline.starts[index] if self.timeline is not None else index / self.fps


def open_video(path: str | os.PathLike[str], num_threads: int = 2, size: tuple[int, int] | None = None):
    """A decord `VideoReader` on `path` (frames scaled to `size` = (height, width) if given).

    Raises VideoDecodeError naming the file when it cannot be opened.
    """
    path = check_file(path)
    import decord

    # FFmpeg's own log lines ("moov atom not found") would precede our one-line error for every bad file.
    decord.logging.set_level(decord.logging.QUIET)
    try:
        height, width = size if size is not None else (-1, -1)
        reader = decord.VideoReader(
            str(path), num_threads=max(0, int(num_threads)), width=width, height=height
        )
    except Exception as error:  # decord raises a bare RuntimeError/DECORDError for every container problem
        detail = error_detail(error)
        # decord's "Error reading <path>..." says nothing the message does not already say.
        detail = "" if str(path) in detail else detail
        raise VideoDecodeError(path, f"{NOT_A_VIDEO}{detail}") from None
    if len(reader) < 1:
        raise VideoDecodeError(path, "video has no frames")
    return reader


def probe_size(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """(height, width) as decord hands frames over (rotation applied); None if the file is no video."""
    try:
        probe = probe_video(path)
    except VideoDecodeError:
        return None
    return probe.height, probe.width


def video_info(reader, path: str | os.PathLike[str] = "") -> VideoInfo:
    """Frame count, frame rate and size of an open reader."""
    try:
        height, width = reader[0].shape[:2]
        fps = float(reader.get_avg_fps())
    except Exception as error:
        raise VideoDecodeError(path, f"cannot read the first frame{error_detail(error)}") from None
    if not fps > 0:
        fps = 25.0  # some containers carry no rate; a nominal one keeps fps sampling defined
    return VideoInfo(num_frames=len(reader), fps=fps, height=int(height), width=int(width),
                     timeline=_timeline(reader, fps))


def _timeline(reader, fps: float) -> Timeline | None:
    """The frames' start times when they are not evenly spaced (see `Timeline`); None otherwise, or when the
    container keeps no times (then the average rate is all there is)."""
    try:
        times = reader.get_frame_timestamp(range(len(reader)))
    except Exception:
        return None
    if len(times) < 2:
        return None
    return timeline_if_variable([float(t) for t in times[:, 0]], float(times[-1, 1]), fps)


def read_frames(
    reader, indices: list[int] | tuple[int, ...], path: str | os.PathLike[str] = ""
) -> np.ndarray:
    """Frames at `indices` as `(T, H, W, 3)` uint8 RGB (repeated indices are decoded once)."""
    import numpy as np

    unique = sorted(set(indices))
    try:
        batch = reader.get_batch(unique).asnumpy()
    except Exception as error:
        if "from_size == to_size" in str(error):  # a decord internal, so not shown: see `PyAVFrameReader`
            raise VideoDecodeError(path, ROWS_PADDED) from None
        raise VideoDecodeError(path, f"{DAMAGED}{error_detail(error)}") from None
    position = {index: row for row, index in enumerate(unique)}
    return np.ascontiguousarray(batch[[position[i] for i in indices]])


def rows_padded(error: VideoDecodeError) -> bool:
    """Whether decord failed on padded frame rows (see `PyAVFrameReader`)."""
    return str(error).endswith(ROWS_PADDED)
