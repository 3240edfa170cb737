"""Which clips each optimiser step trains on: the global batch split over the processes and into
micro-batches, checked before training starts, and the loader that reads them in order.

Every rank draws its batches from (seed, epoch) through DistributedSampler and each clip from its own
(seed, epoch, video) generator, so a run resumed mid-epoch reads exactly the clips the killed one would have.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from s5cli.data.datasets.token_dataset import SampleBatch
from s5cli.errors import UserError
from s5cli.train.distributed import DistContext
from s5cli.train.evaluation import read_batches, worker_loading

if TYPE_CHECKING:
    from s5cli.train.loop import TrainSetup


def rank_batch(global_batch: int, ctx: DistContext) -> int:
    """Clips per process in one step: the global batch split across DDP ranks (at least one)."""
    return max(1, global_batch // ctx.world_size)


def epoch_batches(dataset, ctx: DistContext, seed: int, epoch: int, global_batch: int) -> list[list[int]]:
    """This rank's batches of the epoch; the union over ranks of batch i is the global batch i."""
    sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    order = list(sampler)
    per_rank = rank_batch(global_batch, ctx)
    return [order[i : i + per_rank] for i in range(0, len(order), per_rank)]


def contrastive_videos(rank_clips: int, accumulate: int, world: int) -> int:
    """Videos in the smallest contrastive task of an LSMCL step of `rank_clips` clips a process: its smallest
    micro-batch (`micro_batches`), with the keys of every process's micro-batch at the same position."""
    return world * (rank_clips // max(1, min(accumulate, rank_clips)))


def steps_per_epoch(setup: TrainSetup, ctx: DistContext) -> int:
    """Optimiser steps in an epoch: one per batch of `epoch_batches`, less an LSMCL last batch that would leave
    a video without a negative.

    Why: without a queue, a contrastive task of one video has one logit, a loss of exactly 0 and no gradient,
    yet the optimiser stepped on it (weight decay, stale Adam moments) and the log showed a loss of 0
    (25 videos in batches of 8: the last step of every epoch). MoCo drops short last batches for this reason.
    """
    tcfg = setup.recipe.train
    per_rank = rank_batch(tcfg.batch_size, ctx)
    rank_clips = math.ceil(len(setup.train_set) / ctx.world_size)  # DistributedSampler pads ranks to equal
    batches = math.ceil(rank_clips / per_rank)
    if setup.objective != "lsmcl" or tcfg.lsmcl.queue_size or not batches:
        return batches
    last = rank_clips - (batches - 1) * per_rank
    # The padding repeats clips at the end of the order, so the last global batch holds this many distinct
    # videos; a repeat is the same video, which is no negative (`lsmcl.VideoIds`).
    distinct = len(setup.train_set) - (batches - 1) * per_rank * ctx.world_size
    return batches - (min(distinct, contrastive_videos(last, tcfg.accumulate, ctx.world_size)) < 2)


def micro_batches(indices: list[int], parts: int) -> list[list[int]]:
    """`indices` in `parts` consecutive pieces as equal as possible (none empty; fewer for a short last batch)."""
    parts = max(1, min(parts, len(indices)))
    return [piece.tolist() for piece in np.array_split(np.asarray(indices, dtype=np.int64), parts)]


def _multiples_near(batch: int, world: int) -> list[int]:
    """The multiples of `world` just below and above `batch` (the first one at least `world`)."""
    below = max(world, batch // world * world)
    return sorted({below, (batch // world + 1) * world})


def distinct_videos(dataset) -> int:
    """Distinct videos of a training set: its records' ids (its length for a set without records)."""
    records = getattr(dataset, "records", None)
    return len({record.video_id for record in records}) if records is not None else len(dataset)


def _check_lsmcl_has_two_videos(setup: TrainSetup) -> None:
    """Refuse an LSMCL run whose train split has one video, queue or not.

    Why also with a queue: a video's own queued keys are no negatives (`lsmcl.VideoIds`), so with one video
    in the split every step had one logit, a loss of exactly 0 and a top-1 of 1.0, and the run ended "ok"."""
    videos = distinct_videos(setup.train_set)
    if videos < 2:
        raise UserError(f"the train split has {videos} video(s): LSMCL contrasts each video with others and needs "
                        "at least two videos (with one the loss is 0 and nothing is learnt): add videos to it")


def check_batch_split(recipe: Any, objective: str, ctx: DistContext) -> None:
    """One-line errors for a train.batch_size / train.accumulate that the processes cannot split.

    Why apart from `check_batch_settings`: these depend on the recipe and the process count alone, so the
    commands run them before any data work; under torchrun an uneven batch was refused only after a whole
    extraction, with the run folder and `.s5/last_run` already written."""
    tcfg = recipe.train
    if tcfg.batch_size % ctx.world_size:
        # train.batch_size is the global batch of one optimiser step; split unevenly, every process would
        # take batch_size // world clips and the run would train on another batch than its recipe says.
        fits = ", ".join(str(n) for n in _multiples_near(tcfg.batch_size, ctx.world_size))
        raise UserError(f"train.batch_size={tcfg.batch_size} (the global batch) does not split evenly over "
                        f"{ctx.world_size} processes: use a multiple of {ctx.world_size} (e.g. {fits})")
    per_rank = rank_batch(tcfg.batch_size, ctx)
    if tcfg.accumulate > per_rank:
        where = f" per process ({ctx.world_size} processes)" if ctx.distributed else ""
        raise UserError(
            f"train.accumulate={tcfg.accumulate} splits a batch of {per_rank}{where} into more micro-batches than "
            f"it has clips: use train.accumulate <= {per_rank} or a larger train.batch_size"
        )
    lsmcl_alone = objective == "lsmcl" and not tcfg.lsmcl.queue_size
    if lsmcl_alone and contrastive_videos(per_rank, tcfg.accumulate, ctx.world_size) < 2:
        # One video per contrastive task: one logit, a loss of 0 and nothing learnt (the recipe check refuses
        # train.batch_size=1; accumulation reached the same task size unnoticed).
        most = max(1, per_rank // 2)  # (one process: with more, every micro-batch gathers two videos or more)
        raise UserError(f"train.accumulate={tcfg.accumulate} with LSMCL and no queue leaves micro-batches of one "
                        "video, which has no negative (the loss is 0 and nothing is learnt): use "
                        f"train.accumulate <= {most} or set train.lsmcl.queue_size")


def check_batch_settings(setup: TrainSetup) -> None:
    """One-line errors and warnings for train.batch_size and train.accumulate before anything is trained."""
    tcfg, ctx = setup.recipe.train, setup.ctx
    check_batch_split(setup.recipe, setup.objective, ctx)
    per_rank = rank_batch(tcfg.batch_size, ctx)
    if setup.objective == "lsmcl":
        _check_lsmcl_has_two_videos(setup)
    lsmcl_alone = setup.objective == "lsmcl" and not setup.recipe.train.lsmcl.queue_size
    task = contrastive_videos(per_rank, tcfg.accumulate, ctx.world_size)
    if lsmcl_alone and not steps_per_epoch(setup, ctx):
        # Reached only through accumulation: the split's videos fill one batch, cut into micro-batches of one.
        raise UserError(f"the train split has {distinct_videos(setup.train_set)} videos, but train.accumulate="
                        f"{tcfg.accumulate} gives each a micro-batch of its own, with no negative: lower "
                        "train.accumulate or set train.lsmcl.queue_size")
    if tcfg.accumulate > 1 and setup.objective == "lsmcl" and ctx.is_main:
        from s5cli.cli.console import print_warning

        everywhere = f" over {ctx.world_size} processes" if ctx.distributed else ""
        print_warning(
            f"train.accumulate={tcfg.accumulate} with LSMCL: each micro-batch of ~{task} videos{everywhere} is its "
            "own contrastive task, with only those videos (and train.lsmcl.queue_size queued keys) as negatives"
        )
    if setup.objective == "lsmcl" and per_rank // tcfg.accumulate == 1 and ctx.is_main \
            and setup.recipe.train.lsmcl.projector_norm == "batch":
        from s5cli.cli.console import print_warning

        # Batch norm over one clip has no batch statistics: the projector falls back to its running ones,
        # which never move, and the loss stays at ln 2 (measured: torchrun, batch_size=2 on 2 processes).
        print_warning("train.lsmcl.projector_norm=batch sees one clip per forward pass here, so it cannot "
                      "normalise over a batch: raise train.batch_size or set train.lsmcl.projector_norm=none")


def clip_batches(setup: TrainSetup, epoch: int, micro: list[list[list[int]]]) -> Iterator[SampleBatch]:
    """The epoch's micro-batches of training clips in order (`micro`: each batch's micro-batches of indices).

    `data.num_workers` processes load them ahead of the model (0: here, when each is needed), each at most
    `data.prefetch_batches` batches ahead, as
    evaluation does. The clips are the same either way: each comes from its own (seed, epoch, video)
    generator (`TokenDataset.training_clip`).
    """
    from torch.utils.data import DataLoader

    from s5cli.data.datasets.token_dataset import collate_samples

    data = setup.recipe.data
    workers = data.num_workers
    loader = DataLoader(
        setup.train_set.epoch_clips(setup.seed, epoch),
        batch_sampler=[part for parts in micro for part in parts],
        **worker_loading(workers, data.prefetch_batches),
        collate_fn=collate_samples,
        pin_memory=setup.ctx.device.type == "cuda",
        # A loader draws its workers' base seed when iterated, from the global RNG unless given a generator:
        # that draw would shift the model's random numbers, and differently in a run resumed mid-epoch.
        generator=torch.Generator().manual_seed(0),
    )
    return read_batches(loader)
