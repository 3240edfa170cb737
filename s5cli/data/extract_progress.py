"""Progress of an extraction: a bar over the videos and, for a long video, one over its frames.

Why a module of its own: the Rich layout is presentation, and `extract.py` keeps the extraction loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

FRAMES_BAR_MIN_BATCHES = 4  # a video gets its own frames bar from this many backbone batches up


def video_frames_bar(progress: Any, frames: int, video_id: str, batch_size: int) -> Callable[[int], None] | None:
    """For a long video, the second row of `videos_progress` over its frames, shown and reset; the callback that
    advances it after each backbone batch. A 2-hour film is one step of the videos bar for minutes."""
    if progress is None:
        return None
    row = progress.task_ids[1]
    if frames < FRAMES_BAR_MIN_BATCHES * batch_size:
        progress.update(row, visible=False)
        return None
    progress.reset(row, total=frames, description=f"  {video_id}", visible=True)
    return lambda encoded: progress.advance(row, encoded)


def videos_progress(total: int, description: str) -> Any:
    """The videos bar (rate and ETA) and a hidden second row for a long video's frames; off without a terminal."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    from s5cli.cli.console import stderr

    class ItemsPerSecond(ProgressColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            unit = task.fields.get("unit", "videos")
            return Text(f"? {unit}/s" if speed is None else f"{speed:.2f} {unit}/s", style="cyan")

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        ItemsPerSecond(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=stderr,
        transient=False,
        # Off in logs, where `extract_records` prints plain lines instead: Rich would only add the last frame.
        disable=not stderr.is_terminal,
    )
    progress.add_task(description, total=total, unit="videos")
    progress.add_task("", total=None, unit="frames", visible=False)  # a long video's frames (video_frames_bar)
    return progress
