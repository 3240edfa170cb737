"""Frame sampling rules: uniform segment centres, fps sampling, W-second windows, padding of short videos."""

from __future__ import annotations

import pytest

from s5cli.data.sampling import fps_indices, fps_plan, uniform_indices, uniform_plan


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


def test_fps_plan_pads_to_a_full_window():
    plan = fps_plan(50, 25.0, 1.0, min_frames=5)  # a 2 s video, 5 frames needed
    assert plan.indices == (0, 25, 25, 25, 25)
    assert plan.padded == 3


@pytest.mark.parametrize("bad", [(0, 4), (5, 0)])
def test_uniform_rejects_empty_requests(bad):
    with pytest.raises(ValueError):
        uniform_indices(*bad)
