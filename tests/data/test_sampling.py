"""Frame sampling rules: uniform segment centres, fps sampling, W-second windows, padding of short videos."""

from __future__ import annotations

import math

import pytest

from s5cli.data.sampling import (
    FramePlan,
    clip_plan,
    fps_indices,
    fps_plan,
    start_frame,
    uniform_indices,
    uniform_plan,
)


def test_uniform_picks_segment_centres():
    # 132 frames (bigbuckbunny) in 8 segments of 16.5 frames: centres at 8.25, 24.75, 41.25, ...
    assert uniform_indices(132, 8) == [8, 24, 41, 57, 74, 90, 107, 123]
    assert uniform_indices(10, 5) == [1, 3, 5, 7, 9]
    assert uniform_indices(100, 1) == [50]


def test_uniform_with_as_many_frames_as_asked_takes_every_frame():
    assert uniform_indices(7, 7) == list(range(7))


def test_short_video_pads_with_last_frame():
    plan = uniform_plan(3, 6)
    assert plan.indices == (0, 1, 2, 2, 2, 2)
    assert plan.padded == 3
    assert uniform_plan(12, 6).padded == 0


def test_uniform_indices_increase_and_stay_in_range():
    for n in (1, 2, 17, 250, 1001):
        for t in (1, 3, 16, 60):
            indices = uniform_indices(n, t)
            assert len(indices) == t
            assert all(0 <= i < n for i in indices)
            assert indices == sorted(indices)
            if n >= t:
                assert len(set(indices)) == t


def test_fps_sampling_steps_by_source_over_target_rate():
    # bikes.mp4: 250 frames at 25 fps = 10 s; at 1 fps -> 10 frames, every 25th.
    assert fps_indices(250, 25.0, 1.0) == list(range(0, 250, 25))
    at_two = fps_indices(250, 25.0, 2.0)
    assert len(at_two) == 20
    assert at_two[:5] == [0, 12, 25, 37, 50]
    # Target rate above the source rate repeats frames rather than inventing them.
    assert fps_indices(4, 2.0, 4.0) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_an_fps_plan_stops_at_its_limit_and_refuses_runaway_rates() -> None:
    assert fps_indices(250, 25.0, 1e9, limit=3) == [0, 0, 0]
    assert fps_plan(50, 25.0, 1.0, min_frames=5, limit=5) == fps_plan(50, 25.0, 1.0, min_frames=5)
    assert clip_plan(250, 25.0, 2, 1e300) == FramePlan((0, 0))
    with pytest.raises(ValueError, match=r"more than 1,000,000\): lower the fps \(the video has 25\)"):
        fps_indices(250, 25.0, 200_000.0)  # 2,000,000 frames of a 10 s video
    for bad in (float("inf"), float("nan"), 0.0):
        with pytest.raises(ValueError, match="finite positive"):
            fps_indices(250, 25.0, bad)


def test_fps_plan_pads_to_a_full_window():
    plan = fps_plan(50, 25.0, 1.0, min_frames=5)  # a 2 s video, 5 frames needed
    assert plan.indices == (0, 25, 25, 25, 25)
    assert plan.padded == 3


@pytest.mark.parametrize("bad", [(0, 4), (5, 0)])
def test_uniform_rejects_empty_requests(bad):
    with pytest.raises(ValueError):
        uniform_indices(*bad)


def test_clip_plan_from_the_start_is_the_whole_video_plan() -> None:
    assert clip_plan(250, 25.0, None, 1.0) == fps_plan(250, 25.0, 1.0)
    assert clip_plan(250, 25.0, 16, None) == uniform_plan(250, 16)


def test_clip_plan_takes_a_clip_at_the_rate_from_the_start_time() -> None:
    # 100 s at 25 fps; a 60-frame clip at 1 fps from 30 s: frames 750, 775, ..., 750 + 59 * 25
    plan = clip_plan(2500, 25.0, 60, 1.0, start_seconds=30.0)
    assert plan == FramePlan(tuple(750 + 25 * k for k in range(60)))
    # near the end the clip is padded with its last frame, and says so
    assert clip_plan(2500, 25.0, 4, 1.0, start_seconds=98.0) == FramePlan((2450, 2475, 2475, 2475), padded=2)
    # uniform frames cover what follows the start
    assert clip_plan(100, 10.0, 2, None, start_seconds=5.0) == FramePlan((62, 87))  # centres of 50-74, 75-99


@pytest.mark.parametrize(("seconds", "first"), [(0.0, 0), (1.0, 30), (0.9676, 29), (3.97, 119)])
def test_start_frame_is_the_first_frame_at_or_after_the_time(seconds: float, first: int) -> None:
    assert start_frame(120, 30000 / 1001, seconds) == first


@pytest.mark.parametrize("seconds", [-1.0, 3.99, 10.0])
def test_a_start_outside_the_video_is_refused(seconds: float) -> None:
    with pytest.raises(ValueError, match="outside the video"):
        start_frame(120, 30000 / 1001, seconds)


# A phone clip: 15 frames 40 ms apart, then 15 frames 400 ms apart (the scene went dark or still).
PHONE_STARTS = [0.04 * i for i in range(15)] + [0.6 + 0.4 * i for i in range(15)]


def test_a_variable_rate_timeline_samples_by_time_and_a_constant_one_keeps_the_index_rule() -> None:
    from s5cli.data.sampling import Timeline, timeline_if_variable

    assert timeline_if_variable([i / 25 for i in range(50)], 2.0, 25.0) is None
    timeline = timeline_if_variable(PHONE_STARTS, 6.24, 30 / 6.24)
    assert isinstance(timeline, Timeline) and timeline.duration == pytest.approx(6.24)
    # By the average rate (4.8 fps) these were frames 0, 4, 9, 14, 19, 24 at "0..5 s": really 0 to 3.0 s.
    assert fps_indices(30, 30 / 6.24, 1.0) == [0, 4, 9, 14, 19, 24]
    assert fps_indices(30, 30 / 6.24, 1.0, timeline=timeline) == [0, 16, 18, 21, 23, 26]  # shown at 0, 1, ..., 5 s
    assert start_frame(30, 30 / 6.24, 2.0, timeline) == 19  # the first frame starting at or after 2 s (2.2 s)
    assert clip_plan(30, 30 / 6.24, 3, 1.0, 1.0, timeline=timeline).indices == (16, 18, 21)  # 1, 2, 3 s


NTSC = 30000 / 1001


@pytest.mark.parametrize("start", [33.0, 32.5, 0.7, 99.0])
def test_an_fps_clip_from_a_start_is_the_whole_video_plan_from_there(start: float) -> None:
    """A clip from --start at --fps is the rows extraction caches from that time on (row k: the frame shown
    at k / fps). A new grid from the first frame after the start gave frames 990, 1019, ... of a 29.97 fps
    video from 33 s where the cache holds 989, 1018, ..., so visualize-mask showed other frames than it scored."""
    whole = fps_plan(3000, NTSC, 1.0).indices  # 100 s
    first = math.ceil(start)
    clip = clip_plan(3000, NTSC, 5, 1.0, start_seconds=start)
    assert clip.indices[: clip.real_frames] == whole[first : first + 5]
    assert clip_plan(3000, NTSC, None, 1.0, start_seconds=start).indices == whole[first:]
    assert clip_plan(3000, NTSC, 3, 1.0, start_seconds=33.0).indices == (989, 1018, 1048)


def test_an_fps_clip_starting_after_the_last_row_is_the_last_frame_padded() -> None:
    # 250 frames at 25 fps: rows 0..9 at 1 fps; from 9.5 s there is no row left, one frame still shows.
    assert clip_plan(250, 25.0, 3, 1.0, start_seconds=9.5) == FramePlan((249, 249, 249), padded=2)


def test_uniform_frames_of_a_variable_rate_video_are_spread_over_its_time() -> None:
    """By index, half of 4 uniform frames came from the first 0.6 s of a 6.24 s phone clip (15 of its 30
    frames are there); by time each is the frame shown at the centre of a quarter of the clip."""
    from s5cli.data.sampling import timeline_if_variable

    timeline = timeline_if_variable(PHONE_STARTS, 6.24, 30 / 6.24)
    assert uniform_plan(30, 4).indices == (3, 11, 18, 26)
    assert uniform_plan(30, 4, timeline).indices == (15, 19, 23, 27)  # shown at 0.78, 2.34, 3.9, 5.46 s
    assert uniform_indices(30, 4, timeline) == [15, 19, 23, 27]
    assert uniform_plan(10, 12, timeline) == uniform_plan(10, 12)  # a short video: padded the same way
    assert clip_plan(30, 30 / 6.24, 4, None, timeline=timeline) == uniform_plan(30, 4, timeline)
    # From 1 s (frame 16) on: the rest's own time, 5.24 s, in two halves (centres at 2.31 and 4.93 s).
    assert clip_plan(30, 30 / 6.24, 2, None, 1.0, timeline=timeline).indices == (19, 25)


@pytest.mark.parametrize(("n", "fps"), [(132, 25.0), (250, 25.0), (3000, NTSC), (97, 24.0), (16, 8.0)])
def test_uniform_frames_by_time_on_an_even_timeline_are_the_index_rule(n: int, fps: float) -> None:
    """The time rule is the index rule on evenly spaced frames, so a constant-rate video keeps its frames."""
    from s5cli.data.sampling import Timeline

    even = Timeline(tuple(i / fps for i in range(n)), n / fps)
    for frames in (1, 7, 8, 16, n):
        assert uniform_plan(n, frames, even) == uniform_plan(n, frames)
