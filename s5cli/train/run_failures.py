"""The one-line failures a training run stops with: a diverged loss or gradient, a token file lost mid-run."""

from __future__ import annotations

from pathlib import Path

from s5cli.data.cache import TokensLost
from s5cli.errors import RunFailure


def divergence_failure(what: str, at_step: int, epoch: int, last_good: Path | None, advice: str) -> RunFailure:
    """One line for a run that diverged before the optimiser step `at_step`: what, where, and which
    checkpoint still holds a finite model."""
    where = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was written yet"
    return RunFailure(f"{what} at step {at_step} (epoch {epoch + 1}); stopped, {where}. {advice}")


def tokens_lost_failure(lost: TokensLost, when: str, kept: Path | None, last_good: Path | None) -> RunFailure:
    """One line: which token file, when, which checkpoint to resume from and what resuming does."""
    if kept is not None:
        where = f"checkpoint saved to {kept}"
    elif last_good is not None:
        where = f"the last checkpoint is {last_good}"
    else:
        return RunFailure(f"{lost} {when}; no checkpoint was written yet. Run the same command again: "
                          "it extracts missing tokens first")
    return RunFailure(f"{lost} {when}; {where}. Continue with the same command and --resume: "
                      "it extracts missing tokens first")
