"""visualize-mask's plain progress lines (a log or pipe): each stage's time, on a scripted clock."""

from __future__ import annotations

from s5cli.visualize.progress import StageLines


class Clock:
    """A clock that reads `now`, which the test moves: no real durations."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_stage_reported_once_at_its_end_is_timed_from_the_previous_stage_end() -> None:
    clock, printed = Clock(), []
    lines = StageLines(printed.append, clock)
    clock.now = 102.0
    lines.report("decode", 3, 3)  # one chunk: the only report comes when decoding is over
    clock.now = 102.5
    lines.report("render", 1, 3)
    clock.now = 104.0
    lines.report("render", 3, 3)
    lines.report("render", 3, 3)  # a repeated last step prints nothing more
    clock.now = 104.5
    lines.report("write", 0, 1)
    clock.now = 110.0
    lines.report("write", 1, 1)
    assert printed == ["decode    3/3 2.0s", "render    3/3 2.0s", "write     1/1 6.0s"]


def test_a_stage_that_overlaps_the_previous_one_is_timed_from_its_first_report() -> None:
    """The backbone runs on decoded chunks while later ones are decoded: its time starts with its work."""
    clock, printed = Clock(), []
    lines = StageLines(printed.append, clock)
    clock.now = 101.0
    lines.report("decode", 32, 64)
    clock.now = 102.0
    lines.report("backbone", 32, 64)
    clock.now = 103.0
    lines.report("decode", 64, 64)
    clock.now = 105.0
    lines.report("backbone", 64, 64)
    assert printed == ["decode    64/64 3.0s", "backbone  64/64 3.0s"]
