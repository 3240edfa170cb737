"""Which source frames a plan shows, beyond `clip_plan`: a frame pool's rows from a start time, and padding
capped at the model's clip length.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from s5cli.data.sampling import FramePlan

if TYPE_CHECKING:
    from s5cli.data.decord_reading import VideoInfo


def pool_rows_from_start(info: VideoInfo, frames: int, pool: int, start: float = 0.0) -> FramePlan:
    """The source frames evaluation reads of a checkpoint trained with data.frame_pool (`pool_rows_planner`:
    `frames` uniform rows of a `pool`-frame uniform plan), over the video from `start` seconds on.

    Why not `clip_plan`'s `frames` uniform frames: they are other frames than the pool rows `s5 eval` and
    `s5 eval --video` score (source frame 3 where the rows give 5), so the picture showed another selection."""
    from dataclasses import replace

    from s5cli.data.encode import pool_rows_planner
    from s5cli.data.sampling import start_frame

    first = start_frame(info.num_frames, info.fps, start, info.timeline)
    rest = replace(info, num_frames=info.num_frames - first,
                   timeline=info.timeline.after(first) if info.timeline is not None else None)
    plan = pool_rows_planner({"frames": frames, "frame_pool": pool})(rest)  # a pool and no fps: never None
    return FramePlan(tuple(first + index for index in plan.indices), plan.padded)


def cap_padding(plan: FramePlan, clip_frames: int) -> FramePlan:
    """`plan` with its trailing repeats of the last frame cut so it is no longer than the real frames or
    `clip_frames` (the checkpoint's clip length), whichever is more.

    Why: padding exists so a short video fills the clip length the model was trained on (what `s5 eval`
    does too); past that it only repeats one frozen frame. `--frames 100000` on a 250-frame video would
    encode and draw 99,750 copies of the last frame for minutes."""
    keep = max(plan.real_frames, clip_frames)
    if len(plan) <= keep:
        return plan
    return FramePlan(plan.indices[:keep], padded=keep - plan.real_frames)
