"""Write rendered frames as an animated GIF (Pillow), an MP4 (PyAV) or a PNG contact sheet; format from the suffix.

Every writer goes through `atomic_write_path`: the file appears complete or not at all, never half written.
`check_output` runs before any decoding so a bad suffix or an unwritable folder fails in a second, not after
the backbone pass.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from s5cli.errors import UserError
from s5cli.io import atomic_write_path, check_writable, refuse_streams_and_devices, same_file

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
GIF_COLORS = 256
# A GIF frame's palette is chosen among its colours rounded to the fewest bits a channel (5 to 8) that still
# leave more than this many distinct ones (see `gif_frame`).
GIF_PALETTE_SOURCE_COLORS = 2048
# A GIF with more frames than this gets a hint to write an MP4: at 224 px a GIF frame takes 0.03-0.07 s to
# write and ~60 KB on disk (1000 frames: 25-65 s, 62 MB; 2-core VM), an MP4 frame ~10 ms and ~25 KB.
GIF_HINT_FRAMES = 300
# done(frames written so far, frames in all): lets the CLI show a writer's progress frame by frame.
FrameProgress = Callable[[int, int], None]


def output_format(path: str | os.PathLike[str]) -> str:
    """The format of an output path from its suffix (".gif", ".mp4", ".png"); UserError otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        shown = suffix or "no suffix"
        raise UserError(f"{path}: unknown output format ({shown}): use .gif, .mp4 or .png")
    return suffix


def check_output(path: str | os.PathLike[str]) -> str:
    """Validate an output path up front: known suffix and writable folder; returns the format suffix."""
    refuse_streams_and_devices(path, "--out")  # not after decoding and rendering a whole video
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


def gif_frame(frame: np.ndarray) -> Image.Image:
    """`frame` (H, W, 3 uint8) as a palette image with its own GIF_COLORS-colour palette, not dithered.

    Why not Pillow's own conversion (median cut over every colour, what `save` did): on video frames, with
    tens of thousands of colours, it took 0.1-0.3 s a 224 px frame (250 frames: 30-70 s), most of a run.
    Here the median cut runs over the colours rounded to the fewest bits that leave more than
    GIF_PALETTE_SOURCE_COLORS of them (`_rounded_colors`), 1.5-7x faster; each pixel takes the index of its
    rounded colour, and each palette colour is the mean of the pixels that took it, so the error against
    the frame stays Pillow's or below (mean absolute error per channel on 224 px video frames: 1.26 / 1.86 /
    3.55 / 4.38 against Pillow's 1.26 / 1.86 / 3.57 / 4.43). A frame of few colours keeps them exactly.
    """
    import numpy as np

    indexed = _rounded_colors(frame).quantize(GIF_COLORS)  # median cut, each pixel its rounded colour's box
    indexed.putpalette(_pixel_means(np.asarray(indexed), frame, indexed.getpalette() or []))
    return indexed


def _rounded_colors(frame: np.ndarray) -> Image.Image:
    """`frame` with each channel rounded to the centre of 5, 6, 7 or 8 bits, the fewest that keep more than
    GIF_PALETTE_SOURCE_COLORS distinct colours (all 8, the frame itself, when it has no more than that)."""
    from PIL import Image

    for bits in (5, 6, 7):
        drop = 8 - bits
        rounded = Image.fromarray((frame >> drop << drop) | (1 << (drop - 1)))
        if rounded.getcolors(GIF_PALETTE_SOURCE_COLORS) is None:  # None: more colours than that
            return rounded
    return Image.fromarray(frame)


def _pixel_means(indices: np.ndarray, frame: np.ndarray, palette: list[int]) -> bytes:
    """The RGB palette whose colour `i` is the mean of `frame`'s pixels at index `i` (unused: `palette`'s)."""
    import numpy as np

    flat, pixels = indices.ravel(), frame.reshape(-1, 3).astype(np.float64)
    counts = np.bincount(flat, minlength=GIF_COLORS)
    sums = np.stack([np.bincount(flat, pixels[:, c], minlength=GIF_COLORS) for c in range(3)], axis=1)
    old = np.zeros(GIF_COLORS * 3)
    old[: len(palette)] = palette[: GIF_COLORS * 3]
    means = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], old.reshape(-1, 3))
    return np.round(means).astype(np.uint8).tobytes()


def write_gif(
    path: str | os.PathLike[str], frames: list[np.ndarray], fps: float, done: FrameProgress | None = None
) -> None:
    """Looping animated GIF, one image per frame at `fps` (per-frame palette, no dithering; `gif_frame`).

    Frames are quantised one at a time, `done` called after each: that is where the time goes, the file
    itself is written in a fraction of it."""
    images = []
    for frame in frames:
        images.append(gif_frame(frame))
        if done is not None:
            done(len(images), len(frames))
    duration = gif_delay_ms(fps)
    with atomic_write_path(path, follow_symlinks=True) as tmp:
        images[0].save(
            tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0, optimize=False
        )


def write_mp4(
    path: str | os.PathLike[str], frames: list[np.ndarray], fps: float, done: FrameProgress | None = None
) -> None:
    """H.264 (yuv420p) MP4 through PyAV; MPEG-4 part 2 when the PyAV build lacks libx264. `done` after each
    frame encoded."""
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
        for count, frame in enumerate(frames, start=1):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
            if done is not None:
                done(count, len(frames))
        for packet in stream.encode():
            container.mux(packet)


def sheet_layout(count: int) -> tuple[int, int]:
    """(rows, columns) of a contact sheet for `count` frames: as square as possible, filled row by row."""
    columns = max(1, math.ceil(math.sqrt(count)))
    return math.ceil(count / columns), columns


def contact_sheet(frames: list[np.ndarray], done: FrameProgress | None = None) -> Image.Image:
    """All frames on one RGB image, row-major, SHEET_GAP pixels apart.

    Built as a PIL image, frame by frame: a numpy sheet had to be copied again into PIL to be saved (PIL
    copies RGB arrays), so a film's sheet (at 1 fps, thousands of frames) was held twice. `done` after each
    frame placed.
    """
    from PIL import Image

    rows, columns = sheet_layout(len(frames))
    height, width = frames[0].shape[:2]
    size = (columns * width + (columns - 1) * SHEET_GAP, rows * height + (rows - 1) * SHEET_GAP)
    sheet = Image.new("RGB", size, SHEET_BACKGROUND)
    for i, frame in enumerate(frames):
        r, c = divmod(i, columns)
        sheet.paste(Image.fromarray(frame), (c * (width + SHEET_GAP), r * (height + SHEET_GAP)))
        if done is not None:
            done(i + 1, len(frames))
    return sheet


def write_png(path: str | os.PathLike[str], frames: list[np.ndarray], done: FrameProgress | None = None) -> None:
    """PNG contact sheet of all frames."""
    with atomic_write_path(path, follow_symlinks=True) as tmp:
        contact_sheet(frames, done).save(tmp, format="PNG")


def write_frames(
    path: str | os.PathLike[str], frames: list[np.ndarray], fps: float, done: FrameProgress | None = None
) -> None:
    """Write `frames` in the format named by the suffix of `path`; `done(frames so far, frames)` as they go."""
    if not frames:
        raise ValueError("no frames to write")
    suffix = output_format(path)
    if suffix == ".gif":
        write_gif(path, frames, fps, done)
    elif suffix == ".mp4":
        write_mp4(path, frames, fps, done)
    else:
        write_png(path, frames, done)


def slow_gif_hint(path: str | os.PathLike[str], frames: int) -> str | None:
    """A one-line hint to write an MP4 instead, for a GIF of more than GIF_HINT_FRAMES frames; else None.

    Why: a GIF is the slowest output by far (each frame gets its own palette) and the largest; a long one is
    better watched as a video, which the same command writes in seconds."""
    if output_format(path) != ".gif" or frames <= GIF_HINT_FRAMES:
        return None
    return (f"a GIF of {frames} frames takes a while to write and is large: --out "
            f"{Path(path).with_suffix('.mp4')} writes them as a video in seconds")
