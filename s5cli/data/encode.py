"""A video's tokens through the frozen backbone, with the settings a recipe's data section asks for.

`s5 extract`, `eval --video` and `visualize-mask` all encode through here, so that their tokens are the same
numbers: uint8 crops normalised a batch at a time, backbone batches counted from the first frame whatever the
decode chunks, and neither a film's frames nor its float32 tokens ever held whole. The resumable, sharded
loop that caches a dataset's tokens is `s5cli.data.extract`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from s5cli.data.cache_settings import ExtractionSettings
from s5cli.data.decode import OpenedClip, open_clip
from s5cli.data.frame_transform import resized_crops
from s5cli.data.prefetch import running_ahead
from s5cli.data.sampling import FramePlan, uniform_plan
from s5cli.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from s5cli.data.decord_reading import VideoInfo


PATCH_SIZE = 16  # every backbone we ship uses 16 px patches


def data_setting(data: Any, name: str, default: Any = None) -> Any:
    """A setting of a recipe's data section, given as the dataclass or as a plain dict (None: `default`)."""
    value = data.get(name, default) if isinstance(data, dict) else getattr(data, name, default)
    return default if value is None else value


# The settings that decide which network makes the tokens: a model trained on one's tokens has learned
# another input space than the other's, even at the same width.
TOKEN_IDENTITY = ("backbone", "backbone_weights")


def token_identity(name: str, value: Any) -> Any:
    """A TOKEN_IDENTITY setting as compared between a checkpoint and a recipe: empty is None, and a Hub id
    is its bare spelling. Why: the token cache takes `hf://timm/X` and `timm/X` as one (`hub_spelling`), so
    a run trained on one spelling and finetuned or evaluated with the other was refused."""
    from s5cli.data.cache_settings import hub_spelling

    if not value:
        return None
    return hub_spelling(value) if name == "backbone_weights" and isinstance(value, str) else value

# Data settings added after runs were first saved, with the value every earlier run had (the only
# behaviour there was): a checkpoint whose stored recipe lacks one was made with it.
SETTINGS_OF_OLD_RUNS = {"resize": "crop"}


def with_settings_of_old_runs(stored_data: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's stored data section with SETTINGS_OF_OLD_RUNS filled in where it has none."""
    return {**SETTINGS_OF_OLD_RUNS, **stored_data}


def settings_from_data(data: Any, pool: bool = True) -> ExtractionSettings:
    """Extraction settings of a recipe's data section (fps sampling ignores `frames`: it is the clip length then).

    With `data.frame_pool` the cache holds that many uniform frames, which training clips are drawn from;
    `pool=False` gives the `frames` uniform frames a model reads at evaluation, for a raw video
    (`eval --video`) that is encoded and read at once."""
    backbone = data_setting(data, "backbone")
    if not backbone:
        raise UserError("data.backbone is not set: use e.g. patch_pool or vit_large_patch16_224")
    fps = data_setting(data, "fps")
    frames = data_setting(data, "frames")
    if fps is not None:
        if float(fps) <= 0:
            raise UserError(f"data.fps must be positive, got {fps}")
        fps, frames = float(fps), None
    elif frames is None:
        raise UserError("set data.frames (T uniform frames per video) or data.fps (frames per second)")
    elif int(frames) < 1:
        raise UserError(f"data.frames must be at least 1, got {frames}")
    elif pool and data_setting(data, "frame_pool") is not None:
        frames = int(data_setting(data, "frame_pool"))
    image_size = int(data_setting(data, "image_size", 224))
    if image_size < PATCH_SIZE or image_size % PATCH_SIZE:
        raise UserError(
            f"data.image_size={image_size} must be a positive multiple of the {PATCH_SIZE} px patch"
        )
    return ExtractionSettings(
        backbone=str(backbone),
        backbone_weights=data_setting(data, "backbone_weights") or None,
        frames=None if frames is None else int(frames),
        fps=fps,
        image_size=image_size,
        dtype=str(data_setting(data, "cache_dtype", "float16")),
        resize=str(data_setting(data, "resize", "crop")),
    )


def load_backbone(settings: ExtractionSettings, device: str | torch.device = "cpu") -> nn.Module:
    """The frozen backbone named by the settings, on `device`."""
    from s5cli.models.backbone import build_backbone, random_weights_unwarned

    if random_weights_unwarned(settings.backbone, settings.backbone_weights):
        from s5cli.cli.console import print_warning

        print_warning(
            f"backbone {settings.backbone} has no data.backbone_weights: using random weights (set a Hub id, "
            "e.g. timm/vit_large_patch16_224.augreg_in21k, for meaningful tokens)"
        )
    return build_backbone(settings.backbone, settings.backbone_weights, settings.image_size).to(device)


# Frames per backbone forward pass when turning videos into tokens (extraction and `eval --video`).
BACKBONE_BATCH_FRAMES = 32


def encode_frames(
    backbone: nn.Module, images: torch.Tensor, batch_size: int = BACKBONE_BATCH_FRAMES,
    dtype: torch.dtype | None = None, on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """`(T, 3, S, S)` frames -> `(T, tokens, D)` tokens: `encode_frame_chunks` of one chunk, all the frames."""
    return encode_frame_chunks(backbone, [images], images.shape[0], batch_size, dtype, on_batch)


def encode_frame_chunks(
    backbone: nn.Module, chunks: Iterable[torch.Tensor], count: int, batch_size: int = BACKBONE_BATCH_FRAMES,
    dtype: torch.dtype | None = None, on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """`count` frames, arriving as `(n, 3, S, S)` chunks -> `(count, tokens, D)` tokens (float32, or `dtype`).

    The backbone sees batches of `batch_size` frames counted from the first frame, whatever the chunk
    sizes, so the tokens are those of the whole stack at once; a chunk is dropped once its frames are
    through, so a film's frames never all exist. Float frames are taken as normalised; uint8 crops (what
    extraction decodes) are normalised a batch at a time with the backbone's `mean`/`std`, on its device: a
    quarter of the memory and of the copy to a GPU. With `dtype` (the cache's), each batch is rounded as
    it is written: a whole video's float32 tokens never exist, and the numbers are those of rounding them
    afterwards. `on_batch(frames)` is called after each batch with its number of frames (a progress bar).
    """
    import torch

    from s5cli.data.frame_transform import UNIT_MEAN, UNIT_STD, fill_in_chunks, normalize

    mean, std = getattr(backbone, "mean", UNIT_MEAN), getattr(backbone, "std", UNIT_STD)

    device = next(iter(backbone.buffers()), next(iter(backbone.parameters()), None))
    device = device.device if device is not None else torch.device("cpu")
    batches = _rebatched(chunks, batch_size)

    def batch_tokens(start: int, stop: int) -> torch.Tensor:
        chunk = next(batches, None)
        if chunk is None or chunk.shape[0] != stop - start:
            raise RuntimeError(f"expected frames {start}-{stop} of {count}, the decoder gave a different number")
        chunk = chunk.to(device, non_blocking=True)
        if chunk.dtype == torch.uint8:
            chunk = normalize(chunk, mean, std)
        with torch.autocast("cuda", dtype=torch.float16, enabled=device.type == "cuda"):
            tokens = backbone(chunk)
        if on_batch is not None:
            on_batch(stop - start)
        return tokens

    # A film's tokens run to gigabytes: each batch goes straight into the one output (fill_in_chunks).
    with torch.inference_mode():
        out = fill_in_chunks(count, batch_size, batch_tokens, dtype or torch.float32)
    return out if out is not None else torch.empty(0)


def _rebatched(chunks: Iterable[torch.Tensor], size: int) -> Iterator[torch.Tensor]:
    """The rows of `chunks` regrouped into batches of `size` (the last one shorter); a batch within one
    chunk is a view of it, one spanning chunks a copy."""
    import torch

    pending: list[torch.Tensor] = []
    held = 0
    for chunk in chunks:
        start = 0
        while start < chunk.shape[0]:
            piece = chunk[start : start + size - held]
            pending.append(piece)
            held += piece.shape[0]
            start += piece.shape[0]
            if held == size:
                yield pending[0] if len(pending) == 1 else torch.cat(pending)
                pending, held = [], 0
    if pending:
        yield pending[0] if len(pending) == 1 else torch.cat(pending)


def open_for_backbone(path: Path, settings: ExtractionSettings, threads: int,
                      planner: Callable[[VideoInfo], FramePlan] | None = None) -> OpenedClip:
    """The video at `path` opened as `settings` sample it (or as `planner` plans it), decoded at the
    backbone's image size."""
    return open_clip(path, settings.frames, settings.fps, num_threads=threads, shorter_side=settings.image_size,
                     resize=settings.resize, planner=planner)


def pool_rows_planner(data: Any) -> Callable[[VideoInfo], FramePlan] | None:
    """With `data.frame_pool`: a planner of the source frames evaluation reads, the pool's uniform plan
    (what extraction caches) and then `data.frames` uniform rows of its real frames (`TokenDataset`'s
    spread evaluation); None without a pool (the usual plan).

    Why: `eval --video` sampled `data.frames` uniform frames of the raw video itself, other frames than
    the dataset evaluation of the same video scores (frame 6 of 100 where the pool's rows give frame 7)."""
    pool = data_setting(data, "frame_pool")
    if pool is None or data_setting(data, "fps") is not None:
        return None
    frames = int(data_setting(data, "frames"))

    def plan(info: VideoInfo) -> FramePlan:
        pooled = uniform_plan(info.num_frames, int(pool), info.timeline)  # extraction's pool
        rows = uniform_plan(max(1, pooled.real_frames), frames)
        return FramePlan(tuple(pooled.indices[row] for row in rows.indices), padded=rows.padded)

    return plan


def backbone_crops(clip: OpenedClip, image_size: int, resize: str = "crop") -> Iterator[torch.Tensor]:
    """The clip's uint8 `(n, 3, S, S)` crops (`resized_crops`), a decode chunk at a time (the backbone pass
    normalises them)."""
    return clip.chunks(lambda frames: resized_crops(frames, image_size, resize))


def encode_clip(
    clip: OpenedClip, backbone: nn.Module, image_size: int, dtype: torch.dtype | None = None,
    on_batch: Callable[[int], None] | None = None, on_crops: Callable[[int, torch.Tensor], None] | None = None,
    resize: str = "crop",
) -> torch.Tensor:
    """An opened clip's `(T, tokens, D)` tokens (`encode_frame_chunks`), its crops decoded in a background
    thread at most two chunks ahead of the backbone: decoding and the backbone overlap, and a film's
    frames never all exist.

    `on_crops(start, crops)` sees each uint8 `(n, 3, S, S)` chunk, rows `start:start + n` of the clip,
    before the backbone does: `visualize-mask` keeps them to draw on.
    """
    with running_ahead(backbone_crops(clip, image_size, resize), name="s5-decode") as crops:
        if on_crops is not None:
            crops = _tapped(crops, on_crops)
        return encode_frame_chunks(backbone, crops, len(clip.plan), dtype=dtype, on_batch=on_batch)


def _tapped(chunks: Iterator[torch.Tensor], see: Callable[[int, torch.Tensor], None]) -> Iterator[torch.Tensor]:
    """`chunks` unchanged, each shown to `see(start row, chunk)` on its way through."""
    start = 0
    for chunk in chunks:
        see(start, chunk)
        start += chunk.shape[0]
        yield chunk


def fps_above_warning(fps: float, videos: Sequence[tuple[str, float]]) -> str:
    """One line for the videos (name, own fps) that `fps` samples faster than they were filmed.

    Why warn: sampling above a video's rate repeats its frames (`fps_indices` rounds down to the frame
    shown at each time), so the cache holds the same tokens several times and the model's clips cover
    less time than `frames / fps` suggests. Once per run, not per video: a dataset can have thousands.
    """
    name, rate = videos[0]
    slowest = min(own for _, own in videos)
    count = f"{len(videos)} videos" if len(videos) > 1 else "1 video"
    return (f"data.fps {fps:g} is above the frame rate of {count} (e.g. {name}: {rate:g} fps), so their "
            f"tokens repeat source frames; set data.fps to {slowest:g} or less to sample each frame once")


class VideoTokens(NamedTuple):
    """A raw video's tokens and the frame plan they were sampled by (`plan.padded`: rows that repeat the
    video's last frame because it had fewer frames than the plan asked for)."""

    tokens: torch.Tensor
    plan: FramePlan


def load_video_tokens(
    path: str | os.PathLike[str], data: Any, device: str | torch.device = "cpu",
    backbone: nn.Module | None = None, show_progress: bool = False,
) -> torch.Tensor:
    """One raw video -> `(T, S, D)` tokens (`load_video_tokens_with_plan` without its plan)."""
    return load_video_tokens_with_plan(path, data, device, backbone, show_progress).tokens


def load_video_tokens_with_plan(
    path: str | os.PathLike[str], data: Any, device: str | torch.device = "cpu",
    backbone: nn.Module | None = None, show_progress: bool = False,
) -> VideoTokens:
    """One raw video -> `(T, S, D)` tokens with the recipe's extraction settings, in the cache's dtype:
    the numbers a cached dataset would give (callers convert a window at a time, as the dataset does).
    With `data.frame_pool`, the source frames evaluation reads (`data.frames` uniform rows of the pool), not
    the pool training draws from. With them the plan they were sampled by: `eval --video` counts a short
    video's real frames from it (planning again from the header opened every video a second time).

    Pass `backbone` (`load_backbone(settings_from_data(data), device)`) to reuse it over several videos.
    `show_progress`: a bar over the backbone's batches (a film at 1 fps is thousands of frames).
    """

    from s5cli.cli.console import SimpleProgress

    settings = settings_from_data(data, pool=False)
    if backbone is None:
        backbone = load_backbone(settings, device)
    clip = open_for_backbone(Path(path), settings, int(data_setting(data, "decode_threads", 2)),
                             planner=pool_rows_planner(data))
    clip.print_warnings()
    if clip.repeats_frames:
        from s5cli.cli.console import print_warning

        print_warning(fps_above_warning(settings.fps, [(Path(path).name, clip.info.fps)]))
    frames = len(clip.plan)
    batches = -(-frames // BACKBONE_BATCH_FRAMES)
    progress = SimpleProgress(f"backbone {Path(path).name}", total=batches, enabled=show_progress and batches > 1)
    try:
        tokens = encode_clip(clip, backbone, settings.image_size, settings.torch_dtype,
                             on_batch=lambda _frames: progress.advance(), resize=settings.resize)  # the bar counts batches
    finally:
        progress.close()
    return VideoTokens(tokens.to(device), clip.plan)
