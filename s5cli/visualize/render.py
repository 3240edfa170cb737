"""Draw a token selection onto its frames: dropped patches dimmed, a score heatmap, the patch grid and captions.

Styles: "dim" (kept patches in full colour, dropped ones multiplied by `DIM`), "heatmap" (every patch tinted by
its mask-generator score, kept ones outlined), "both" (heatmap tint, then dropped patches dimmed). Each frame is
image_size x image_size times `scale` (nearest neighbour, so every model pixel stays one block: a 64 px model
input is unreadable drawn 1:1); the captions (position, source frame, time, kept fraction and, for untrained
weights, "RANDOM INIT") are drawn on top at that size in small outlined text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from s5cli.errors import UserError

if TYPE_CHECKING:
    import numpy as np

    from s5cli.visualize.progress import ProgressReport
    from s5cli.visualize.selection import MaskSelection

STYLES = ("dim", "heatmap", "both")
DIM = 0.35  # brightness factor of a dropped patch: dark enough to see at a glance, light enough to see what it was
GRID_ALPHA = 0.3  # weight of the white patch-grid lines
HEAT_ALPHA = 0.5  # weight of the heatmap colour over the frame
RANDOM_INIT_TEXT = "RANDOM INIT"
# A perceptually ordered ramp (dark blue -> purple -> orange -> yellow), interpolated linearly.
_RAMP = ((0.0, (20, 12, 90)), (0.35, (130, 30, 150)), (0.7, (235, 110, 40)), (1.0, (252, 235, 90)))


def colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) -> RGB uint8 (shape + (3,)) along the heat ramp."""
    import numpy as np

    v = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    stops = np.array([s for s, _ in _RAMP])
    colours = np.array([c for _, c in _RAMP], dtype=np.float64)
    out = np.stack([np.interp(v, stops, colours[:, ch]) for ch in range(3)], axis=-1)
    return out.round().astype(np.uint8)


def patch_heat(scores: list[float] | None, kept_patches: list[int], patches: int) -> np.ndarray:
    """Per-patch heat in [0, 1]: the frame's patch probabilities scaled to their range (kept mask if no scores)."""
    import numpy as np

    if scores is None:
        heat = np.zeros(patches)
        heat[list(kept_patches)] = 1.0
        return heat
    probs = np.exp(np.asarray(scores[1 : patches + 1], dtype=np.float64))
    low, high = probs.min(), probs.max()
    return (probs - low) / (high - low) if high > low else np.full(patches, 0.5)


def _font(size_px: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size_px)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def draw_captions(image, lines: list[str], banner: str | None) -> None:
    """Outlined white captions top-left, shrunk until they fit the width; `banner` in red at the bottom."""
    from PIL import ImageDraw

    draw = ImageDraw.Draw(image)
    width, height = image.size
    size = max(7, round(width / 14))
    font = _font(size)
    widest = [*lines, banner or ""]
    while size > 6 and max(draw.textlength(line, font=font) for line in widest) > width - 4:
        size -= 1
        font = _font(size)
    y = 1
    for line in lines:
        draw.text((2, y), line, font=font, fill=(255, 255, 255), stroke_width=1, stroke_fill=(0, 0, 0))
        y += size + 2
    if banner:
        draw.text((2, height - size - 3), banner, font=font, fill=(255, 60, 60), stroke_width=1, stroke_fill=(0, 0, 0))


def render_frame(
    pixels: np.ndarray,
    kept_patches: list[int],
    scores: list[float] | None,
    patch_size: int,
    style: str = "dim",
    captions: list[str] | None = None,
    banner: str | None = None,
    grid_lines: bool = True,
    scale: int = 1,
) -> np.ndarray:
    """One (H * scale, W * scale, 3) uint8 frame with its selection drawn."""
    import numpy as np
    from PIL import Image

    if style not in STYLES:
        raise UserError(f"--style {style!r} is unknown: use one of {', '.join(STYLES)}")
    if scale > 1:
        pixels = pixels.repeat(scale, 0).repeat(scale, 1)
        patch_size *= scale
    height, width = pixels.shape[:2]
    rows, cols = height // patch_size, width // patch_size
    patches = rows * cols
    keep = np.zeros(patches, dtype=bool)
    keep[list(kept_patches)] = True
    # Per-pixel patch masks by repeating the (rows, cols) patch map up to pixel resolution.
    def upsample(per_patch: np.ndarray) -> np.ndarray:
        return per_patch.reshape(rows, cols, *per_patch.shape[1:]).repeat(patch_size, 0).repeat(patch_size, 1)

    out = pixels.astype(np.float32)
    if style in ("heatmap", "both"):
        heat = colormap(patch_heat(scores, kept_patches, patches)).astype(np.float32)
        out = (1.0 - HEAT_ALPHA) * out + HEAT_ALPHA * upsample(heat)
    if style in ("dim", "both"):
        out = np.where(upsample(keep)[..., None], out, out * DIM)
    if grid_lines:
        for k in range(1, rows):
            out[k * patch_size, :] = (1 - GRID_ALPHA) * out[k * patch_size, :] + GRID_ALPHA * 255.0
        for k in range(1, cols):
            out[:, k * patch_size] = (1 - GRID_ALPHA) * out[:, k * patch_size] + GRID_ALPHA * 255.0
    image = Image.fromarray(out.clip(0, 255).round().astype(np.uint8))
    if style == "heatmap":
        from PIL import ImageDraw

        draw = ImageDraw.Draw(image)
        for p in np.flatnonzero(keep):
            r, c = divmod(int(p), cols)
            box = (c * patch_size + 1, r * patch_size + 1, (c + 1) * patch_size - 2, (r + 1) * patch_size - 2)
            draw.rectangle(box, outline=(255, 255, 255))
    if captions or banner:
        draw_captions(image, captions or [], banner)
    return np.asarray(image)


def frame_captions(selection: MaskSelection, t: int) -> list[str]:
    """Caption lines of sampled frame t: position/total, source frame, time; kept patches."""
    patches = selection.grid * selection.grid
    kept = len(selection.kept_patches(t))
    return [
        f"{t + 1}/{len(selection.kept)} f{selection.source_frames[t]} {selection.times[t]:.1f}s",
        f"kept {kept}/{patches} ({100 * kept / patches:.0f}%)",
    ]


def render_selection(
    selection: MaskSelection, style: str = "dim", report: ProgressReport | None = None, captions: bool = True,
    scale: int = 1,
) -> list[np.ndarray]:
    """All frames of a selection drawn in `style`, each (image_size * scale) px square."""
    if selection.images is None:
        raise ValueError("the selection carries no frames to draw on")
    if style not in STYLES:
        raise UserError(f"--style {style!r} is unknown: use one of {', '.join(STYLES)}")
    banner = RANDOM_INIT_TEXT if selection.random_init else None
    total = len(selection.kept)
    frames = []
    for t in range(total):
        frames.append(
            render_frame(
                selection.images[t],
                selection.kept_patches(t),
                None if selection.scores is None else selection.scores[t],
                selection.patch_size,
                style,
                frame_captions(selection, t) if captions else None,
                banner,
                scale=scale,
            )
        )
        if report is not None:
            report("render", t + 1, total)
    return frames
