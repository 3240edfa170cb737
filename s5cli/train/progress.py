"""Rich progress for long work, on stderr, shown by rank 0 only (other ranks get a silent stand-in)."""

from __future__ import annotations

import datetime

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)


class TrainingProgress:
    """Step bar with loss, lr, samples/s and ETA."""

    def __init__(self, total_steps: int, start_step: int, enabled: bool = True, main: bool = True):
        self.enabled = enabled
        self.main = main  # the process that speaks for the run (rank 0), bars or not
        if not enabled:
            return
        from s5cli.cli.console import PeriodicLines, stderr

        # Rich draws a live bar only on a terminal; in logs (CI, nohup, pipes) print a plain line every
        # ~5% of the run instead, so long jobs still show that they are alive and how fast they go. The bar
        # is then disabled: Rich would otherwise add its final frame after the plain lines, cut to the
        # log's 80 columns ("0:00:… ET").
        self._plain = not stderr.is_terminal
        # No elapsed-time column: with it the line needed ~90 columns, and an 80-column terminal cut the step
        # count and the ETA ("700/…", "-:--:…"); `close` prints the elapsed time once instead.
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("lr {task.fields[lr]}"),
            TextColumn("{task.fields[speed]} samples/s"), TextColumn("ETA"), TimeRemainingColumn(),
            console=stderr, transient=False, disable=self._plain,
        )
        self._task = self._progress.add_task(
            "train", total=total_steps, completed=start_step, loss="-", lr="-", speed="-"
        )
        self._progress.start()
        self._step = start_step
        self._lines = PeriodicLines(total_steps, start_step)

    def update(self, step: int, epoch: int, loss: float, lr: float, samples_per_s: float) -> None:
        if not self.enabled:
            return
        self._progress.update(
            self._task, completed=step, description=f"epoch {epoch + 1}", loss=f"{loss:.4f}",
            lr=f"{lr:.2e}", speed=f"{samples_per_s:.1f}",
        )
        self._step = step
        if self._plain and self._lines.due(step):
            elapsed, _, eta = self._lines.timing(step)
            self._progress.console.print(
                f"epoch {epoch + 1} step {step}/{self._lines.total} loss {loss:.4f} lr {lr:.2e} "
                f"{samples_per_s:.1f} samples/s elapsed {elapsed:.0f}s ETA {eta:.0f}s"
            )

    def log(self, message: str) -> None:
        if self.enabled:
            self._progress.console.print(message)

    def notice(self, message: str) -> None:
        """An outcome, not progress (why a run ended): printed by the main process also when the bars are
        off (--quiet hides bars, not that), beside the bar when it is on."""
        if self.enabled:
            self._progress.console.print(message)
        elif self.main:
            from s5cli.cli.console import stderr

            stderr.print(message, soft_wrap=True)

    def close(self) -> None:
        """Stop the bar; on a terminal, say how long the steps took (the plain lines already did)."""
        if not self.enabled:
            return
        self._progress.stop()
        if not self._plain and self._step > self._lines.start:
            elapsed, _, _ = self._lines.timing(self._step)
            self._progress.console.print(
                f"{self._step - self._lines.start} step(s) in {datetime.timedelta(seconds=round(elapsed))}"
            )
