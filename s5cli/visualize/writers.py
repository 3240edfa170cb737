"""Write rendered frames as an animated GIF (Pillow), an MP4 (PyAV) or a PNG contact sheet; format from the suffix.

Every writer goes through `atomic_write_path`: the file appears complete or not at all, never half written.
`check_output` runs before any decoding so a bad suffix or an unwritable folder fails in a second, not after
the backbone pass.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from s5cli.errors import UserError
from s5cli.io import atomic_write_path, check_writable, same_file

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

FORMATS = {".gif": "animated GIF", ".mp4": "H.264 video", ".png": "contact sheet of all frames"}
SHEET_GAP = 2  # pixels between frames on a contact sheet
SHEET_BACKGROUND = (24, 24, 24)
GIF_MIN_DELAY_MS = 20  # browsers clamp shorter GIF delays anyway
# GIF stores each frame's delay as a 16-bit count of 10 ms units: 65535 * 10 ms = 655.35 s is the longest it can
# say; Pillow raises OverflowError beyond it, so slower rates (--fps 0.001) are shown at that delay instead.
GIF_MAX_DELAY_MS = 655_350


def output_format(path: str | os.PathLike[str]) -> str:
    """The format of an output path from its suffix (".gif", ".mp4", ".png"); UserError otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        shown = suffix or "no suffix"
        raise UserError(f"{path}: unknown output format ({shown}): use .gif, .mp4 or .png")
    return suffix


def check_output(path: str | os.PathLike[str]) -> str:
    """Validate an output path up front: known suffix and writable folder; returns the format suffix."""
    if Path(path).is_dir():
        check_writable(path)  # names the folder problem before the suffix one
    suffix = output_format(path)
    check_writable(path)
    return suffix


def check_distinct_paths(
    video: str | os.PathLike[str], out: str | os.PathLike[str], json_out: str | os.PathLike[str] | None
) -> None:
    """UserError when an output would replace the input video or the other output.

    Atomic writes make such a run look successful while it silently destroys the video or the rendering, so it
    is refused before any work starts.
    """
    suggestion = Path(out).with_suffix(".json")  # --out has a .gif/.mp4/.png suffix, so this never equals it
    if same_file(out, video):
        other = Path(out).with_name(f"{Path(out).stem}-mask{Path(out).suffix}")
        raise UserError(f"--out {out} is the input video and would overwrite it: write to another file, e.g. {other}")
    if json_out is None:
        return
    if same_file(json_out, video):
        raise UserError(f"--json {json_out} is the input video and would overwrite it: write to another file, "
                        f"e.g. {suggestion}")
    if same_file(json_out, out):
        raise UserError(f"--json {json_out} is the same file as --out and would overwrite the rendering: give "
                        f"--json its own file, e.g. {suggestion}")


def gif_delay_ms(fps: float) -> int:
    """Per-frame GIF delay in ms for `fps`, clamped to what browsers show and what the GIF format can store."""
    return min(GIF_MAX_DELAY_MS, max(GIF_MIN_DELAY_MS, round(1000.0 / fps)))


def write_gif(path: str | os.PathLike[str], frames: list[np.ndarray], fps: float) -> None:
    """Looping animated GIF, one image per frame at `fps` (per-frame adaptive palette, no dithering)."""
    from PIL import Image

    images = [Image.fromarray(frame) for frame in frames]
    duration = gif_delay_ms(fps)
    with atomic_write_path(path, follow_symlinks=True) as tmp:
        images[0].save(
            tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0, optimize=False
        )


def write_mp4(path: str | os.PathLike[str], frames: list[np.ndarray], fps: float) -> None:
    """H.264 (yuv420p) MP4 through PyAV; MPEG-4 part 2 when the PyAV build lacks libx264."""
    import av

    try:
        av.codec.Codec("libx264", "w")
        codec = "libx264"
    except Exception:  # a PyAV build without libx264
        codec = "mpeg4"
    height, width = frames[0].shape[:2]
    with atomic_write_path(path, follow_symlinks=True) as tmp, av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "18", "preset": "veryfast"}
        else:
            stream.bit_rate = 4_000_000
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def sheet_layout(count: int) -> tuple[int, int]:
    """(rows, columns) of a contact sheet for `count` frames: as square as possible, filled row by row."""
    columns = max(1, math.ceil(math.sqrt(count)))
    return math.ceil(count / columns), columns


def contact_sheet(frames: list[np.ndarray]) -> Image.Image:
    """All frames on one RGB image, row-major, SHEET_GAP pixels apart.

    Built as a PIL image, frame by frame: a numpy sheet had to be copied again into PIL to be saved (PIL
    copies RGB arrays), so a film's sheet (at 1 fps, thousands of frames) was held twice.
    """
    from PIL import Image

    rows, columns = sheet_layout(len(frames))
    height, width = frames[0].shape[:2]
    size = (columns * width + (columns - 1) * SHEET_GAP, rows * height + (rows - 1) * SHEET_GAP)
    sheet = Image.new("RGB", size, SHEET_BACKGROUND)
    for i, frame in enumerate(frames):
        r, c = divmod(i, columns)
        sheet.paste(Image.fromarray(frame), (c * (width + SHEET_GAP), r * (height + SHEET_GAP)))
    return sheet


def write_png(path: str | os.PathLike[str], frames: list[np.ndarray]) -> None:
    """PNG contact sheet of all frames."""
    with atomic_write_path(path, follow_symlinks=True) as tmp:
        contact_sheet(frames).save(tmp, format="PNG")


def write_frames(path: str | os.PathLike[str], frames: list[np.ndarray], fps: float) -> None:
    """Write `frames` in the format named by the suffix of `path`."""
    if not frames:
        raise ValueError("no frames to write")
    suffix = output_format(path)
    if suffix == ".gif":
        write_gif(path, frames, fps)
    elif suffix == ".mp4":
        write_mp4(path, frames, fps)
    else:
        write_png(path, frames)
