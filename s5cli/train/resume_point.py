"""`--resume`: the newest readable checkpoint of a run, read whole before any of it is applied.

Apart from `checkpoint` (writing and reading one checkpoint) because choosing among a run's checkpoints, and
falling back past a damaged newest one, is a decision about the run, not about the file format.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from s5cli.errors import UserError, first_line
from s5cli.train.checkpoint import MODEL_FILE, STATE_JSON, STATE_TENSORS, TrainerState, join_optimizer
from s5cli.train.checkpoint_paths import checkpoint_dir, latest_checkpoint, step_checkpoints
from s5cli.train.checkpoint_weights import nonfinite_weights
from s5cli.train.rng_states import restore_rng


@dataclass
class ResumePoint:
    """Everything `--resume` needs from one checkpoint, read in full before any of it is applied."""

    directory: Path
    weights: dict[str, torch.Tensor]
    payload: dict[str, Any]  # trainer_state.json
    tensors: dict[str, torch.Tensor]  # trainer_state.safetensors


def read_resume_point(path: str | Path) -> ResumePoint:
    """Read a checkpoint's weights and trainer state; UserError naming the file that cannot be read.

    Reading everything first means a torn file (a crash before the data reached the disk) is found
    before the model or the optimiser has been changed, so the caller can fall back to an older one.
    """
    directory = checkpoint_dir(path)
    if not (directory / STATE_JSON).is_file():
        raise UserError(f"{directory} has no {STATE_JSON}: it cannot be resumed (weights-only checkpoint)")
    reading = directory / MODEL_FILE
    try:
        weights = load_file(str(reading))
        reading = directory / STATE_JSON
        payload = json.loads(reading.read_text(encoding="utf-8"))
        _check_trainer_fields(TrainerState(**payload["trainer"]))  # every field, no unknown one, right types
        if "optimizer" not in payload:
            raise KeyError("optimizer")
        reading = directory / STATE_TENSORS
        tensors = load_file(str(reading))
        reading = directory / STATE_JSON
        _check_resume_payload(payload, tensors)
    except Exception as error:  # safetensors, json and a missing key each raise their own type
        reason = first_line(error)
        raise UserError(f"{reading} is unreadable ({reason}): the checkpoint is damaged") from None
    _check_finite_weights(weights, directory / MODEL_FILE)
    try:
        _check_moments(join_optimizer(tensors, payload["optimizer"])["state"],
                       _saved_params(payload["optimizer"], weights))
    except ValueError as error:
        raise UserError(f"{directory / STATE_TENSORS} does not fit the checkpoint's weights ({first_line(error)}): "
                        "the checkpoint is damaged") from None
    return ResumePoint(directory, weights, payload, tensors)


def _check_finite_weights(weights: Mapping[str, torch.Tensor], file: Path) -> None:
    """UserError for NaN/inf weights, found while reading so that `--resume` falls back to an older checkpoint.

    Why here and not only in `load_into`: a checkpoint of a model that had already diverged was picked as
    the newest readable one and then refused when loaded, so the run could not be resumed at all."""
    broken = nonfinite_weights(weights)
    if broken:
        raise UserError(f"{file} holds non-finite (NaN/inf) weights in {len(broken)} tensors (e.g. {broken[0]}): "
                        "the model had diverged or the file is damaged")


def _check_resume_payload(payload: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> None:
    """ValueError when the optimiser or generator states could not be applied: found while reading, so
    `--resume` falls back to an older checkpoint instead of failing half-way through applying this one."""
    groups = payload["optimizer"].get("param_groups") if isinstance(payload["optimizer"], dict) else None
    if not isinstance(groups, list) or not groups or not all(isinstance(g, dict) and "params" in g for g in groups):
        raise ValueError("optimizer.param_groups is not a list of parameter groups")
    join_optimizer(tensors, payload["optimizer"])  # raises on a malformed key or scalar
    cpu_state = torch.get_rng_state()
    for key, value in tensors.items():
        generator = key.startswith("rng.") and key.endswith(".torch")  # rng.torch, rng.rankN.torch
        if generator and (value.dtype != torch.uint8 or value.shape != cpu_state.shape):
            raise ValueError(f"{key} is not a torch generator state")
    for group in groups:
        for name in ("lr", "eps", "weight_decay"):
            if name in group and not _is_number(group[name]):
                raise ValueError(f"optimizer.param_groups.{name} is {group[name]!r}, not a number")
    rng = payload.get("rng", {})
    if not isinstance(rng, dict):
        raise ValueError("rng is not a mapping")
    if "python" in rng and not (isinstance(rng["python"], list) and len(rng["python"]) == 3
                                and isinstance(rng["python"][1], list)):
        raise ValueError("rng.python is not a Python generator state")
    if "numpy" in rng and not (isinstance(rng["numpy"], list) and len(rng["numpy"]) == 5
                               and isinstance(rng["numpy"][1], list)):
        raise ValueError("rng.numpy is not a NumPy generator state")
    _try_generator_states(rng)
    schedule = payload.get("schedule", {})
    if not isinstance(schedule, dict) or not isinstance(schedule.get("state", {}), dict):
        raise ValueError("schedule is not a scheduler state")


def _saved_params(info: Mapping[str, Any], weights: Mapping[str, torch.Tensor]) -> dict[int, torch.Tensor]:
    """The checkpoint's own weight for each optimiser parameter id, where it names them (`param_names`,
    written since 2026-12); empty for older checkpoints, whose moments are then only checked in pairs."""
    names = info.get("param_names")
    if not isinstance(names, list):
        return {}
    return {pid: weights[name] for pid, name in enumerate(names) if isinstance(name, str) and name in weights}


def _tensor_kind(tensor: torch.Tensor) -> str:
    return "complex" if tensor.is_complex() else "float" if tensor.is_floating_point() else "integer"


def _check_moments(state: Mapping[int, Mapping[str, Any]], params: Mapping[int, torch.Tensor]) -> None:
    """ValueError for an optimiser moment whose shape or kind (float, complex) is not its parameter's, or a
    step counter that is not one number.

    Why: read intact, such a state loaded and the first step ended in a traceback inside torch's AdamW
    ("size of tensor a (3) must match ..."). Without the parameter (`params` lacks its id), a parameter's
    moments must at least agree with each other."""
    for pid, entries in state.items():
        moments = {name: value for name, value in entries.items() if isinstance(value, torch.Tensor)}
        step = moments.pop("step", None)
        if step is not None and step.numel() != 1:
            raise ValueError(f"optim.{pid}.step holds {step.numel()} values, not one step count")
        reference, what = params.get(pid), "its parameter"
        if reference is None and moments:
            what, reference = next(iter(moments.items()))
            what = f"optim.{pid}.{what}"
        for name, moment in moments.items():
            if moment.shape != reference.shape or _tensor_kind(moment) != _tensor_kind(reference):
                raise ValueError(f"optim.{pid}.{name} is {_tensor_kind(moment)} {tuple(moment.shape)}, {what} "
                                 f"{_tensor_kind(reference)} {tuple(reference.shape)}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _try_generator_states(rng: Mapping[str, Any]) -> None:
    """Set the Python and NumPy states on throwaway generators, as `restore_rng` will on the real ones: a
    state of the right shape but wrong contents (a cut key list) raised there, after the weights were loaded."""
    import random

    import numpy as np

    if "python" in rng:
        version, inner, gauss = rng["python"]
        random.Random().setstate((version, tuple(inner), gauss))
    if "numpy" in rng:
        kind, keys, pos, has_gauss, cached = rng["numpy"]
        np.random.RandomState().set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def _check_trainer_fields(state: TrainerState) -> None:
    """ValueError for a hand-edited or damaged trainer position (a step of "abc" failed later, mid-resume)."""
    for field_ in dataclasses.fields(state):
        value = getattr(state, field_.name)
        if field_.name in ("best_metric", "best_step"):
            ok = value is None or _is_number(value)
        else:
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= -1
        if not ok:
            raise ValueError(f"trainer.{field_.name} is {value!r}")


def find_resume_point(run_dir: Path, report: bool = True) -> ResumePoint | None:
    """The newest readable checkpoint of a run: `latest`, else the older step checkpoints, newest first.

    A damaged newest checkpoint is reported (when `report`: under DDP only the main process says it, every
    process skips it) rather than ending the run: `keep_last` keeps older ones precisely so that a resume
    has somewhere to go back to. None when the run has none yet.
    """
    from s5cli.cli.console import print_warning

    try:
        latest = latest_checkpoint(run_dir)
    except UserError as error:  # a damaged `latest` file: the step checkpoints are still there
        if report:
            print_warning(f"--resume: {error}; trying the step checkpoints")
        latest = None
    candidates = [latest] if latest is not None else []
    candidates += [p for p in step_checkpoints(run_dir) if p not in candidates]
    problems = []
    for directory in candidates:
        try:
            point = read_resume_point(directory)
        except UserError as error:
            problems.append(str(error))
            if report:
                print_warning(f"--resume: {error}; trying an older checkpoint")
            continue
        return point
    if problems:
        raise UserError(f"--resume: no readable checkpoint in {run_dir} (newest: {problems[0]}); "
                        "start a new run with another --out")
    return None


def apply_resume_point(point: ResumePoint, optimizer: torch.optim.Optimizer, rank: int = 0,
                       seed: int = 0) -> tuple[TrainerState, dict[str, Any]]:
    """Restore optimiser and (rank `rank`'s) RNG states; return the trainer position and the scheduler state.

    `seed`: the run's seed; a rank the checkpoint has no generator state for seeds its own from it and the
    step resumed at (`restore_rng`).

    An optimiser state that does not fit this model's parameter groups (read intact, so not caught while
    reading) ends in one line naming the file, not torch's traceback."""
    try:
        saved = join_optimizer(point.tensors, point.payload["optimizer"])
        _check_moments(saved["state"], _live_params(saved["param_groups"], optimizer))
        optimizer.load_state_dict(saved)
    except (ValueError, KeyError, TypeError) as error:
        reason = first_line(error)
        raise UserError(f"{point.directory / STATE_JSON}: its optimiser state does not fit this model ({reason}): "
                        "delete that checkpoint to resume from an older one, or start a new run with another --out"
                        ) from None
    state = TrainerState(**point.payload["trainer"])
    restore_rng(point.tensors, point.payload.get("rng", {}), rank, fresh_seed=seed + state.step)
    return state, point.payload.get("schedule", {})


def _live_params(saved_groups: list[dict[str, Any]], optimizer: torch.optim.Optimizer) -> dict[int, torch.Tensor]:
    """This optimiser's parameter for each saved parameter id, paired as torch's `load_state_dict` pairs them
    (group by group, in order); a checkpoint whose groups do not pair up is left to torch to refuse."""
    pairs: dict[int, torch.Tensor] = {}
    for saved, live in zip(saved_groups, optimizer.param_groups, strict=False):
        pairs.update({int(pid): param.detach() for pid, param in zip(saved["params"], live["params"], strict=False)})
    return pairs
