"""What a video file is before decord decodes it: its size as shown, the frames it claims, or why it is no video.

Why a probe beside decord: decord logs a failed open straight to stderr and reports every failure alike,
and it turns phone videos upright (their display rotation) while the codec's size does not. PyAV reads the
container header and one frame: enough to tell a missing video stream or an unreadable file from a damaged
one, to plan decoder-side scaling at the size decord will hand over, and to notice a file cut short.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from s5cli.errors import UserError


class VideoDecodeError(UserError):
    """A video that cannot be read; the message names the file and what is wrong with it."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path}: {problem}")


@dataclass(frozen=True)
class VideoProbe:
    """A video's header facts: size as displayed (rotation applied, as decord decodes it) and stated length."""

    height: int
    width: int
    stated_frames: int  # frames the container says it holds (0: it does not say; see stated_seconds)
    fps: float = 0.0  # the stream's average rate (0: it does not say)
    rotation: int = 0  # degrees the frames are turned when shown (decord hands them over turned)
    # Matroska and WebM state a duration, not a count: then `stated_frames` is duration x average rate, an
    # estimate (Matroska's "average" rate of a variable-rate file is its nominal one, 25 fps for a phone
    # clip of 30 frames in 6.2 s), and this is the duration the estimate came from. 0 for a stated count.
    stated_seconds: float = 0.0
    image: bool = False  # an image or animation format (GIF, PNG, ...), which decord does not open


NOT_A_VIDEO = "cannot open as a video (not a video, or truncated/corrupt)"
# PyAV's names of containers of pictures rather than video (also every "*_pipe": png_pipe, jpeg_pipe, ...).
IMAGE_CONTAINERS = ("gif", "apng", "image2")
UNREADABLE = "permission denied: make the file readable (chmod +r) or copy it"
# Why a read of frames failed, for any failure but decord's padded rows (`read_frames`, `PyAVFrameReader`).
DAMAGED = "decoding failed (truncated or corrupt video)"


def reencode_hint(path: str | os.PathLike[str]) -> str:
    """How to repair a damaged video: FFmpeg decodes past damaged packets and writes a clean copy, which
    then takes the original's place under the video's id (datasets find a video by its file name)."""
    stem = Path(path).stem
    command = f"ffmpeg -i {_shell_name(Path(path).name)} -c:v libx264 {_shell_name(f'{stem}-fixed.mp4')}"
    return f"re-encode it ({command}), then replace the original with the copy, named {stem}.mp4"


def _shell_name(name: str) -> str:
    """A file name as a shell argument: quoted, and as ./NAME when it starts with '-' (161 LVU ids do),
    which ffmpeg (and mv, rm) would otherwise read as an option."""
    return shlex.quote(f"./{name}" if name.startswith("-") else name)


def check_file(path: str | os.PathLike[str]) -> Path:
    """`path` as a Path; VideoDecodeError naming it when it is missing, a folder, empty or unreadable."""
    path = Path(path)
    if not path.exists():
        raise VideoDecodeError(path, "video file not found")
    if path.is_dir():
        raise VideoDecodeError(path, "is a folder, not a video file")
    if path.stat().st_size == 0:
        raise VideoDecodeError(path, "video file is empty (0 bytes)")
    if not os.access(path, os.R_OK):
        raise VideoDecodeError(path, UNREADABLE)
    return path


def probe_video(path: str | os.PathLike[str]) -> VideoProbe:
    """The header facts of `path`; VideoDecodeError saying why when it holds no video stream to read."""
    import av

    try:
        container = av.open(str(path))
    except PermissionError:
        raise VideoDecodeError(path, UNREADABLE) from None
    except Exception:  # PyAV raises one error class per FFmpeg failure
        raise VideoDecodeError(path, NOT_A_VIDEO) from None
    with container:
        if not container.streams.video:
            audio = " (an audio-only file?)" if container.streams.audio else ""
            raise VideoDecodeError(path, f"has no video stream{audio}: give a video file")
        stream = container.streams.video[0]
        height, width = int(stream.codec_context.height or 0), int(stream.codec_context.width or 0)
        if height < 1 or width < 1:
            raise VideoDecodeError(path, NOT_A_VIDEO)
        rotation = _first_frame_rotation(container, stream)
        if rotation % 180:
            height, width = width, height  # shown upright: decord hands over the rotated frames
        stated, seconds = int(stream.frames or 0), 0.0
        rate = float(stream.average_rate or 0)
        if not stated and rate > 0:  # Matroska and WebM state a duration, not a count
            if stream.duration and stream.time_base:
                seconds = float(stream.duration * stream.time_base)
            elif container.duration:  # the whole file's, in microseconds
                seconds = container.duration / 1_000_000
            stated = round(seconds * rate)
        image = _image_container(container)
    return VideoProbe(height=height, width=width, stated_frames=max(0, stated), fps=rate, rotation=rotation,
                      stated_seconds=max(0.0, seconds) if stated > 0 else 0.0, image=image)


def _image_container(container) -> bool:
    """Whether the container holds pictures (a GIF, PNG or JPEG), which decord refuses although intact."""
    names = str(getattr(container.format, "name", "") or "").split(",")
    return any(name in IMAGE_CONTAINERS or name.endswith("_pipe") for name in names)


def _first_frame_rotation(container, stream) -> int:
    """Degrees the first frame is turned when shown (its display matrix; 0 when it says nothing or does not
    decode, which decord then reports)."""
    try:
        for frame in container.decode(stream):
            return round(float(getattr(frame, "rotation", 0) or 0))
    except Exception:  # a damaged first packet: the read that follows names the problem
        return 0
    return 0


# decord prefixes its messages, also nested ones, with "[hh:mm:ss] /its/source/file.cc:NN: ".
_DECORD_PREFIX = re.compile(r"\[[\d:]+\]\s+\S+:\d+:\s*")
# Internals that tell a user nothing they can act on: failed assertions and FFmpeg's numeric error codes.
_INTERNALS = re.compile(r"Check failed|failed with -?\d+|__null|Cannot create buffer")


def error_detail(error: BaseException) -> str:
    """": reason" from a decoder error's first meaningful line, or "" when it only holds decoder internals."""
    lines = [_DECORD_PREFIX.sub("", line).strip() for line in str(error).splitlines()]
    lines = [line for line in lines if line]
    if not lines or _INTERNALS.search(lines[0]):
        return ""
    return f": {lines[0][:160]}"
