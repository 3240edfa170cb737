"""Rich progress for long work, on stderr, shown by rank 0 only (other ranks get a silent stand-in)."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class TrainingProgress:
    """Step bar with loss, lr, samples/s and ETA."""

    def __init__(self, total_steps: int, start_step: int, enabled: bool = True):
        self.enabled = enabled
        if not enabled:
            return
        from s5cli.cli.console import stderr

        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("lr {task.fields[lr]}"),
            TextColumn("{task.fields[speed]} samples/s"), TimeElapsedColumn(), TextColumn("ETA"),
            TimeRemainingColumn(), console=stderr, transient=False,
        )
        self._task = self._progress.add_task(
            "train", total=total_steps, completed=start_step, loss="-", lr="-", speed="-"
        )
        self._progress.start()

    def update(self, step: int, epoch: int, loss: float, lr: float, samples_per_s: float) -> None:
        if self.enabled:
            self._progress.update(
                self._task, completed=step, description=f"epoch {epoch + 1}", loss=f"{loss:.4f}",
                lr=f"{lr:.2e}", speed=f"{samples_per_s:.1f}",
            )

    def log(self, message: str) -> None:
        if self.enabled:
            self._progress.console.print(message)

    def close(self) -> None:
        if self.enabled:
            self._progress.stop()


class SimpleProgress:
    """A plain counted bar (evaluation, extraction)."""

    def __init__(self, description: str, total: int | None, enabled: bool = True):
        self.enabled = enabled
        if not enabled:
            return
        from s5cli.cli.console import stderr

        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TimeRemainingColumn(), console=stderr, transient=True,
        )
        self._task = self._progress.add_task(description, total=total)
        self._progress.start()

    def advance(self, amount: int = 1) -> None:
        if self.enabled:
            self._progress.advance(self._task, amount)

    def close(self) -> None:
        if self.enabled:
            self._progress.stop()
