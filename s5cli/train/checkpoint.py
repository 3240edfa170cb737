"""Checkpoints as safetensors only (never pickle), written atomically, resumable exactly.

A checkpoint is a directory:
  model.safetensors          weights of the trained module (EMA copies included) + metadata: format,
                             model_name, num_outputs, objective, step, recipe (JSON of the resolved recipe),
                             task (JSON: kind, num_outputs, class_names — what the outputs mean)
  trainer_state.safetensors  optimiser tensors (Adam moments …) and RNG states (torch, CUDA; `rng_states`)
  trainer_state.json         step, epoch, scheduler, best metric, optimiser scalars, Python/NumPy RNG states
  metrics.json               the last evaluation (optional)
The directory is assembled under a temporary name and renamed into place, so a kill -9 never leaves a
half-written checkpoint where `latest` could point at it.

Finding checkpoints is `checkpoint_paths`, what they say about themselves `checkpoint_metadata`, their
weights read back `checkpoint_weights`, and pruning a run's old ones `checkpoint_pruning`.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from s5cli.io import atomic_write_text, os_error_about, sync_folder
from s5cli.safetensors_io import save_tensors
from s5cli.train.rng_states import rng_state

FORMAT = "s5cli-checkpoint/1"
MODEL_FILE = "model.safetensors"
STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"
METRICS_FILE = "metrics.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
# The name of a step checkpoint folder in RUN/checkpoints/ (the trainer writes `step-%07d`).
STEP_NAME = re.compile(r"step-(\d+)")


def _contiguous(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or strided storage; clone to own, contiguous CPU memory.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def _split_optimizer(optimizer: torch.optim.Optimizer, module: nn.Module | None = None
                     ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{name}"] = value
            else:
                scalars[f"{pid}.{name}"] = value
    info: dict[str, Any] = {"param_groups": state["param_groups"], "scalars": scalars}
    if module is not None:
        info["param_names"] = _param_names(optimizer, module)
    return tensors, info


def _param_names(optimizer: torch.optim.Optimizer, module: nn.Module) -> list[str | None]:
    """The weight name of each optimiser parameter, by its id in the state dict (ids count through the groups).

    Why stored: a resume checks each saved moment against the weight it belongs to while it reads the
    checkpoint, so a moment of another shape sends it to an older checkpoint instead of into torch's AdamW.
    """
    names = {id(param): name for name, param in module.named_parameters()}
    return [names.get(id(param)) for group in optimizer.param_groups for param in group["params"]]


def join_optimizer(tensors: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> dict[str, Any]:
    """The optimiser state dict that `_split_optimizer` took apart (its tensors and its JSON side)."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for key, value in info.get("scalars", {}).items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    return {"state": dict(sorted(state.items())), "param_groups": info["param_groups"]}


@dataclass
class TrainerState:
    """Where training stands: enough (with the RNG states) to continue exactly."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    evals_since_best: int = 0  # validations in a row without a better metric (train.early_stop_patience)
    # Steps the run was planned for when this was saved; a resume with another train.epochs says what that
    # changes (0: a checkpoint from before this field).
    planned_steps: int = 0
    # Steps S5's exploration temperature anneals over: the planned length when the run started, kept when a
    # resume raises train.epochs so that a trained mask generator does not start exploring again.
    progress_steps: int = 0
    # Records metrics.jsonl held when this was saved (-1: a checkpoint from before this field). A stop at an
    # epoch's last step is saved before that epoch's validation; a run killed after logging the validation
    # and then resumed logged it twice when the log was cut by step number alone.
    log_records: int = -1
    # Clips in the train split when this was saved (0: a checkpoint from before this field). A resume on a
    # split that has since grown or shrunk (videos added, a cache pruned) cannot continue the interrupted
    # run's epochs; with fewer batches than the saved position the rest of that epoch was skipped silently.
    train_clips: int = 0


def save_checkpoint(
    directory: Path,
    module: nn.Module,
    metadata: Mapping[str, str],
    optimizer: torch.optim.Optimizer | None = None,
    schedule_state: Mapping[str, Any] | None = None,
    trainer_state: TrainerState | None = None,
    metrics: Mapping[str, Any] | None = None,
    scaler_state: Mapping[str, Any] | None = None,
    other_ranks_rng: Sequence[Mapping[str, torch.Tensor]] = (),
) -> Path:
    """Write a checkpoint directory atomically (assembled beside it, then renamed).

    `scaler_state`: the float16 GradScaler's (scale, growth tracker), kept so a resumed run does not
    restart at the initial scale and skip steps an uninterrupted run took; empty when no scaler is used.
    `other_ranks_rng`: ranks 1..'s generator states (see `rng_state`)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    recover_interrupted_swap(directory)
    tmp = directory.with_name(f".{directory.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        meta = {"format": FORMAT, **{k: str(v) for k, v in metadata.items()}}
        save_tensors(_contiguous(module.state_dict()), tmp / MODEL_FILE, metadata=meta)
        if optimizer is not None and trainer_state is not None:
            opt_tensors, opt_info = _split_optimizer(optimizer, module)
            rng_tensors, rng_json = rng_state(other_ranks_rng)
            save_tensors(_contiguous({**opt_tensors, **rng_tensors}), tmp / STATE_TENSORS)
            payload = {
                "trainer": trainer_state.__dict__, "optimizer": opt_info, "schedule": dict(schedule_state or {}),
                "rng": rng_json,
            }
            if scaler_state:
                payload["grad_scaler"] = dict(scaler_state)
            atomic_write_text(tmp / STATE_JSON, json.dumps(payload, indent=1))
        if metrics is not None:
            atomic_write_text(tmp / METRICS_FILE, json.dumps(metrics, indent=1))
        sync_folder(tmp)
        if directory.exists():
            old = set_aside(directory)
            if old.exists():
                shutil.rmtree(old)
            directory.rename(old)
            tmp.rename(directory)
            shutil.rmtree(old)
        else:
            tmp.rename(directory)
        sync_folder(directory.parent, files=False)
    except OSError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        if error.filename is not None and not str(error.filename).startswith(str(tmp)):
            raise
        # A full disk while assembling: name the checkpoint, not the hidden folder it was assembled in.
        raise os_error_about(error, f"checkpoint {directory}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def set_aside(directory: Path) -> Path:
    """Where a replace moves the previous copy of `directory` between its two renames."""
    return directory.with_name(f".{directory.name}.old")


def recover_interrupted_swap(directory: Path) -> None:
    """Put back a checkpoint that a kill caught between its two renames.

    Replacing a directory takes two renames (old aside, new in). A kill -9 between them leaves only
    `.NAME.old`; that copy is complete, so it is restored instead of reporting the checkpoint as missing.
    """
    old = set_aside(directory)
    if old.is_dir() and not directory.exists():
        old.rename(directory)


def recover_interrupted_swaps(run_dir: Path) -> None:
    """`recover_interrupted_swap` for a run's best/ and every step checkpoint.

    Why the step checkpoints too: a run resumed from a stop during validation (or at an epoch's last step)
    saves that step's checkpoint again, a replace; a kill between its renames left `.step-N.old` while
    `latest` still named step-N, which no resume looked for, so it fell back to an older checkpoint or,
    with `train.keep_last: 1`, started over. Only the run's own trainer calls this (it holds the run lock).
    """
    run_dir = Path(run_dir)
    recover_interrupted_swap(run_dir / "best")
    for aside in set_aside_steps(run_dir):
        recover_interrupted_swap(aside.with_name(aside.name[1 : -len(".old")]))


def set_aside_steps(run_dir: Path) -> list[Path]:
    """`.step-N.old` folders a kill left mid-replace (only checkpoint names: `.step-2 copy.old` is the user's)."""
    root = Path(run_dir) / "checkpoints"
    return [aside for aside in root.glob(".step-*.old") if step_number(aside.name[1 : -len(".old")]) is not None]


def step_number(name: str) -> int | None:
    """The step of a step checkpoint's folder name (`step-0000012` -> 12); None for any other name.

    Why the whole name: a user's backup copy (`step-0000002 copy`) or `step-foo` beside the checkpoints was
    read as a step number, and the ValueError stopped every save of the run."""
    match = STEP_NAME.fullmatch(name)
    return int(match.group(1)) if match else None
