"""The warnings of a `--resume` whose run has changed under it (its length, its train split, its process
count, how it validates): each says why the run no longer repeats an uninterrupted one."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from s5cli.errors import UserError
from s5cli.train import checkpoint as ckpt
from s5cli.train.checkpoint_metadata import read_metadata
from s5cli.train.distributed import DistContext
from s5cli.train.schedule import Schedule

if TYPE_CHECKING:
    from s5cli.train.loop import TrainSetup


def say_what_a_new_length_changes(state: ckpt.TrainerState, total_steps: int, schedule: Schedule,
                                   setup: TrainSetup, ctx: DistContext) -> None:
    """One warning when a resume changes the run's length under a cosine schedule: the rate follows the new
    curve from this step on, so after a finished run it rises again (a warm restart). The length is epochs
    x steps an epoch, and either may have changed (train.epochs; the train split or the batch), so the
    warning names both rather than blaming train.epochs. S5's exploration keeps the run's first length
    (`TrainerState.progress_steps`)."""
    planned = state.planned_steps
    if not ctx.is_main or not planned or planned == total_steps or schedule.kind != "cosine":
        return
    from s5cli.cli.console import print_warning

    epochs = setup.recipe.train.epochs
    print_warning(f"--resume: the cosine learning-rate schedule now ends at step {total_steps}, not {planned} "
                  f"(train.epochs={epochs} x {total_steps // max(1, epochs)} steps an epoch); from step "
                  f"{state.step} the rate is {schedule.lr():.3g} (a warm restart if the old schedule had ended)")


def say_the_train_split_changed(state: ckpt.TrainerState, setup: TrainSetup, ctx: DistContext) -> None:
    """One warning when a resume finds another number of training clips than the interrupted run had: its
    epochs are shuffled and cut from the new split, so the run no longer repeats the uninterrupted one."""
    saved, now = state.train_clips, len(setup.train_set)
    if not ctx.is_main or not saved or saved == now:
        return
    from s5cli.cli.console import print_warning

    print_warning(f"--resume: the train split has {now} clips, the interrupted run had {saved} (videos added or "
                  f"removed under data.root?): training goes on over the {now}, from epoch {state.epoch + 1}, "
                  "and no longer repeats an uninterrupted run")


def say_the_process_count_changed(directory: Path, saved: int, processes: int) -> None:
    """One warning when a resume runs on another number of processes than wrote the checkpoint: same global
    batch and schedule, but the noise each process draws (dropout, Gumbel, LSMCL masks) no longer continues
    as one uninterrupted run's would. Said rather than let a user expect byte-identical results."""
    from s5cli.cli.console import print_warning

    if processes > saved:
        ranks = f"rank {saved}" if processes == saved + 1 else f"ranks {saved}-{processes - 1}"
        fate = f"{ranks} had no saved generator state and draw from a new seed (train.seed, the step and the rank)"
    else:
        fate = f"the generator states of its ranks {processes}-{saved - 1} are not used"
    print_warning(f"--resume: {directory} was written by {saved} process(es), this run has {processes}: training "
                  f"goes on with the same global batch, but its random draws differ from an uninterrupted run's "
                  f"({fate})")


# eval.* keys that change what a validation scores (eval.batch_size and eval.split do not): a resume may change
# them (`resume_checks.RESUMABLE_KEYS`), but the best metric and the patience count then compare two protocols.
VALIDATION_KEYS = ("aggregate", "window_stride")


def say_the_validation_changed(directory: Path, state: ckpt.TrainerState, setup: TrainSetup,
                                ctx: DistContext) -> None:
    """One warning when a resume changes how validation scores (`VALIDATION_KEYS`) after the run validated:
    the best metric so far and train.early_stop_patience then compare numbers of two protocols silently.
    Compared with the recipe stored in the checkpoint resumed (the one its validations used)."""
    if not ctx.is_main or (state.best_step is None and not state.evals_since_best):
        return
    from s5cli.train.loading import stored_recipe

    try:
        stored = stored_recipe(read_metadata(directory), directory).get("eval", {})
    except UserError:  # unreadable or older metadata: nothing to compare
        return
    if not isinstance(stored, dict):
        return
    from s5cli.cli.console import print_warning
    from s5cli.recipe_validation import show_value

    now = setup.recipe_dict.get("eval", {})
    changed = [f"eval.{key} ({show_value(stored[key])} -> {show_value(now[key])})" for key in VALIDATION_KEYS
               if key in stored and key in now and stored[key] != now[key]]
    if changed:
        verb = "changes" if len(changed) == 1 else "change"
        print_warning(f"--resume: {', '.join(changed)} {verb} how validation scores: the best metric so far and "
                      "train.early_stop_patience compare it with validations scored the old way")
