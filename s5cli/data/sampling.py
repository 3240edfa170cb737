"""Which frames of a video to decode: T uniform frames, or every frame at a target fps.

Evaluation windows are cut later, from the cached frames (`TokenDataset`, `s5 eval --video`). Pure index
arithmetic (no decoding), so each rule is easy to test. Short videos are padded by repeating the
last frame index; `FramePlan.padded` says by how many so the caller can warn once.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

# The most frames an fps plan over a whole video may have (a 2-hour film at 60 fps is 432,000): past it a
# rate is a typo, and its index list alone would take gigabytes before any decoding started.
MAX_FPS_PLAN_FRAMES = 1_000_000


@dataclass(frozen=True)
class FramePlan:
    """Frame indices to read (in output order) and how many of them repeat the last frame as padding."""

    indices: tuple[int, ...]
    padded: int = 0

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def real_frames(self) -> int:
        """Frames of the plan that are not padding."""
        return len(self.indices) - self.padded


@dataclass(frozen=True)
class Timeline:
    """When each frame of a variable-frame-rate video starts (seconds from the first), and how long it runs.

    Why: for such a video "frame k x average fps" is not time k / fps (a phone clip filmed 15 frames at
    25 fps, then 15 at 2.5 fps, sampled at 1 fps gave frames of 0, 0.2, 0.4, 1.0 and 3.0 s labelled
    0, 0.9, 1.8, 2.9 and 3.9 s, and stopped halfway). Constant-rate videos have no timeline, so their
    frames stay exactly those of the index arithmetic.
    """

    starts: tuple[float, ...]
    duration: float

    def index_at(self, seconds: float) -> int:
        """The frame shown at `seconds`: the last one starting at or before it."""
        return max(0, bisect.bisect_right(self.starts, seconds + 1e-6) - 1)

    def first_at_or_after(self, seconds: float) -> int:
        """The first frame starting at or after `seconds` (len(starts) when none does)."""
        return bisect.bisect_left(self.starts, seconds - 1e-6)

    def after(self, first: int) -> Timeline:
        """The timeline of frames `first` on, from their own start."""
        offset = self.starts[first]
        return Timeline(tuple(t - offset for t in self.starts[first:]), self.duration - offset)


def timeline_if_variable(starts: Sequence[float], end: float, fps: float) -> Timeline | None:
    """A Timeline when frame start times stray from `index / fps` by more than half a frame, else None.

    None also for times that do not increase: no timeline at all (decord reports every frame of a cut
    Matroska file at the same huge time) made every sampled second show the last frame.
    """
    if len(starts) < 2 or not fps > 0 or any(later <= earlier for earlier, later in itertools.pairwise(starts)):
        return None
    first = float(starts[0])
    shifted = tuple(float(t) - first for t in starts)
    if max(abs(t - i / fps) for i, t in enumerate(shifted)) <= 0.5 / fps:
        return None
    return Timeline(shifted, float(end) - first)


def _check_count(num_frames_in_video: int) -> None:
    if num_frames_in_video < 1:
        raise ValueError(f"a video needs at least one frame, got {num_frames_in_video}")


def uniform_indices(num_frames_in_video: int, frames: int, timeline: Timeline | None = None) -> list[int]:
    """`frames` indices at the centres of `frames` equal segments of the video (short videos: see uniform_plan)."""
    return list(uniform_plan(num_frames_in_video, frames, timeline).indices)


def uniform_plan(num_frames_in_video: int, frames: int, timeline: Timeline | None = None) -> FramePlan:
    """T frames at segment centres; a video with fewer than T frames gives all its frames, then the last repeated.

    With a variable-frame-rate `timeline` the segments are of time: the frame shown at the centre of each.
    Why: by index, a phone clip of 15 frames in 0.6 s then 15 in 6 s had half its uniform frames from its
    first 0.6 s. Without a timeline (constant rate) the index rule is that same rule, exactly.
    """
    _check_count(num_frames_in_video)
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    n = num_frames_in_video
    if n < frames:
        # Stretching a short video (repeating frames in the middle) would fake motion timing; padding at the
        # end keeps real frames at their real positions and is what the warning describes.
        return FramePlan(tuple(range(n)) + (n - 1,) * (frames - n), padded=frames - n)
    if timeline is not None:
        centres = ((2 * i + 1) * timeline.duration / (2 * frames) for i in range(frames))
        return FramePlan(tuple(min(n - 1, timeline.index_at(t)) for t in centres))
    # Centre of segment i is (i + 0.5) * n / T; integer arithmetic avoids float rounding at segment edges.
    return FramePlan(tuple((2 * i + 1) * n // (2 * frames) for i in range(frames)))


def fps_count(num_frames_in_video: int, video_fps: float, target_fps: float) -> int:
    """How many frames sampling at `target_fps` takes from the whole video (at least one)."""
    duration = num_frames_in_video / video_fps
    # A small epsilon so that e.g. 250 frames at 25 fps sampled at 1 fps gives 10, not 9, after float error.
    return max(1, math.floor(duration * target_fps + 1e-6))


def fps_indices(num_frames_in_video: int, video_fps: float, target_fps: float, limit: int | None = None,
                timeline: Timeline | None = None, first_row: int = 0) -> list[int]:
    """One frame every 1/target_fps seconds over the whole video (the first `limit` of them), from the first frame.

    Row k is the frame shown at k / target_fps; `first_row` starts at row k of that grid (a clip from a start
    time: the same frames as the whole video's rows from there). Why `limit`: a clip of `--frames` at a
    mistyped rate (1e6 fps) used to build the whole video's index list first and cut it afterwards,
    gigabytes for two frames. Without a limit, a plan longer than `MAX_FPS_PLAN_FRAMES` is refused:
    sampling above the video's rate only repeats its frames.
    """
    _check_count(num_frames_in_video)
    if not (math.isfinite(video_fps) and math.isfinite(target_fps)) or video_fps <= 0 or target_fps <= 0:
        raise ValueError(f"fps must be a finite positive number, got video_fps={video_fps}, target_fps={target_fps}")
    count = fps_count(num_frames_in_video, video_fps, target_fps)
    if timeline is not None:  # its own length: the average rate stretches or shrinks it
        count = max(1, math.floor(timeline.duration * target_fps + 1e-6))
    count = max(1, count - first_row)  # a start after the last row: one frame still, the one shown then
    if limit is not None:
        count = min(count, max(1, limit))
    elif count > MAX_FPS_PLAN_FRAMES:
        shown = f"{count:,}" if count < 10**12 else f"{float(count):.3g}"
        raise ValueError(f"sampling at {target_fps:g} fps gives {shown} frames of a {num_frames_in_video / video_fps:.1f} s "
                         f"video (more than {MAX_FPS_PLAN_FRAMES:,}): lower the fps (the video has {video_fps:g}) "
                         "or sample a clip of fewer frames")
    rows = range(first_row, first_row + count)
    if timeline is not None:
        return [min(num_frames_in_video - 1, timeline.index_at(k / target_fps)) for k in rows]
    step = video_fps / target_fps
    return [min(num_frames_in_video - 1, math.floor(k * step + 1e-6)) for k in rows]


def fps_plan(num_frames_in_video: int, video_fps: float, target_fps: float, min_frames: int = 1,
             limit: int | None = None, timeline: Timeline | None = None, first_row: int = 0) -> FramePlan:
    """`fps_indices` (at most `limit`, from row `first_row`), padded with the last frame up to `min_frames`
    (one full window) when the video is short."""
    indices = fps_indices(num_frames_in_video, video_fps, target_fps, limit, timeline, first_row)
    padded = max(0, min_frames - len(indices))
    return FramePlan(tuple(indices) + (indices[-1],) * padded, padded=padded)


def first_fps_row(start_seconds: float, target_fps: float) -> int:
    """The first row of a `target_fps` plan at or after `start_seconds` (row k is time k / target_fps)."""
    return math.ceil(start_seconds * target_fps - 1e-6) if start_seconds > 0 else 0


def start_frame(num_frames_in_video: int, video_fps: float, start_seconds: float,
                timeline: Timeline | None = None) -> int:
    """Index of the first frame at or after `start_seconds`; ValueError when that is past the last frame."""
    _check_count(num_frames_in_video)
    first = math.ceil(start_seconds * video_fps - 1e-6) if start_seconds > 0 else 0
    if timeline is not None and start_seconds > 0:
        first = timeline.first_at_or_after(start_seconds)
    if start_seconds < 0 or first >= num_frames_in_video:
        raise ValueError(
            f"start {start_seconds:g} s is outside the video (0 to {num_frames_in_video / video_fps:.3f} s)"
        )
    return first


def clip_plan(
    num_frames_in_video: int, video_fps: float, frames: int | None, fps: float | None, start_seconds: float = 0.0,
    timeline: Timeline | None = None,
) -> FramePlan:
    """Frames from `start_seconds` on: every frame at `fps`, at most `frames` of them (one clip, as a model
    trained at that rate saw it; a short rest is padded to `frames`), or without `fps` `frames` uniform
    frames over the rest of the video. With `start_seconds` 0 and one of the two, `plan_frames`'s plan.

    Why the fps rows are the whole video's rows from the start on (`first_fps_row`), not a new grid from
    the first frame after the start: those are the rows `s5 extract` caches and `s5 eval` scores. At 29.97
    fps, 1 fps from 33 s, a grid from frame 990 gave 990, 1019, ... where the cache holds 989, 1018, ...
    """
    first = start_frame(num_frames_in_video, video_fps, start_seconds, timeline)  # refuses a start outside
    if fps is not None:
        return fps_plan(num_frames_in_video, video_fps, fps, min_frames=frames or 1, limit=frames,
                        timeline=timeline, first_row=first_fps_row(start_seconds, fps))
    if frames is None:
        raise ValueError("give frames, fps or both")
    rest_timeline = timeline.after(first) if timeline is not None else None
    plan = uniform_plan(num_frames_in_video - first, frames, rest_timeline)
    return FramePlan(tuple(first + index for index in plan.indices), plan.padded)
