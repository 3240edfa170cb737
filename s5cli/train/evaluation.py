"""Run a model over a token dataset and score it (shared by training-time validation and `s5 eval`)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from s5cli.data.cache import TokensLost
from s5cli.data.datasets.token_dataset import collate_samples
from s5cli.stop_signals import ignore_stop_signals, stop_signals_held
from s5cli.train.metrics import aggregate_by_video, compute_metrics, nonfinite_rows

Batch = TypeVar("Batch")


class EvaluationStopped(Exception):
    """`stop_requested` said yes between two batches: the evaluation was abandoned, no metrics."""


def as_model_input(tokens: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch of cached tokens (float16/bfloat16/float32) as the models' float32 input on `device`.

    Batches travel in the cache's dtype and are converted where the model runs: half the bytes to load,
    stack and copy to a GPU, and exactly the numbers of converting each sample on the CPU.
    """
    return tokens.to(device, non_blocking=True).float()


@torch.inference_mode()
def predict(model: nn.Module, dataset: Dataset, batch_size: int, device: torch.device,
            show_progress: bool = False, num_workers: int = 0,
            prefetch_batches: int = 2, amp: bool = True,
            stop_requested: Callable[[], bool] | None = None) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Window-level outputs (N, C), labels (N,) and video ids, in dataset order; `amp`: mixed precision
    on CUDA (`train.amp`). Raises `EvaluationStopped` when `stop_requested()` is true after a batch: a
    trainer's validation of a long split otherwise kept a Ctrl-C or a scheduler's SIGTERM waiting for minutes.

    `num_workers` processes load the next windows while the model runs (`data.num_workers`), each at most
    `prefetch_batches` batches ahead; windows have no randomness, so the outputs do not depend on either.
    """
    was_training = model.training
    model.eval()
    # generator: iterating a loader draws its workers' base seed from the global RNG unless it has its own;
    # validation (rank 0 alone under torchrun) then shifted that rank's training noise by one draw, and a
    # run resumed after it drew other dropout and Gumbel noise than the uninterrupted one.
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_samples,
                        pin_memory=device.type == "cuda", **worker_loading(num_workers, prefetch_batches),
                        generator=torch.Generator().manual_seed(0))
    ids: list[str] = []
    outputs, labels = [], []
    progress = None
    if show_progress:
        from s5cli.cli.console import SimpleProgress

        progress = SimpleProgress("evaluating", total=len(loader))
    try:
        for batch in read_batches(loader):
            with autocast(device, amp):
                out = model(as_model_input(batch.tokens, device))
            outputs.append(out.float().cpu())
            labels.append(batch.labels)
            ids.extend(batch.video_ids)
            if progress is not None:
                progress.advance()
            if stop_requested is not None and stop_requested():
                raise EvaluationStopped
    finally:
        if progress is not None:
            progress.close()
        model.train(was_training)
    if not outputs:
        return [], torch.empty(0), torch.empty(0)
    return ids, torch.cat(outputs), torch.cat(labels)


def read_batches(loader: Iterable[Batch]) -> Iterator[Batch]:
    """The loader's batches; a token file that went missing or was damaged since the cache was checked
    raises `TokensLost`, one line naming the file, where the loader raised a worker's traceback.

    Whatever the loader raises, its worker processes are ended first. Why: the error's traceback holds
    the loader's iterator, so the workers outlived it, and they ignore SIGTERM
    (`leave_stop_signals_to_the_owner`), which is how Python's exit ends leftover workers: the command
    printed its error and then never exited.

    The workers start (fork) with Ctrl-C and SIGTERM held back (`stop_signals_held`) until they ignore
    them; the owner gets one that came meanwhile as the block ends, and stops as usual.
    """
    with stop_signals_held():
        batches = iter(loader)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except BaseException as error:
            _end_workers(batches)
            if not isinstance(error, FileNotFoundError):  # CorruptCacheEntry is one too
                raise
            lost = TokensLost.from_error(error)
        else:
            yield batch
            continue
        raise lost  # outside the except block: no traceback of the loader's frames travels with it


def _end_workers(batches: Iterator[Any]) -> None:
    """End a DataLoader iterator's worker processes now (what its `__del__` would do)."""
    shutdown = getattr(batches, "_shutdown_workers", None)  # torch's own clean-up; absent without workers
    if callable(shutdown):
        shutdown()


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one, as torch's loader checks)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def worker_loading(num_workers: int, prefetch_batches: int) -> dict[str, int]:
    """DataLoader options for `num_workers` loading processes, each at most `prefetch_batches` batches ahead.

    Why a function: DataLoader refuses a prefetch factor without workers, and the training and evaluation
    loaders must bound their memory the same way (`data.prefetch_batches`).
    """
    # Capped at the CPUs this process may use: more only compete for them, and torch then printed a
    # multi-line warning for every loader (the LVU and Breakfast recipes ask for 4 workers). No number
    # depends on the count (see `predict`, and the trainer's per-video clip generators).
    num_workers = min(num_workers, usable_cpus())
    if num_workers == 0:
        return {"num_workers": 0}
    _end_leftover_workers_at_exit()
    return {"num_workers": num_workers, "prefetch_factor": prefetch_batches,
            "worker_init_fn": leave_stop_signals_to_the_owner}


def leave_stop_signals_to_the_owner(_worker_id: int) -> None:
    """DataLoader workers ignore Ctrl-C and SIGTERM; the process that owns the loader handles them.

    Why: a terminal's Ctrl-C, `timeout` and batch schedulers signal the whole process group. A worker that
    died of it failed the trainer's next batch ("DataLoader worker ... is killed by signal") before the
    trainer could finish its step and save, so a stopped run left a traceback, exit 1 and no checkpoint.
    Ignoring is safe: the loader ends its workers when the owner stops, and a worker whose owner is gone
    exits on its own (the loader's watchdog). A signal that came between the fork and here was held back
    (`read_batches`) and is dropped."""
    ignore_stop_signals()


@functools.cache
def _end_leftover_workers_at_exit() -> None:
    """At exit, kill loader workers still alive (once per process).

    Why: Python's exit ends leftover daemon processes with SIGTERM and then waits for them, but loader
    workers ignore SIGTERM (`leave_stop_signals_to_the_owner`); a worker whose loader an error's traceback
    still held then kept the finished command from ever exiting. Registered after multiprocessing's own
    exit hook, so it runs first.
    """
    import atexit
    import multiprocessing

    def kill_daemon_children() -> None:
        for child in multiprocessing.active_children():
            if child.daemon:
                child.kill()

    atexit.register(kill_daemon_children)


def amp_dtype(device: torch.device) -> torch.dtype:
    """The mixed-precision dtype on a CUDA device: bfloat16 where the GPU computes it natively (compute
    capability 8.0+, Ampere on), else float16 (with a GradScaler in training).

    Why not `torch.cuda.is_bf16_supported()`: it also counts emulated bfloat16 (no tensor cores) by default,
    so a V100 or T4 ran slow emulated bfloat16; and it asks the current device, not this one."""
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


def autocast(device: torch.device, enabled: bool = True, cache_enabled: bool = True):
    """Mixed precision on CUDA when `enabled` (the recipe's `train.amp`); on CPU, or disabled, a context
    that turns autocast off. `cache_enabled=False` for steps captured as CUDA graphs (see torch.autocast)."""
    if device.type != "cuda" or not enabled:
        return torch.autocast(device.type if device.type == "cuda" else "cpu", enabled=False)
    return torch.autocast("cuda", dtype=amp_dtype(device), cache_enabled=cache_enabled)


def needs_grad_scaler(device: torch.device, enabled: bool = True) -> bool:
    """Whether training needs a GradScaler: float16 autocast only (bfloat16 has float32's range)."""
    return float16_autocast(device, enabled)


def evaluate(model: nn.Module, dataset: Dataset, task: Any, batch_size: int, device: torch.device,
             aggregate: str = "mean", show_progress: bool = False, num_workers: int = 0,
             prefetch_batches: int = 2, amp: bool = True, stop_requested: Callable[[], bool] | None = None) -> dict:
    """Metrics of `model` on `dataset`, aggregated per video over windows (LVU protocol); `stop_requested`
    as for `predict`.

    Videos whose outputs are not finite are counted (`nonfinite`, and their windows `nonfinite_windows`;
    see `compute_metrics` for how they are scored) and named in one warning: a float16 overflow or a
    diverged model otherwise showed as a believable top-1 (all-NaN scores ranked class 0 first).
    """
    ids, outputs, labels = predict(model, dataset, batch_size, device, show_progress, num_workers, prefetch_batches,
                                   amp, stop_requested)
    if not ids:
        return {"count": 0}
    _, scores, vid_labels = aggregate_by_video(ids, outputs, labels, task.kind, aggregate)
    metrics = compute_metrics(scores, vid_labels, task.kind, task.num_outputs)
    metrics["windows"] = len(ids)
    if metrics.get("nonfinite"):
        metrics["nonfinite_windows"] = int(nonfinite_rows(outputs).sum().item())
        from s5cli.cli.console import print_warning

        print_warning(nonfinite_warning(metrics, aggregate, float16_autocast(device, amp)))
    return metrics


def float16_autocast(device: torch.device, amp: bool = True) -> bool:
    """Whether `autocast(device, amp)` computes in float16 (whose range ends at 65504)."""
    return device.type == "cuda" and amp and amp_dtype(device) == torch.float16


def nonfinite_warning(metrics: dict, aggregate: str, float16: bool) -> str:
    """One line: how many scored videos (windows with aggregate none) had NaN or inf outputs, what that did
    to the metrics, and the likely fix: full precision after float16 autocast, else an earlier checkpoint."""
    rows = "windows" if aggregate == "none" else "videos"
    windows = "" if aggregate == "none" else f"; {metrics['nonfinite_windows']} of {metrics['windows']} windows"
    effect = "no mse is reported (null)" if "mse" in metrics else "they count as wrong predictions"
    cause = ("float16 mixed precision overflowed on this GPU: set train.amp=false (or use --device cpu)"
             if float16 else "the model may have diverged: use an earlier checkpoint, or a lower optim.lr")
    return (f"{metrics['nonfinite']} of {metrics['count']} {rows} had non-finite model outputs (NaN or inf"
            f"{windows}), so {effect}; {cause}")
