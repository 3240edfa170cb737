"""The one trainer behind `s5 pretrain` (LSMCL) and `s5 finetune` (supervised): they differ by objective only.

Resumability is exact: the epoch's sample order comes from (seed, epoch) through DistributedSampler, the
RNG states are checkpointed (each torchrun rank's own: ranks draw different noise, `seeding.rank_seed`),
and a resumed run skips the batches already seen, so `--resume` after a kill -9 reaches the same final
numbers as an uninterrupted run on the same machine.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from s5cli.data.cache import TokensLost
from s5cli.data.datasets.token_dataset import SampleBatch
from s5cli.errors import Interrupted
from s5cli.seeding import rank_seed
from s5cli.stop_signals import default_action_in_child, stop_outcome
from s5cli.train import checkpoint as ckpt
from s5cli.train import step
from s5cli.train.batching import (
    check_batch_settings,
    clip_batches,
    epoch_batches,
    micro_batches,
    steps_per_epoch,
)
from s5cli.train.checkpoint_metadata import task_metadata
from s5cli.train.checkpoint_paths import set_latest
from s5cli.train.checkpoint_pruning import prune_checkpoints
from s5cli.train.checkpoint_weights import load_into
from s5cli.train.distributed import DistContext
from s5cli.train.early_stop import early_stop_notice, is_improvement, patience_used_up
from s5cli.train.evaluation import EvaluationStopped, evaluate, needs_grad_scaler
from s5cli.train.metrics import headline
from s5cli.train.metrics_log import MetricsLog
from s5cli.train.progress import TrainingProgress
from s5cli.train.resume_point import apply_resume_point, find_resume_point
from s5cli.train.resume_warnings import (
    say_the_process_count_changed,
    say_the_train_split_changed,
    say_the_validation_changed,
    say_what_a_new_length_changes,
)
from s5cli.train.rng_states import saved_processes, torch_rng_state
from s5cli.train.run_failures import divergence_failure, tokens_lost_failure
from s5cli.train.schedule import Schedule, build_optimizer
from s5cli.train.step import clip_gradients


@dataclass
class TrainSetup:
    """Everything the loop needs, built by the command from one Recipe."""

    module: nn.Module  # the trained module: the video model, or LSMCL wrapping it
    model_name: str
    num_outputs: int
    objective: str  # "supervised" | "lsmcl"
    task: Any  # TaskInfo (kind, num_outputs)
    train_set: Any
    val_set: Any | None
    recipe: Any
    recipe_dict: dict
    out_dir: Path
    ctx: DistContext
    seed: int
    resume: bool = False
    show_progress: bool = True
    extra_metadata: dict[str, str] = field(default_factory=dict)
    steps_run: int = 0  # set by `train`: optimizer steps this call took (0: a resumed run had nothing left)
    validations_run: int = 0  # set by `train`: validations this call finished (a resume may only re-run one)
    stopped_early: bool = False  # set by `train`: train.early_stop_patience ended the run in this call


def _carves_val(recipe: Any) -> bool:
    """Whether this run's val split is held out of train (Breakfast, COIN with data.val_fraction > 0)."""
    return recipe.data.dataset in ("breakfast", "coin") and float(recipe.data.val_fraction or 0.0) > 0


def train(setup: TrainSetup) -> dict:
    """Train, checkpointing every epoch and evaluating each `eval_every` epochs; return the final validation
    metrics."""
    recipe, ctx = setup.recipe, setup.ctx
    tcfg, ocfg = recipe.train, recipe.optim
    out_dir = setup.out_dir
    check_batch_settings(setup)
    module = setup.module.to(ctx.device)
    optimizer = build_optimizer(module, ocfg)
    epoch_steps = steps_per_epoch(setup, ctx)
    total_steps = epoch_steps * tcfg.epochs
    schedule = Schedule(optimizer, ocfg, total_steps, maximize=setup.task.kind == "classification")
    state = ckpt.TrainerState()
    if setup.resume:
        if ctx.is_main:  # one rank renames: two renaming the same folder at once, one fails
            ckpt.recover_interrupted_swaps(out_dir)
        ctx.barrier()
    point = find_resume_point(out_dir, report=ctx.is_main) if setup.resume else None
    resume_from = point.directory if point is not None else None
    if setup.resume and point is None and ctx.is_main:
        from s5cli.cli.console import print_warning

        start = f"from train.init={recipe.train.init}" if recipe.train.init else "from scratch"
        print_warning(f"--resume: no checkpoint in {out_dir} yet; starting a new run {start}")
    if point is not None:
        saved = saved_processes(point.tensors)
        if saved != ctx.world_size and ctx.is_main:
            say_the_process_count_changed(point.directory, saved, ctx.world_size)
        load_into(module, point.weights, str(point.directory))
        state, schedule_state = apply_resume_point(point, optimizer, ctx.rank, setup.seed)
        schedule.load_state_dict(schedule_state)
        say_what_a_new_length_changes(state, total_steps, schedule, setup, ctx)
        say_the_train_split_changed(state, setup, ctx)
        say_the_validation_changed(point.directory, state, setup, ctx)
    elif ctx.distributed:
        # Every rank has built the same model from the same seed (DDP also broadcasts rank 0's weights);
        # from here on each draws its own noise (see `rank_seed`; a resumed rank takes its saved state, or
        # without one a seed of its own, `restore_rng`).
        torch.manual_seed(rank_seed(setup.seed, ctx.rank))
    state.planned_steps = total_steps
    state.train_clips = len(setup.train_set)
    state.progress_steps = state.progress_steps or total_steps
    if ctx.distributed:
        module = nn.parallel.DistributedDataParallel(
            module, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
            # Some settings leave parameters without a gradient in a step (supervised S5 at keep ratio 1.0:
            # the mask generator; LSMCL: the encoder's classification head, which pretraining never uses).
            # Where none are left out, DDP warns once per rank that the flag was not needed; it is kept on
            # for every run because a missed case would stop training instead. `static_graph=True`, which
            # would learn the set, breaks gradient accumulation (`no_sync`) in torch 2.13.
            find_unused_parameters=True,
        )
    scaler = torch.amp.GradScaler("cuda", enabled=needs_grad_scaler(ctx.device, setup.recipe.train.amp))
    if point is not None and scaler.is_enabled() and point.payload.get("grad_scaler"):
        scaler.load_state_dict(point.payload["grad_scaler"])
    log = MetricsLog(out_dir, ctx.is_main, bool(getattr(tcfg, "tensorboard", False)),
                     state.step if resume_from is not None else None, state.log_records)
    progress = TrainingProgress(total_steps, state.step, enabled=setup.show_progress and ctx.is_main,
                                main=ctx.is_main)
    interrupted: dict[str, int | None] = {"signal": None}

    trainer_pid = os.getpid()

    def on_stop_signal(signum, frame) -> None:
        # Loader workers start with the signals held back until they ignore them (evaluation.read_batches);
        # any other process forked from the trainer that inherits this handler takes the default action.
        if not default_action_in_child(trainer_pid, signum):
            interrupted["signal"] = signum

    # Ctrl-C and SIGTERM (a scheduler's preemption) both finish the current step and save a checkpoint.
    previous_handlers = (
        {sig: signal.signal(sig, on_stop_signal) for sig in (signal.SIGINT, signal.SIGTERM)} if _main_thread() else {}
    )
    metadata = {
        "model_name": setup.model_name, "num_outputs": str(setup.num_outputs), "objective": setup.objective,
        "recipe": json.dumps(setup.recipe_dict), "task": task_metadata(setup.task), **setup.extra_metadata,
    }
    last_metrics: dict = {}
    last_good: Path | None = resume_from
    clips: Iterator[SampleBatch] | None = None

    saved_state: tuple[int, int] | None = None  # (step, epoch) of the last checkpoint this call wrote

    def save(tag_metrics: dict | None) -> Path:
        nonlocal last_good, saved_state
        path = out_dir / "checkpoints" / f"step-{state.step:07d}"
        rank_states = ctx.gather_objects(torch_rng_state())  # a collective: every rank takes part
        state.log_records = log.records
        if ctx.is_main:
            ckpt.save_checkpoint(path, step.unwrap(module), {**metadata, "step": str(state.step)}, optimizer,
                                 schedule.state_dict(), state, tag_metrics, scaler.state_dict(),
                                 other_ranks_rng=rank_states[1:])
            set_latest(out_dir, path)
            prune_checkpoints(out_dir, max(1, tcfg.keep_last), just_saved=path)
        ctx.barrier()
        last_good, saved_state = path, (state.step, state.epoch)
        return path

    def checkpoint_of_this_state() -> Path:
        """This state's checkpoint: the one already written for it, else a new one (a collective)."""
        return last_good if saved_state == (state.step, state.epoch) and last_good is not None else save(None)

    def stop_after_saving(stop_signal: int) -> None:
        """Save (unless this state's checkpoint is written already) and end the command as the signal asks."""
        path = checkpoint_of_this_state()
        what, code = stop_outcome(stop_signal)
        raise Interrupted(f"{what} at step {state.step}; checkpoint saved to {path}. "
                          "Continue with the same command and --resume", exit_code=code)

    patience = tcfg.early_stop_patience
    no_validation = setup.val_set is None or not len(setup.val_set)
    if ctx.is_main and no_validation and setup.objective == "supervised":
        from s5cli.cli.console import print_warning

        # Without validation there is no best/ (the checkpoint eval and visualize-mask load), no plateau
        # step and no early stop: say so at the start, not after hours of training.
        fix = ("raise data.val_fraction or put more videos under data.root" if _carves_val(recipe)
               else "check that data.root holds the videos of the val split")
        print_warning(f"the val split has no clips: no best checkpoint is chosen, and no plateau or early stop "
                      f"acts ({fix})")
    try:
        module.train()
        for epoch in range(state.epoch, tcfg.epochs):
            if patience_used_up(state, patience):  # a resumed run that had already stopped
                setup.stopped_early = True
                break
            batches = epoch_batches(setup.train_set, ctx, setup.seed, epoch, tcfg.batch_size)
            batches = batches[:epoch_steps]  # an LSMCL batch with no negative left out
            start_batch = state.batch_in_epoch if epoch == state.epoch else 0
            micro = [micro_batches(batch, tcfg.accumulate) for batch in batches[start_batch:]]
            clips = clip_batches(setup, epoch, micro)
            for b_index in range(start_batch, len(batches)):
                tick = time.perf_counter()
                step.set_training_progress(module, state.step / max(1, state.progress_steps))
                optimizer.zero_grad(set_to_none=True)
                try:
                    loss_value, top1 = step.backward_batch(setup, module, scaler, clips, micro[b_index - start_batch])
                except TokensLost as lost:
                    # In one process, before any forward pass of the step, this state is an uninterrupted
                    # run's: save it. Under torchrun the other ranks are inside this step's collectives and
                    # cannot join a save; torchrun stops them when this rank exits.
                    kept = checkpoint_of_this_state() if lost.at_step_start and not ctx.distributed else None
                    raise tokens_lost_failure(lost, f"at step {state.step + 1}", kept, last_good) from None
                # Mean loss and an agreed stop in one collective, before the optimiser step: a non-finite loss
                # on any rank makes the mean non-finite, so every rank stops here together (one rank raising
                # alone left the others blocked in the next collective), and no rank steps on it.
                loss_value, stop_signal, top1 = ctx.after_step(loss_value, interrupted["signal"] or 0, top1)
                if not math.isfinite(loss_value):
                    raise divergence_failure(f"loss became {loss_value}", state.step + 1, epoch, last_good,
                                    "Try a lower optim.lr or optim.grad_clip")
                # A finite loss can still have a non-finite gradient: stepping on it made every weight NaN,
                # which was then validated, checkpointed and named as the last good checkpoint.
                grad_norm = clip_gradients(module, optimizer, scaler, ocfg.grad_clip)
                if grad_norm is not None and not math.isfinite(grad_norm):
                    raise divergence_failure(f"the gradient norm became {grad_norm}", state.step + 1, epoch, last_good,
                                    "Try a lower optim.lr")
                lr = schedule.lr()  # this step's rate: `after_step` sets the next step's
                if step.optimizer_step(scaler, optimizer):
                    schedule.after_step()
                    step.update_momentum_copies(module)
                state.step += 1
                setup.steps_run += 1
                state.batch_in_epoch = b_index + 1
                # Clips of this step over every process (the sampler gives each rank as many; the last
                # batch of an epoch may be short): batch_size overstated a short or uneven batch.
                speed = len(batches[b_index]) * ctx.world_size / max(time.perf_counter() - tick, 1e-9)
                progress.update(state.step, epoch, loss_value, lr, speed)
                # The run's last step too: a run shorter than log_every otherwise logged nothing (and
                # `s5 pretrain` printed an empty summary).
                if state.step % max(1, tcfg.log_every) == 0 or state.step == total_steps:
                    contrast = {} if top1 is None else {"contrastive_top1": top1}  # LSMCL's acc@1
                    log.write({"step": state.step, "epoch": epoch + 1, "loss": loss_value, **contrast,
                               "lr": lr, "samples_per_s": speed})
                if stop_signal:  # agreed above: every rank finishes this step and saves
                    stop_after_saving(stop_signal)
            state.epoch = epoch + 1
            state.batch_in_epoch = 0
            is_last = state.epoch == tcfg.epochs
            metrics = None
            if setup.val_set is not None and len(setup.val_set) and (state.epoch % max(1, tcfg.eval_every) == 0 or is_last):
                try:
                    metrics = _validate(setup, module, epoch,
                                        stop_requested=lambda: interrupted["signal"] is not None)
                except TokensLost as lost:  # raised on every rank (see _validate): saved like a stop
                    state.epoch, state.batch_in_epoch = epoch, len(batches)
                    raise tokens_lost_failure(lost, f"validating after epoch {epoch + 1}",
                                               checkpoint_of_this_state(), last_good) from None
                if metrics is None:
                    # Stopped during validation: saved as a stop at the epoch's last step, so --resume runs
                    # this validation again (a long split's validation no longer holds a stop for minutes).
                    state.epoch, state.batch_in_epoch = epoch, len(batches)
                    stop_after_saving(_agreed_stop(ctx, interrupted["signal"]) or signal.SIGINT)
                setup.validations_run += 1
                name, value, higher = headline(metrics)
                schedule.after_eval(value)
                log.write({"step": state.step, "epoch": state.epoch, **{f"val_{k}": v for k, v in metrics.items()
                                                                          if not isinstance(v, list)}})
                progress.log(f"epoch {state.epoch}: val {name} {value:.4f}")
                improved = is_improvement(value, state.best_metric, higher)
                if improved:
                    state.best_metric, state.best_step = value, state.step
                state.evals_since_best = 0 if improved else state.evals_since_best + 1
                last_metrics = metrics
                # best/ is written before the step checkpoint that records it as best: a kill between the two
                # then re-runs this epoch on --resume (same numbers) instead of never writing best/.
                if improved and ctx.is_main:
                    ckpt.save_checkpoint(out_dir / "best", step.unwrap(module), {**metadata, "step": str(state.step)},
                                         metrics=metrics)
            # Every finished epoch is a checkpoint, validated or not: with train.eval_every 10 (LVU) or an
            # empty val split a kill lost every epoch since the last validation. A patience used up (at this
            # validation, or before an epoch that validates nothing: lowered on a mid-epoch --resume) stops
            # after it; the record is logged before the checkpoint counts the log's records, so a resume keeps it.
            stopping = patience_used_up(state, patience) and not is_last
            if stopping:
                log.write({"step": state.step, "epoch": state.epoch, "early_stop": True, "best_step": state.best_step})
            save(metrics)
            if stopping:
                setup.stopped_early = True
                progress.notice(early_stop_notice(state, patience, metrics))
                break
            # A signal that came after the epoch's last step (while another rank validated, or while saving)
            # stops here, not one step into the next epoch. After the last epoch the run is complete.
            if not is_last:
                stop_signal = _agreed_stop(ctx, interrupted["signal"])
                if stop_signal:
                    stop_after_saving(stop_signal)
    finally:
        clips = None  # the last reference: a DataLoader's worker processes end with it
        progress.close()
        log.close()
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
    return last_metrics


def _validate(setup: TrainSetup, module: nn.Module, epoch: int,
              stop_requested: Callable[[], bool] | None = None) -> dict | None:
    """Validation metrics (rank 0 evaluates the whole split; every rank gets the result); None on every
    rank when `stop_requested` (a stop signal on rank 0) abandoned it; `TokensLost` on every rank when a
    validation token file went missing (so all of them can save together)."""
    inner = step.unwrap(module)
    outcome: dict | str | None = {}
    if setup.ctx.is_main:
        try:
            outcome = evaluate(inner, setup.val_set, setup.task, setup.recipe.eval.batch_size, setup.ctx.device,
                               setup.recipe.eval.aggregate, num_workers=setup.recipe.data.num_workers,
                               prefetch_batches=setup.recipe.data.prefetch_batches, amp=setup.recipe.train.amp,
                               stop_requested=stop_requested)
        except EvaluationStopped:
            outcome = None
        except TokensLost as lost:
            outcome = str(lost)
    if setup.ctx.distributed:
        outcome = setup.ctx.gather_objects(outcome)[0]
    if isinstance(outcome, str):
        raise TokensLost(outcome)
    return outcome


def _agreed_stop(ctx: DistContext, own_signal: int | None) -> int:
    """The stop signal any rank has seen (0 for none), agreed in one collective as after a step."""
    return ctx.after_step(0.0, own_signal or 0)[1]


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
