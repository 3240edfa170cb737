"""./.s5/last_run: the run folder of the last `s5 finetune` here, what eval and visualize-mask use without flags."""

from __future__ import annotations

from pathlib import Path

from s5cli.train.distributed import DistContext


def remember_last_run(out_dir: Path, ctx: DistContext) -> None:
    """Note the run folder in ./.s5/last_run so visualize-mask / eval can find it without flags."""
    if not ctx.is_main:
        return
    from s5cli.io import atomic_write_text

    marker = Path(".s5") / "last_run"
    marker.parent.mkdir(exist_ok=True)
    atomic_write_text(marker, str(out_dir.resolve()) + "\n")


def last_run() -> Path | None:
    """The run folder of the last `s5 finetune` in this working directory, if it still exists."""
    path = _last_run_marker()
    return path if path is not None and (path / "latest").is_file() else None


def stale_last_run() -> str | None:
    """The error for a ./.s5/last_run that names a run no longer there (deleted, moved, or without a
    checkpoint), with the runs beside it to pass instead; None when it names a run or there is none.

    Why: `s5 eval` and `s5 visualize-mask` said "no finetune run in this folder" after the last run was
    deleted, though other runs sat beside it."""
    path = _last_run_marker()
    if path is None or (path / "latest").is_file():
        return None
    what = "no longer exists" if not path.exists() else "holds no checkpoint"
    others = _runs_in(path.parent)
    listed = f" (runs there: {', '.join(others[:5])}{', ...' if len(others) > 5 else ''})" if others else ""
    return f"the last finetune run here ({path}) {what}; pass -c/--checkpoint <run folder>{listed}"


def _last_run_marker() -> Path | None:
    """The folder ./.s5/last_run names, whether or not it is still a run; None without one."""
    marker = Path(".s5") / "last_run"
    if not marker.is_file():
        return None
    try:
        text = marker.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:  # not written by s5cli: as if there were none
        return None
    return Path(text) if text not in ("", ".") else None


def _runs_in(folder: Path) -> list[str]:
    """The run folders (those with a `latest` checkpoint) directly in `folder`, sorted, as a -c argument:
    relative to the working folder when inside it."""
    try:
        entries = sorted(entry for entry in folder.resolve().iterdir() if (entry / "latest").is_file())
    except OSError:  # gone too, or unreadable: nothing to list
        return []
    here = Path.cwd().resolve()
    return [str(entry.relative_to(here)) if entry.is_relative_to(here) else str(entry) for entry in entries]
