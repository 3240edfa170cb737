"""Decode one video as its `VideoSampling` says and run the backbone on the frames: the tokens the S5 model
selects from (as the feature cache holds them) and the crops the backbone saw, to draw on.

The plan is made, and warned about, before decoding past the first chunk (`_open_sampled`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from s5cli.errors import UserError
from s5cli.visualize.frame_plans import cap_padding, pool_rows_from_start
from s5cli.visualize.plan_warnings import drawing_memory_warning, long_plan_warning

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from s5cli.data.decord_reading import VideoInfo
    from s5cli.visualize.plan_warnings import TrainedClips
    from s5cli.visualize.progress import ProgressReport

# An --fps above this multiple of the video's own rate is refused (see `_open_sampled`); up to it, warned about.
MAX_FPS_OVER_SOURCE = 2.0


@dataclass(frozen=True)
class VideoSampling:
    """How `encode_video` turns a video into tokens: which frames (`clip_plan`: `frames` uniform frames, every
    frame at `fps`, or with both one clip of `frames` frames at `fps`; from `start` seconds on), the crop
    size and how frames become it (`resize`: the checkpoint's data.resize), the decoder's threads and the dtype
    the tokens are rounded through (the feature cache's; None: not rounded). `frame_pool` (with `frames` and
    no fps): instead the `frames` rows of that many uniform frames, which evaluation reads of a checkpoint
    trained with data.frame_pool (`pool_rows_from_start`). One value that `run_selection` passes on whole,
    so a new setting is added in one place."""

    frames: int | None
    fps: float | None
    image_size: int
    start: float = 0.0
    threads: int = 2
    storage_dtype: str | None = "float16"
    resize: str = "crop"
    frame_pool: int | None = None


@dataclass
class EncodedVideo:
    """A video's sampled frames as backbone tokens, with the crops the backbone saw (to draw on)."""

    tokens: torch.Tensor  # (T, S, D) in the storage dtype, like the feature cache's (float32 without one)
    pixels: np.ndarray  # (T, size, size, 3) uint8
    source_frames: list[int]
    times: list[float]


def encode_video(
    video: str | os.PathLike[str],
    backbone: nn.Module,
    sampling: VideoSampling,
    *,
    report: ProgressReport | None = None,
    trained: TrainedClips | None = None,
    scale: int = 1,
) -> EncodedVideo:
    """Sample frames as `sampling` says, resize them to its `image_size` squares and run the backbone.

    Through the same code as `s5 extract` (`encode_clip`: decoder scaling, uint8 crops, batches,
    normalisation, float16 autocast on CUDA, rounding to the storage dtype), so the model scores exactly the
    tokens its feature cache would hold; and streamed, so a film sampled at `--fps` is held as uint8
    crops (to draw on) and tokens, never as float frames. The tokens stay in the storage dtype, as the cache
    holds them: a float32 copy of a whole film's float16 tokens doubled their memory for numbers that
    `select_per_frame` gets anyway by converting a window at a time (as `s5 eval --video` does).
    UserError if the video cannot be read. `trained`: how the model's training clips were sampled (a much
    longer plan is warned about); `scale`: how many times larger the CLI draws each frame (a plan whose
    drawing would take gigabytes is warned about).
    """
    import numpy as np

    from s5cli.data.cache_settings import storage_dtype as cached_dtype
    from s5cli.data.encode import encode_clip

    clip = _open_sampled(video, sampling, trained, scale)
    image_size = sampling.image_size
    total = len(clip.plan)
    pixels = np.empty((total, image_size, image_size, 3), dtype=np.uint8)
    encoded = 0

    def keep_crops(row: int, crops: torch.Tensor) -> None:
        pixels[row : row + crops.shape[0]] = crops.permute(0, 2, 3, 1).numpy()
        if report is not None:
            report("decode", row + crops.shape[0], total)

    def batch_done(batch_frames: int) -> None:
        nonlocal encoded
        encoded += batch_frames
        if report is not None:
            report("backbone", encoded, total)

    dtype = cached_dtype(sampling.storage_dtype) if sampling.storage_dtype else None
    tokens = encode_clip(clip, backbone, image_size, dtype, on_batch=batch_done, on_crops=keep_crops,
                         resize=sampling.resize)
    times = [clip.info.time_of(index) for index in clip.plan.indices]
    return EncodedVideo(tokens, pixels, list(clip.plan.indices), times)


def _open_sampled(
    video: str | os.PathLike[str], sampling: VideoSampling, trained: TrainedClips | None = None, scale: int = 1
):
    """The video opened for the backbone with `clip_plan`'s frames (or a pool's rows, `pool_rows_from_start`);
    warns about padding, repeated frames and a plan far longer than the model's clips before decoding past
    the first chunk (`open_clip`). UserError for an unreadable video or a start past its last frame."""
    from s5cli.cli.console import print_warning
    from s5cli.data.decode import open_clip
    from s5cli.data.sampling import clip_plan

    frames, fps, start = sampling.frames, sampling.fps, sampling.start
    asked: list[int] = []  # the plan's length before padding was capped (see `cap_padding`)

    def plan_from_start(info: VideoInfo):
        asked.clear()  # a damaged video is planned again over the frames before the damage (`open_clip`)
        if fps is not None and frames is None and fps > MAX_FPS_OVER_SOURCE * info.fps:
            # Over the whole video every source frame would repeat fps / info.fps times: --fps 1000 on a 25 fps
            # video decoded, encoded and drew 2,000 frames (1.6 GB) to show 50, and --fps 1e5 ran out of
            # memory. With --frames the plan is that many frames whatever the rate.
            raise UserError(f"--fps {fps:g} is {fps / info.fps:.3g} times {video}'s own {info.fps:g} fps (each frame "
                            f"would repeat): give at most --fps {MAX_FPS_OVER_SOURCE * info.fps:.4g}, or a clip of "
                            "--frames N")
        last = info.time_of(info.num_frames - 1)  # when the last frame is shown
        if not 0.0 <= start <= last:
            raise UserError(f"--start {start:g} is past the last frame of {video} (at {last:.2f} s): give a time "
                            "in seconds from 0 to that")
        try:
            if sampling.frame_pool is not None and frames is not None and fps is None:
                plan = pool_rows_from_start(info, frames, sampling.frame_pool, start)
            else:
                plan = clip_plan(info.num_frames, info.fps, frames, fps, start, timeline=info.timeline)
        except ValueError as error:  # an fps plan past MAX_FPS_PLAN_FRAMES
            raise UserError(f"{video}: --fps {fps:g}: {error}") from None
        capped = cap_padding(plan, trained.frames if trained else 0)
        if len(capped) < len(plan):
            asked.append(len(plan))
        return capped

    clip = open_clip(video, frames, fps, num_threads=sampling.threads, shorter_side=sampling.image_size,
                     planner=plan_from_start, resize=sampling.resize)
    if asked:
        real = clip.plan.real_frames
        if clip.plan.padded:
            shown = f"padded to {len(clip.plan)} by repeating the last frame (the model's clip length), not to {asked[0]}"
        elif trained:
            shown = f"showing those {real} (no padding past the model's {trained.frames}-frame clips)"
        else:
            shown = f"showing those {real} (a model without a trained clip length needs no padding)"
        print_warning(f"{video}: only {real} frame{'s' if real != 1 else ''} to sample, asked for {asked[0]}; {shown}")
    clip.print_warnings(padding=not asked)
    if clip.repeats_frames:
        print_warning(f"--fps {fps:g} is above the video's own {clip.info.fps:g} fps: source frames will "
                      "repeat in the output")
    long_plan = (long_plan_warning(video, len(clip.plan), frames, fps, trained)
                 or drawing_memory_warning(video, len(clip.plan), sampling, scale))
    if long_plan:
        print_warning(long_plan)
    return clip
