"""Shared Rich consoles, the one-line error style used by every command, and a plain progress bar."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, ConsoleDimensions
from rich.markup import escape

LOG_WIDTH = 200  # columns of a table written to a file or pipe (rows longer than this still fold)


class LogFriendlyConsole(Console):
    """A Console that, writing to a file or pipe, prints each message as one line.

    Rich wraps text at the console width, and a non-terminal has a fixed 80 columns: a run's header or
    progress line in a CI log or `nohup` file came out split over two lines, which breaks grep and tail.
    On a terminal text still wraps at words; renderables (tables) keep their width either way.
    """

    def print(self, *objects: Any, soft_wrap: bool | None = None, **kwargs: Any) -> None:
        if soft_wrap is None:
            soft_wrap = self.soft_wrap or not self.is_terminal
        super().print(*objects, soft_wrap=soft_wrap, **kwargs)

    @property
    def size(self) -> ConsoleDimensions:
        """On a file or pipe without COLUMNS, at least LOG_WIDTH columns: a table then keeps each row on one
        line (`s5 cache ls > f`, then grep a key) instead of folding paths mid-word at 80 columns."""
        dims = super().size
        if self._width is None and not self.is_terminal and "COLUMNS" not in self._environ:
            return ConsoleDimensions(max(dims.width, LOG_WIDTH), dims.height)
        return dims

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)


# Results go to stdout (pipeable, e.g. `--json`); progress and errors go to stderr.
stdout = LogFriendlyConsole(highlight=False)
stderr = LogFriendlyConsole(stderr=True, highlight=False)


class PeriodicLines:
    """When a plain progress line is due in a log, and the timing to print in it.

    Rich draws no live bar on a non-terminal (CI, nohup, pipes): a long job's log would stay silent until
    it ends. Training and extraction therefore print one plain line every ~5 % of their work instead
    (`parts` lines in all, and one at the end).
    """

    def __init__(self, total: int, start: int = 0, parts: int = 20):
        self.total = total
        self.start = start
        self._last = start
        self._every = max(1, total // parts)
        self._started = time.monotonic()

    def due(self, done: int) -> bool:
        """True once per ~1/parts of the work, and at the end; the caller then prints its line."""
        if done - self._last >= self._every or done == self.total:
            self._last = done
            return True
        return False

    def timing(self, done: int) -> tuple[float, float, float]:
        """(seconds elapsed, items per second, seconds left) over the items done since this began."""
        elapsed = time.monotonic() - self._started
        rate = (done - self.start) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        return elapsed, rate, eta


def print_error(message: str) -> None:
    """Print a user-facing error as one red line on stderr."""
    stderr.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)


def print_stopped(message: str) -> None:
    """One yellow line for a run stopped on request (Ctrl-C, SIGTERM) that kept its work: not an error."""
    stderr.print(f"[yellow]stopped:[/] {escape(message)}", soft_wrap=True)


def print_warning(message: str) -> None:
    """Print a warning as one yellow line on stderr."""
    stderr.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)


LOG_LINE_EVERY_S = 30.0  # SimpleProgress in a log: at most one plain line per this many seconds


class SimpleProgress:
    """A plain counted bar on stderr that disappears when done (evaluation windows, a video's backbone
    batches); `enabled=False` gives a silent stand-in, so callers need no branches.

    In a log (no terminal) there is no bar; a job that runs longer than `LOG_LINE_EVERY_S` prints one plain
    line each time that much has passed ("evaluating 40/800 elapsed 31s ETA 589s"), a short one nothing.
    """

    def __init__(self, description: str, total: int | None, enabled: bool = True):
        self.enabled = enabled
        if not enabled:
            return
        from rich import progress as bars

        self._description = description
        self._plain = not stderr.is_terminal
        self._progress = bars.Progress(
            bars.TextColumn("[bold]{task.description}"), bars.BarColumn(), bars.MofNCompleteColumn(),
            bars.TimeElapsedColumn(), bars.TimeRemainingColumn(), console=stderr, transient=True,
            disable=self._plain,
        )
        self._task = self._progress.add_task(description, total=total)
        self._lines = PeriodicLines(total or 0)
        self._done = 0
        self._last_line = time.monotonic()
        self._progress.start()

    def advance(self, amount: int = 1) -> None:
        if not self.enabled:
            return
        self._progress.advance(self._task, amount)
        self._done += amount
        if self._plain and time.monotonic() - self._last_line >= LOG_LINE_EVERY_S:
            self._last_line = time.monotonic()
            elapsed, _, eta = self._lines.timing(self._done)
            total = f"/{self._lines.total}" if self._lines.total else ""
            left = f" ETA {eta:.0f}s" if self._lines.total else ""
            self._progress.console.print(f"{self._description} {self._done}{total} elapsed {elapsed:.0f}s{left}")

    def close(self) -> None:
        if self.enabled:
            self._progress.stop()
