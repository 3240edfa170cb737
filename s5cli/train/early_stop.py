"""When a validation counts as better, and when `train.early_stop_patience` ends a run (and what it says then)."""

from __future__ import annotations

import math

from s5cli.train import checkpoint as ckpt
from s5cli.train.metrics import headline


def is_improvement(value: float, best: float | None, higher_is_better: bool) -> bool:
    """Whether a validation's headline `value` beats the `best` so far (a tie keeps the earlier checkpoint).

    A non-finite value (NaN outputs: a float16 overflow, a diverged model) is never better. Why: a first
    NaN became the best, every later comparison with it was false, so best/ was never written again and
    early-stop patience ran out on a model that was improving. A non-finite best (stored by a run from
    before this rule) is beaten by any finite value.
    """
    if not math.isfinite(value):
        return False
    if best is None or not math.isfinite(best):
        return True
    return value > best if higher_is_better else value < best


def early_stop_notice(state: ckpt.TrainerState, patience: int, metrics: dict | None) -> str:
    """What the run says when patience stops it: after a validation its metric, else the count of them."""
    if metrics is not None and state.best_metric is None:  # every validation was non-finite
        name = headline(metrics)[0]
        return (f"early stop after epoch {state.epoch}: val {name} not finite for {patience} "
                f"validation{'s' if patience != 1 else ''}; no best checkpoint was written")
    if metrics is not None:
        name = headline(metrics)[0]
        return (f"early stop after epoch {state.epoch}: val {name} not better than {state.best_metric:.4f} "
                f"(step {state.best_step}) for {patience} validation{'s' if patience != 1 else ''}")
    since = state.evals_since_best
    best = "no best checkpoint" if state.best_step is None else f"best at step {state.best_step}"
    return (f"early stop after epoch {state.epoch}: {since} validation{'s' if since != 1 else ''} without a better "
            f"one (train.early_stop_patience={patience}; {best})")


def patience_used_up(state: ckpt.TrainerState, patience: int | None) -> bool:
    """Whether `train.early_stop_patience` ends the run before the epoch `state` is at: only at an epoch
    boundary.

    Why not mid-epoch: a run resumed mid-epoch (or stopped while validating) with a lowered patience
    dropped the rest of its epoch and said it had nothing left of its epochs; it now finishes the epoch,
    validates and stops there, with the early-stop record.
    """
    return bool(patience) and state.evals_since_best >= patience and not state.batch_in_epoch
