"""Pruning a run's step checkpoints to `train.keep_last`, and saying (once) which look-alike folders it leaves."""

from __future__ import annotations

import shutil
from pathlib import Path

from s5cli.train.checkpoint import step_number
from s5cli.train.checkpoint_paths import step_folders


def prune_checkpoints(run_dir: Path, keep_last: int, just_saved: Path | None = None) -> None:
    """Delete all but the newest `keep_last` step checkpoints up to `just_saved` (best/ is kept separately).

    Why "up to": a run resumed past an unreadable newest checkpoint trains again towards that step. Counting
    it as the newest deleted the checkpoint just written (the one `latest` names) and kept the damaged
    one, so the run could not be resumed at all. Newer ones are left to be overwritten when reached.
    """
    _warn_of_strays(Path(run_dir))
    steps = step_folders(run_dir)
    newest = step_number(Path(just_saved).name) if just_saved is not None else None
    if newest is not None:
        steps = [p for p in steps if (step_number(p.name) or 0) <= newest]
    for old in steps[: max(0, len(steps) - keep_last)]:
        shutil.rmtree(old, ignore_errors=True)


_REPORTED_STRAYS: set[Path] = set()


def _warn_of_strays(run_dir: Path) -> None:
    """Warn once per folder about folders in RUN/checkpoints/ named like a checkpoint but not one (a backup
    `step-0000002 copy`): pruning leaves them, so the user learns why they stay and that they use disk."""
    root = run_dir / "checkpoints"
    strays = sorted(p for p in root.glob("step-*") if step_number(p.name) is None and p not in _REPORTED_STRAYS)
    if not strays:
        return
    _REPORTED_STRAYS.update(strays)
    from s5cli.cli.console import print_warning

    names = ", ".join(repr(p.name) for p in strays[:3]) + (f" and {len(strays) - 3} more" if len(strays) > 3 else "")
    print_warning(f"{root}: {names} not named step-NUMBER, so not checkpoints of this run: never pruned or "
                  "resumed from (move them out of the run folder to silence this)")
