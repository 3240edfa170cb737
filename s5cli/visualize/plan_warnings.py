"""Warnings for a plan the model or the memory cannot bear well: far longer than the checkpoint's training
clips (`TrainedClips`, with the command-line fix that fits), or frames too large to draw.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from s5cli.visualize.video_encoding import VideoSampling

# A plan longer than this many of the checkpoint's clips is warned about (`long_plan_warning`), however it
# was asked for: --fps over a whole video, many uniform --frames, or a long clip of both.
LONG_PLAN_CLIPS = 4
# A plan whose frames to draw take more memory than this is warned about (`drawing_memory_warning`) where
# `long_plan_warning` says nothing (no clip length: --random-init, whole videos at data.fps): 2 GiB is
# ~7,000 frames at 224 px drawn 1:1, two hours at 1 fps.
LARGE_DRAWING_BYTES = 2 * 2**30


@dataclass(frozen=True)
class TrainedClips:
    """How the checkpoint's clips were sampled: `frames` a clip, at `fps`, or spread uniformly over each
    video (fps None); `stride`: frames between the starts of evaluation's windows over a longer video
    (eval.window_stride; None: the clip length). A longer plan is selected a window at a time as `s5 eval`
    does (`select_by_window`); one many times that long is warned about with the fix that fits this kind
    of checkpoint and what was asked."""

    frames: int
    fps: float | None = None
    stride: int | None = None

    def advice(self, frames: int | None, fps: float | None) -> str:
        """The command-line change that shows the model one clip like its training clips, from a plan asked
        for with these --frames and --fps (None: not given)."""
        if self.fps and fps is not None:  # a rate is asked for: one clip of the trained length at it
            verb = "add" if frames is None else "give"
            return f"{verb} --frames {self.frames} (and --start SECONDS) to show one clip"
        given = " and ".join(flag for flag, value in (("--frames", frames), ("--fps", fps)) if value is not None)
        shown = (f"one {self.frames}-frame clip at {self.fps:g} fps" if self.fps
                 else f"{self.frames} frames spread over the video")
        return f"drop {given} to show {shown}, as in training"


def long_plan_warning(
    video: str | os.PathLike[str], planned: int, frames: int | None, fps: float | None, trained: TrainedClips | None
) -> str | None:
    """The warning for a plan of `planned` frames more than LONG_PLAN_CLIPS times the model's clip, sampled
    with these frames and fps (None: not set); None for a shorter plan or a model without a clip length.

    Why, however the plan was asked for: it is selected a window at a time (`select_by_window`), many
    pictures of windows rather than one of a clip like the model's; a film at 1 fps, or --frames 1000, is
    also gigabytes of tokens for a ViT-L checkpoint and minutes of windows."""
    if trained is None or planned <= LONG_PLAN_CLIPS * trained.frames:
        return None
    sampled = f"at {fps:g} fps" if fps is not None else "spread over the video"
    return (f"{video}: {planned} frames {sampled} are {planned / trained.frames:.0f} times the model's "
            f"{trained.frames}-frame clips, selected a clip-length window at a time: "
            f"{trained.advice(frames, fps)}")


def drawing_memory(frames: int, image_size: int, scale: int = 1) -> int:
    """Bytes of the uint8 RGB frames a plan of `frames` holds to draw on: the backbone's `image_size` crops
    (`encode_video`) and the frames drawn from them `scale` times larger (`render_selection`)."""
    return 3 * frames * image_size**2 * (1 + scale**2)


def drawing_memory_warning(
    video: str | os.PathLike[str], planned: int, sampling: VideoSampling, scale: int = 1
) -> str | None:
    """The warning for a plan of `planned` frames whose frames to draw (`drawing_memory`) take more than
    LARGE_DRAWING_BYTES; None for a smaller one.

    Why: `long_plan_warning` needs the model's clip length, so with --random-init or a checkpoint trained on
    whole videos a film at --fps 25 (180,000 frames, ~54 GB at 224 px) started without a word and ran out
    of memory partway, after minutes of decoding."""
    needed = drawing_memory(planned, sampling.image_size, scale)
    if needed <= LARGE_DRAWING_BYTES:
        return None
    sampled = f"at {sampling.fps:g} fps" if sampling.fps is not None else "spread over the video"
    drawn = f"{sampling.image_size} px" + (f" drawn x{scale}" if scale > 1 else "")
    fix = ("add --frames N (and --start SECONDS) to show one clip" if sampling.frames is None
           else "give fewer --frames")
    return (f"{video}: {planned} frames {sampled} need ~{needed / 2**30:.3g} GiB of memory to draw ({drawn}): "
            f"{fix}")
