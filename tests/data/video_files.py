"""Tiny real video files for decode/extract tests, written with PyAV (the encoder the package already uses)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


def frame_value(index: int) -> int:
    """Grey level of frame `index`: far enough apart to tell frames apart after lossy encoding."""
    return 16 + (index * 23) % 224


def write_video(path: Path, frames: int = 6, size: int = 64, fps: int = 8, width: int | None = None,
                rotation: int = 0) -> Path:
    """An mp4 whose frame i is a flat grey of `frame_value(i)` with a white square in the top-left corner;
    `rotation`: the display rotation a phone writes (players and decord show the frames turned)."""
    import av

    width = width or size
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, size, "yuv420p"
        stream.options = {"crf": "10", "preset": "ultrafast"}
        if rotation:
            stream.set_display_rotation(rotation)
        for i in range(frames):
            image = np.full((size, width, 3), frame_value(i), dtype=np.uint8)
            image[:16, :16] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_variable_rate_video(path: Path, starts_ms: list[int], size: int = 32) -> Path:
    """An mp4 whose frame i starts at `starts_ms[i]` (as a phone writes when the scene goes dark or still),
    frame i a flat grey of `frame_value(i)`."""
    from fractions import Fraction

    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(25))
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        stream.options = {"crf": "10", "preset": "ultrafast", "bf": "0"}
        for i, start in enumerate(starts_ms):
            frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), frame_value(i), dtype=np.uint8), format="rgb24")
            frame.pts, frame.time_base = start, Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def damage_packets(source: Path, path: Path, first: int, count: int) -> Path:
    """A copy of the mp4 `source` at `path` whose video packets `first` to `first + count - 1` are overwritten
    with a fixed junk pattern in place: the index (moov) still lists every frame, so decord opens the file
    and fails only when it decodes past the damage, while PyAV decodes the `first` frames before it."""
    import av

    with av.open(str(source)) as container:
        packets = [(packet.pos, packet.size) for packet in container.demux(video=0) if packet.size]
    start = packets[first][0]
    end = packets[first + count - 1][0] + packets[first + count - 1][1]
    data = bytearray(source.read_bytes())
    path.parent.mkdir(parents=True, exist_ok=True)
    data[start:end] = bytes((3 + 7 * i) % 256 for i in range(end - start))
    path.write_bytes(bytes(data))
    return path
