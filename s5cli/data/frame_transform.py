"""How decoded frames become the backbone's input: the square crop (or squash) of recipe `data.resize`, and
ImageNet normalisation, with intermediates held for a chunk of frames at a time.

Kept apart from decoding (`decode`): this is tensor work on frames already in memory, and the recipe schema
and the token cache's key read its modes without importing torch or decord.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
UNIT_MEAN = (0.0, 0.0, 0.0)
UNIT_STD = (1.0, 1.0, 1.0)
# Frames resized per step by `resized_crops`: the float intermediates of a resize then exist for one chunk,
# not for the whole video (at 1 fps a film has thousands of frames).
RESIZE_CHUNK_FRAMES = 64

# How a frame becomes the backbone's square input (recipe `data.resize`). "crop": shorter side to S, then
# the centre S x S (aspect kept, a 16:9 frame loses 22 % of its width on each side). "squash": the whole
# frame to S x S (aspect lost, nothing cut), what ViS4mer's features were made from.
RESIZE_MODES = ("crop", "squash")


def check_resize(resize: str) -> str:
    """`resize` if it names a mode of RESIZE_MODES, else ValueError naming them."""
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")
    return resize


def resized_size(height: int, width: int, shorter_side: int) -> tuple[int, int]:
    """(height, width) with the shorter side scaled to `shorter_side`, aspect ratio kept."""
    scale = shorter_side / min(height, width)
    return max(shorter_side, round(height * scale)), max(shorter_side, round(width * scale))


def decoded_size(height: int, width: int, image_size: int, resize: str = "crop") -> tuple[int, int]:
    """(height, width) a frame is resized to before its centre `image_size` square is taken (`resize`)."""
    if check_resize(resize) == "squash":
        return image_size, image_size
    return resized_size(height, width, image_size)


def fill_in_chunks(
    count: int, step: int, piece: Callable[[int, int], torch.Tensor], dtype: torch.dtype | None = None
) -> torch.Tensor | None:
    """Rows [0, count) made `step` at a time by `piece(start, stop)`, written into one output allocated from
    the first piece's shape (in `dtype`, else the piece's). None when `count` is 0.

    Unlike pieces collected in a list and joined by `torch.cat`, the rows never exist twice: for a long
    video's frames, crops or tokens that is the difference between holding them once and twice.
    """
    import torch

    out: torch.Tensor | None = None
    for start in range(0, count, step):
        part = piece(start, min(start + step, count))
        if out is None:
            out = torch.empty((count, *part.shape[1:]), dtype=dtype or part.dtype)
        out[start : start + part.shape[0]] = part
    return out


def preprocess(
    frames: np.ndarray | torch.Tensor,
    image_size: int,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    resize: str = "crop",
) -> torch.Tensor:
    """uint8 `(T, H, W, 3)` -> float `(T, 3, S, S)`: `resized_crops`, then normalised."""
    return normalize(resized_crops(frames, image_size, resize), mean, std)


def resized_crops(frames: np.ndarray | torch.Tensor, image_size: int, resize: str = "crop") -> torch.Tensor:
    """uint8 `(T, H, W, 3)` -> uint8 `(T, 3, S, S)`: shorter side resized to S, then the centre crop
    (`resize="squash"`: the whole frame resized to S x S).

    Chunk by chunk into one preallocated output; each frame is resized on its own, so the chunking does not
    change the numbers. uint8 because it is a quarter of the float frames' memory: the backbone's input is
    normalised a batch at a time (`normalize`).
    """
    import torch

    check_resize(resize)
    # (T, H, W, 3) -> (T, 3, H, W) as a view: channels-last memory, which torch's uint8 resize kernel wants.
    images = torch.as_tensor(frames).permute(0, 3, 1, 2)
    out = fill_in_chunks(images.shape[0], RESIZE_CHUNK_FRAMES,
                         lambda start, stop: _resized_crop(images[start:stop], image_size, resize))
    return out if out is not None else torch.empty((0, 3, image_size, image_size), dtype=torch.uint8)


def _resized_crop(images: torch.Tensor, image_size: int, resize: str) -> torch.Tensor:
    import torch.nn.functional as F

    height, width = images.shape[-2:]
    new_h, new_w = decoded_size(height, width, image_size, resize)
    if (new_h, new_w) != (height, width):
        # Resizing the uint8 frames is ~20x faster than resizing floats (a vectorised uint8 path) and costs at
        # most one grey level. Antialiasing matters when shrinking 720p to 224: without it edges alias.
        images = F.interpolate(
            images, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False
        )
    top, left = (new_h - image_size) // 2, (new_w - image_size) // 2
    return images[:, :, top : top + image_size, left : left + image_size]


def normalize(
    images: torch.Tensor, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD
) -> torch.Tensor:
    """uint8 `(T, 3, S, S)` -> float `((x / 255) - mean) / std`, computed in place on the float copy."""
    import torch

    out = images.to(torch.float32)
    mean_t = torch.tensor(mean, dtype=out.dtype, device=out.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=out.dtype, device=out.device).view(1, 3, 1, 1)
    return out.div_(255.0).sub_(mean_t).div_(std_t)
