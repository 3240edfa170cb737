"""From a recipe's `data:` section to token datasets: records → (extract if needed) → cached tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from s5cli.errors import RunFailure, UserError
from s5cli.recipe_schema import clip_frames
from s5cli.train.distributed import DistContext


def feature_cache(data: Any):
    """The feature cache of this data section (its key changes with every extraction setting)."""
    from s5cli.data.cache import FeatureCache
    from s5cli.data.encode import settings_from_data

    return FeatureCache(Path(data.cache_dir), settings_from_data(data))


def prepare_splits(data: Any, splits: tuple[str, ...], ctx: DistContext, show_progress: bool = True):
    """Make sure every video of `splits` has cached tokens (each rank extracts its share), then list records."""
    from s5cli.data.datasets import list_records
    from s5cli.data.extract import ensure_cached

    if ctx.is_main:
        _warn_if_val_is_test(data, splits)
        # Listing may generate the synthetic videos; do it once, before the other ranks look.
        records = {split: list_records(data, split, show_progress=show_progress) for split in splits}
    ctx.barrier()
    if not ctx.is_main:
        records = {split: list_records(data, split, show_progress=False) for split in splits}
    # On the run's device: a video not cached yet goes through the backbone (ViT-L for LVU) on the GPU.
    failure: UserError | RunFailure | None = None
    try:
        # The context's share, not the environment's: `s5 eval` under torchrun (a one-process context) read
        # RANK/WORLD_SIZE, extracted half the videos and scored the split with the other half "missing".
        ensure_cached(data, splits=splits, shard=(ctx.rank, ctx.world_size),
                      show_progress=show_progress and ctx.is_main, device=ctx.device)
    except (UserError, RunFailure) as error:
        failure = error
    _fail_together(ctx, failure)
    ctx.barrier()
    return records


def _warn_if_val_is_test(data: Any, splits: tuple[str, ...]) -> None:
    """Warn when a training run (train and val listed) validates on the test split's videos.

    Why: Breakfast and COIN have no val split, and with data.val_fraction 0 (the schema's default) val is
    the test split: model selection then happens on the videos `s5 eval` scores, without a word."""
    from s5cli.data.datasets import val_split_warning

    if "train" not in splits or "val" not in splits:
        return
    warning = val_split_warning(data)
    if warning is not None:
        from s5cli.cli.console import print_warning

        print_warning(warning)


def _fail_together(ctx: DistContext, failure: UserError | RunFailure | None) -> None:
    """Raise on every rank when extraction failed on any (each extracts its own share of the videos); in a
    single process, raise the failure itself.

    Why: a rank that raised alone left the others waiting at the next barrier until the collective
    timeout aborted the job, with the reason printed only in the failing rank's log."""
    reports = ctx.gather_objects(None if failure is None else (str(failure), failure.exit_code))
    if failure is not None:
        raise failure
    for rank, report in enumerate(reports):
        if report is not None:
            message, code = report
            raise RunFailure(f"rank {rank}: {message}", exit_code=code)


def token_dataset(data: Any, records, training: bool, frames: int | None = None, stride: int | None = None):
    """TokenDataset over cached tokens; clips of `frames` (default: the recipe's clip length), evaluation
    windows starting every `stride` frames (default: consecutive windows).

    Samples stay in the cache's dtype (float16 for the real-data recipes): loading and batching move half
    the bytes, and the model's device converts the batch to float32 (`as_model_input`), the same numbers.
    With `data.frame_pool` a clip is spread over the cached pool (`TokenDataset`'s `spread`).
    """
    from s5cli.data.datasets.token_dataset import TokenDataset

    return TokenDataset(records, feature_cache(data), frames=frames or clip_frames(data), training=training,
                        stride=stride, dtype=None, spread=data.frame_pool is not None)
