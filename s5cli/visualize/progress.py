"""Progress of `s5 visualize-mask`: the report callback its stages call, and plain progress lines in a log or
pipe (one line per stage as it ends, with its time)."""

from __future__ import annotations

import time
from collections.abc import Callable

# report(stage, done, total): lets the CLI drive a progress bar without the modules that report knowing about Rich.
ProgressReport = Callable[[str, int, int], None]


class StageLines:
    """Prints "decode    8/8 1.2s" once per stage, when its last step is reported (`report`'s signature is
    `ProgressReport`'s).

    A stage's time runs from when the previous stage ended (the first stage's: from when this was made),
    or from its first report where that came earlier (the backbone starts on the first decoded chunk,
    before decoding ends). Why not from the first report alone: stages report as work completes, so a
    decode done in one chunk reported once, at its end, and printed 0.0s.
    """

    def __init__(self, print_line: Callable[[str], None], clock: Callable[[], float] = time.monotonic) -> None:
        self._print = print_line
        self._clock = clock
        self._previous_end = clock()
        self._first_report: dict[str, float] = {}
        self._ended: set[str] = set()

    def report(self, stage: str, done: int, total: int) -> None:
        """Note progress of `stage`; print its line the first time `done` reaches `total`."""
        now = self._clock()
        first = self._first_report.setdefault(stage, now)
        if done < total or stage in self._ended:
            return
        self._ended.add(stage)
        started = min(first, self._previous_end)
        self._previous_end = now
        self._print(f"{stage:<9} {done}/{total} {now - started:.1f}s")
