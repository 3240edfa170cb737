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
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from s5cli.errors import UserError
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
            old = _set_aside(directory)
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


def _set_aside(directory: Path) -> Path:
    """Where a replace moves the previous copy of `directory` between its two renames."""
    return directory.with_name(f".{directory.name}.old")


def recover_interrupted_swap(directory: Path) -> None:
    """Put back a checkpoint that a kill caught between its two renames.

    Replacing a directory takes two renames (old aside, new in). A kill -9 between them leaves only
    `.NAME.old`; that copy is complete, so it is restored instead of reporting the checkpoint as missing.
    """
    old = _set_aside(directory)
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
    for aside in _set_aside_steps(run_dir):
        recover_interrupted_swap(aside.with_name(aside.name[1 : -len(".old")]))


def _set_aside_steps(run_dir: Path) -> list[Path]:
    """`.step-N.old` folders a kill left mid-replace (only checkpoint names: `.step-2 copy.old` is the user's)."""
    root = Path(run_dir) / "checkpoints"
    return [aside for aside in root.glob(".step-*.old") if step_number(aside.name[1 : -len(".old")]) is not None]


def holds_weights_to_resume(run_dir: Path) -> bool:
    """Whether `--resume` finds a checkpoint with weights to continue from (readable or not), counting one
    a kill set aside mid-replace (`recover_interrupted_swaps` puts it back).

    Not `has_checkpoints`: that also counts a `latest` file alone, which keeps a run folder from being
    overwritten, but names nothing to load once its checkpoint was deleted (to free disk, or by
    `keep_last`). A resume there starts a new run, and `train.init` must then be loaded as on any first
    start; it was skipped while the start was reported as "from train.init".
    """
    try:
        if latest_checkpoint(run_dir) is not None:
            return True
    except UserError:  # a damaged `latest` file: the step checkpoints decide
        pass
    return bool(step_checkpoints(run_dir)) or any((aside / MODEL_FILE).is_file() for aside in _set_aside_steps(run_dir))


def checkpoint_dir(path: str | Path) -> Path:
    """Accept a checkpoint directory, its model.safetensors, or a run directory (its `latest` checkpoint)."""
    path = Path(path).expanduser()
    if path.suffix in PICKLE_SUFFIXES:
        raise UserError(f"{path}: pickle checkpoints are not loaded (unsafe); s5cli reads safetensors only")
    if path.is_file() and path.name == MODEL_FILE:
        return path.parent
    if (path / MODEL_FILE).is_file():
        return path
    if (path / "latest").is_file():
        target = _latest_target(path)
        if (target / "latest").is_file() and not (target / MODEL_FILE).is_file():
            # One level only: `latest` names a checkpoint, and a chain of run folders could loop.
            raise UserError(f"{path / 'latest'} names another run folder, not a checkpoint: pass a checkpoint "
                            f"folder instead (e.g. {path / 'checkpoints'}/step-...)")
        return checkpoint_dir(target)
    # `.`, `/` and an empty path have no name, so nothing can have been set aside beside them.
    interrupted = _set_aside(path) if path.name else None
    if not path.exists() and interrupted is not None and (interrupted / MODEL_FILE).is_file():
        # A kill between the two renames of a replace left the complete previous copy aside. Reads use it
        # where it is: renaming it back here could collide with a trainer that is finishing that replace.
        return interrupted
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist: pass a checkpoint folder (with {MODEL_FILE}) or a run folder")
    if path.is_file():
        if _holds_checkpoint(path.parent):
            raise UserError(f"{path} is a file: pass the checkpoint or run folder that holds it ({path.parent})")
        raise UserError(f"{path} is a file, not a checkpoint: pass a checkpoint folder (with {MODEL_FILE}) or a run folder")
    raise UserError(f"{path} holds no {MODEL_FILE}: pass a checkpoint folder written by s5 finetune/pretrain")


def _holds_checkpoint(folder: Path) -> bool:
    """Whether `folder` is what `checkpoint_dir` or `run_best_checkpoint` load: a checkpoint, or a run with
    `latest` or `best/`. Why: a file's folder was suggested for `-c some/video.mp4` too, where it holds none."""
    return any((folder / name).exists() for name in (MODEL_FILE, "latest", "best"))


def _latest_target(run_dir: Path) -> Path:
    """The checkpoint folder a run's `latest` file names; UserError when the file names no folder below the run.

    Why checked: the file is a plain relative path, and an empty or hand-edited one named the run folder
    itself (endless lookup) or a folder elsewhere.
    """
    pointer = run_dir / "latest"
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        name = ""
    parts = [part for part in Path(name).parts if part != "."]
    if not parts or Path(name).is_absolute() or ".." in parts:  # "." or "./" named the run itself
        raise UserError(f"{pointer} does not name a checkpoint of this run: pass a checkpoint folder instead "
                        f"(e.g. {run_dir / 'checkpoints'}/step-...), or delete {pointer}")
    return run_dir / name


def latest_target_name(run_dir: Path) -> str | None:
    """The relative folder name a run's `latest` holds when it names one below the run, else None."""
    try:
        return _latest_target(Path(run_dir)).relative_to(Path(run_dir)).as_posix()
    except (UserError, OSError, ValueError):
        return None


def run_best_checkpoint(run_dir: str | Path) -> Path | None:
    """A run folder's `best/` checkpoint (what eval, visualize-mask and push mean by a run), or None when the
    run has none (no validation: its latest checkpoint is meant).

    UserError when `best/` is there but damaged: falling back to the latest checkpoint used to score,
    visualise or upload another checkpoint than the user meant, without a word."""
    best = Path(run_dir).expanduser() / "best"
    if not best.exists() and not _set_aside(best).exists():
        return None
    try:
        return checkpoint_dir(best)
    except UserError:
        if not best.exists():  # only a leftover of an interrupted replace, no checkpoint: as without best/
            return None
        latest = ""
        with contextlib.suppress(UserError, OSError):  # a run without a usable `latest`: no example then
            latest = f", e.g. the latest one, {_latest_target(best.parent)}"
        what = f"holds no {MODEL_FILE}" if best.is_dir() else "is not a folder"
        raise UserError(f"{best} {what} (damaged?): pass a checkpoint folder instead{latest}") from None


def read_metadata(path: str | Path) -> dict[str, str]:
    """Metadata of a checkpoint's model.safetensors (format, model_name, num_outputs, recipe …)."""
    file = checkpoint_dir(path) / MODEL_FILE
    try:  # safetensors reports a file it may not read as "No such file or directory"
        with open(file, "rb"):
            pass
    except OSError as error:
        raise UserError(f"{file}: cannot be read ({error.strerror}): check its permissions") from None
    try:
        with safe_open(str(file), framework="pt") as handle:
            meta = handle.metadata() or {}
    except Exception as exc:  # safetensors raises several error types for corrupt headers
        raise UserError(f"{file}: not a readable safetensors file ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise UserError(f"{file}: not an s5cli checkpoint (format {meta.get('format')!r}, expected {FORMAT})")
    return meta


def task_metadata(task: Any) -> str:
    """The task's metadata entry (JSON of kind, num_outputs and class names).

    Stored so that a checkpoint names its own classes: `s5 eval --video` on a downloaded checkpoint then
    needs neither the dataset's split files (LVU's class names live only there) nor the dataset itself.
    """
    return json.dumps({"kind": task.kind, "num_outputs": int(task.num_outputs), "class_names": task.class_names,
                       "target_offset": float(getattr(task, "target_offset", 0.0))})


def stored_task(meta: Mapping[str, str]) -> dict[str, Any] | None:
    """The task a checkpoint was trained for ({kind, num_outputs, class_names, target_offset}); None for
    checkpoints written before it was stored (2026-11-29) or whose entry is unreadable, so callers fall back
    to the recipe's. `target_offset` is None in checkpoints from before 2026-12-01, which did not store it."""
    try:
        task = json.loads(meta["task"])
    except (KeyError, ValueError):
        return None
    names = task.get("class_names") if isinstance(task, dict) else None
    valid = (isinstance(task, dict) and task.get("kind") in ("classification", "regression")
             and isinstance(task.get("num_outputs"), int)
             # A regression head has one output: a claim of 9 failed `eval --video` with a traceback.
             and (task["kind"] == "classification" or task["num_outputs"] == 1)
             and (names is None or (isinstance(names, list) and len(names) == task["num_outputs"]
                                    and all(isinstance(name, str) for name in names)))
             and isinstance(task.get("target_offset", 0.0), (int, float)))
    if not valid:
        return None
    if names is not None:  # printed by `eval --video`: an escape sequence in a name cleared the terminal
        task = {**task, "class_names": [_printable(name) for name in names]}
    return {**task, "target_offset": task.get("target_offset")}


def _printable(text: str) -> str:
    """`text` with control characters shown as escapes (\x1b), so printing it cannot drive the terminal."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Model weights of a checkpoint."""
    return load_file(str(checkpoint_dir(path) / MODEL_FILE))


# Weights that earlier builds saved and this one no longer has: S5's guide kept an unused copy of its S4
# layer's output projection until 2026-11-29 (0.1.0, unreleased). Checkpoints with them load without them.
RETIRED_KEY_PARTS = ("guide.s4.out_linear.",)


def model_weights(path: str | Path, meta: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """The weights of the model a checkpoint holds (`meta`: its metadata), without retired ones: of an
    LSMCL checkpoint, its encoder's (the key encoder and projectors are pretraining's own)."""
    state = load_state(path)
    if meta.get("objective") == "lsmcl":
        state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    return {k: v for k, v in state.items() if not any(part in k for part in RETIRED_KEY_PARTS)}


def weight_mismatch(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]
                    ) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, mis-shaped) keys of `state` against a module's state dict `own`, sorted."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    return missing, unexpected, wrong


def load_into(module: nn.Module, state: Mapping[str, torch.Tensor], source: str, *, strict: bool = True) -> None:
    """Load weights, naming mismatched keys and shapes (another architecture) in one line."""
    state = {k: v for k, v in state.items() if not any(part in k for part in RETIRED_KEY_PARTS)}
    # Buffers added since a checkpoint was written, at the value that module gives an older one (LSMCL's
    # queue ids): its resume otherwise failed as "another model".
    defaults = getattr(module, "defaults_for_older_checkpoints", None)
    if defaults is not None:
        state = {**{k: v for k, v in defaults().items() if k not in state}, **state}
    own = module.state_dict()
    missing, unexpected, wrong = weight_mismatch(own, state)
    if (strict and (missing or unexpected)) or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (e.g. {', '.join(missing[:3])})")
        if unexpected and strict:
            parts.append(f"unexpected {len(unexpected)} keys (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(
                "shape mismatch " + ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in wrong[:3])
            )
        raise UserError(f"{source} does not fit this model: {'; '.join(parts)} — was it trained with another model?")
    # Training stops on a non-finite loss before it saves, so non-finite weights mean a damaged or foreign
    # file: they loaded silently and evaluated to plausible-looking numbers (every video one class).
    broken = nonfinite_weights({k: state[k] for k in own if k in state})
    if broken:
        raise UserError(f"{source} holds non-finite (NaN/inf) weights in {len(broken)} tensors (e.g. {broken[0]}): "
                        "the checkpoint is damaged; use another one")
    module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


def nonfinite_weights(state: Mapping[str, torch.Tensor]) -> list[str]:
    """The floating-point tensors of `state` holding NaN or inf, by name, sorted (a diverged or damaged model)."""
    return sorted(k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all())


def step_number(name: str) -> int | None:
    """The step of a step checkpoint's folder name (`step-0000012` -> 12); None for any other name.

    Why the whole name: a user's backup copy (`step-0000002 copy`) or `step-foo` beside the checkpoints was
    read as a step number, and the ValueError stopped every save of the run."""
    match = STEP_NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def _step_folders(run_dir: Path) -> list[Path]:
    """A run's step checkpoint folders (with or without weights), oldest first; other folders are left out."""
    root = Path(run_dir) / "checkpoints"
    folders = [p for p in root.glob("step-*") if step_number(p.name) is not None and p.is_dir()]
    return sorted(folders, key=lambda p: step_number(p.name) or 0)


def step_checkpoints(run_dir: Path) -> list[Path]:
    """A run's step checkpoints that hold weights, newest first (by step number, not by name)."""
    return [p for p in reversed(_step_folders(run_dir)) if (p / MODEL_FILE).is_file()]


def has_checkpoints(run_dir: Path) -> bool:
    """Whether a run folder has anything `--resume` would continue from (readable or not)."""
    return (Path(run_dir) / "latest").is_file() or bool(step_checkpoints(run_dir))


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint named by `run_dir/latest`, if any."""
    pointer = Path(run_dir) / "latest"
    if not pointer.is_file():
        return None
    target = _latest_target(Path(run_dir))
    return target if (target / MODEL_FILE).is_file() else None


def set_latest(run_dir: Path, checkpoint: Path) -> None:
    """Point `run_dir/latest` at a checkpoint (atomic)."""
    atomic_write_text(Path(run_dir) / "latest", str(Path(checkpoint).relative_to(run_dir)) + "\n")


def prune_checkpoints(run_dir: Path, keep_last: int, just_saved: Path | None = None) -> None:
    """Delete all but the newest `keep_last` step checkpoints up to `just_saved` (best/ is kept separately).

    Why "up to": a run resumed past an unreadable newest checkpoint trains again towards that step. Counting
    it as the newest deleted the checkpoint just written (the one `latest` names) and kept the damaged
    one, so the run could not be resumed at all. Newer ones are left to be overwritten when reached.
    """
    _warn_of_strays(Path(run_dir))
    steps = _step_folders(run_dir)
    newest = step_number(Path(just_saved).name) if just_saved is not None else None
    if newest is not None:
        steps = [p for p in steps if (step_number(p.name) or 0) <= newest]
    for old in steps[: max(0, len(steps) - keep_last)]:
        shutil.rmtree(old, ignore_errors=True)


_REPORTED_STRAYS: set[Path] = set()


def _warn_of_strays(run_dir: Path) -> None:
    """Warn once per folder about folders in RUN/checkpoints/ named like a checkpoint but not one (a backup
    `step-0000002 copy`): pruning leaves them, so the user learns why they stay and that they use disk."""
    root = run_dir / "checkpoints"
    strays = sorted(p for p in root.glob("step-*") if step_number(p.name) is None and p not in _REPORTED_STRAYS)
    if not strays:
        return
    _REPORTED_STRAYS.update(strays)
    from s5cli.cli.console import print_warning

    names = ", ".join(repr(p.name) for p in strays[:3]) + (f" and {len(strays) - 3} more" if len(strays) > 3 else "")
    print_warning(f"{root}: {names} not named step-NUMBER, so not checkpoints of this run: never pruned or "
                  "resumed from (move them out of the run folder to silence this)")
