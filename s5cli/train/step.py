"""One optimiser step of the training loop: forward and backward over a batch's micro-batches, the
(scaled) optimiser step, and what follows a step that changed the weights.

Apart from `loop` (epochs, validation, checkpoints, stops) so that what one step computes reads in one
place, and tests can replace one part of it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from s5cli.data.cache import TokensLost
from s5cli.data.datasets.token_dataset import SampleBatch
from s5cli.train.evaluation import as_model_input, autocast

if TYPE_CHECKING:
    from s5cli.train.loop import TrainSetup


def unwrap(module: nn.Module) -> nn.Module:
    """The trained module itself, DistributedDataParallel's wrapper taken off (what checkpoints hold)."""
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def clip_gradients(module: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                    grad_clip: float | None) -> float | None:
    """Clip this step's gradients to `grad_clip` (unscaled first) and return their total norm before
    clipping, for the caller to stop on a non-finite one; None with a float16 GradScaler.

    Why None there: inf/NaN float16 gradients are routine, the scaler skips that step and lowers its scale.
    Without clipping the norm is computed for the check alone (one read per step, as for the loss); after
    DDP's all-reduce it is the same on every rank, so all of them stop together."""
    params = [p for p in module.parameters() if p.requires_grad]
    if grad_clip and grad_clip > 0:
        scaler.unscale_(optimizer)
        norm = nn.utils.clip_grad_norm_(params, grad_clip)
    elif scaler.is_enabled():
        return None
    else:
        norm = nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    return None if scaler.is_enabled() else float(norm)


def optimizer_step(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> bool:
    """`scaler.step` + `scaler.update`; False when the scaler skipped the step (inf/NaN float16 gradients).

    Why the caller needs to know: a skipped step leaves the weights as they were, so it must not advance
    the lr schedule or the momentum copies either (float16 training skips its first steps while the scale
    comes down from 65536, and would spend warmup on them). The scaler halves its scale exactly when it
    skips, so comparing the scale before and after says which happened; reading it waits for the step's
    GPU work, once per step and only with float16's scaler (the loss was read already)."""
    if not scaler.is_enabled():
        optimizer.step()
        return True
    before = scaler.get_scale()
    scaler.step(optimizer)
    scaler.update()
    return scaler.get_scale() >= before


def update_momentum_copies(module: nn.Module) -> None:
    """After a step that changed the weights: S5's guide and LSMCL's key encoder follow them (EMA)."""
    inner = unwrap(module)
    if hasattr(inner, "momentum_update"):
        inner.momentum_update()


def set_training_progress(module: nn.Module, fraction: float) -> None:
    """Models with a training-progress schedule (S5's exploration temperature) hear where training is.

    Derived from the step counter, so a resumed run sets exactly what the uninterrupted one did.
    """
    inner = unwrap(module)
    if hasattr(inner, "set_training_progress"):
        inner.set_training_progress(fraction)


def batch_loss(setup: TrainSetup, module: nn.Module, batch) -> torch.Tensor:
    """The supervised loss on one (micro-)batch: cross-entropy or MSE on the labels (LSMCL: `lsmcl_output`,
    which also gives the contrastive top-1)."""
    tokens = as_model_input(batch.tokens, setup.ctx.device)
    out = module(tokens)
    labels = batch.labels.to(setup.ctx.device)
    if setup.task.kind == "regression":
        return F.mse_loss(out.squeeze(-1).float(), labels.float())
    return F.cross_entropy(out.float(), labels)


def lsmcl_output(setup: TrainSetup, module: nn.Module, batch):
    """LSMCL's output (loss, contrastive top-1) on one (micro-)batch, each clip tagged with its video."""
    from s5cli.models.lsmcl import video_keys

    return module(as_model_input(batch.tokens, setup.ctx.device), video_ids=video_keys(batch.video_ids))


def backward_batch(setup: TrainSetup, module: nn.Module, scaler, clips: Iterator[SampleBatch],
                   micro: list[list[int]]) -> tuple[float, float | None]:
    """Forward + backward of one batch, its micro-batches `micro` read in turn from `clips`; returns the
    batch's mean loss and, for LSMCL, its mean contrastive top-1 (None otherwise).

    Each micro-batch's mean loss is weighted by its share of the batch, so the summed gradients are those
    of the whole batch's mean. Under DDP gradients are averaged over ranks once, at the last micro-batch.
    A non-finite loss still goes through its backward pass (under DDP every rank must reach the gradient
    all-reduce) and makes the returned mean non-finite; the caller stops before the optimiser step.
    """
    size = sum(len(part) for part in micro)
    total, top1 = 0.0, None
    for m_index, part in enumerate(micro):
        share = len(part) / size
        syncs = not setup.ctx.distributed or m_index == len(micro) - 1
        with contextlib.nullcontext() if syncs else module.no_sync():
            batch = next_clips(clips, first_of_step=m_index == 0)
            with autocast(setup.ctx.device, setup.recipe.train.amp):
                if setup.objective == "lsmcl":
                    out = lsmcl_output(setup, module, batch)
                    loss, top1 = out.loss, (top1 or 0.0) + float(out.top1) * share
                else:
                    loss = batch_loss(setup, module, batch)
            scaler.scale(loss if share == 1.0 else loss * share).backward()
        total += float(loss.detach()) * share
    return total, top1


def next_clips(clips: Iterator[SampleBatch], first_of_step: bool) -> SampleBatch:
    """The next micro-batch; a lost token file's `TokensLost` says whether the step had run anything yet."""
    try:
        return next(clips)
    except TokensLost as lost:
        lost.at_step_start = first_of_step
        raise
