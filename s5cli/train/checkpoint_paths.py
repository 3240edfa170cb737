"""Where checkpoints are: the checkpoint folder a given path means (a checkpoint, its model.safetensors, or
a run folder), and a run's `latest`, `best/` and step checkpoints."""

from __future__ import annotations

import contextlib
from pathlib import Path

from s5cli.errors import UserError
from s5cli.io import atomic_write_text
from s5cli.train.checkpoint import MODEL_FILE, PICKLE_SUFFIXES, set_aside, set_aside_steps, step_number


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
    return bool(step_checkpoints(run_dir)) or any((aside / MODEL_FILE).is_file() for aside in set_aside_steps(run_dir))


def checkpoint_dir(path: str | Path) -> Path:
    """Accept a checkpoint directory, its model.safetensors, or a run directory (its `latest` checkpoint)."""
    from s5cli.hub.paths import web_address, web_address_error

    if web_address(str(path)) and not Path(path).exists():
        raise web_address_error(str(path), "checkpoint ")
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
    interrupted = set_aside(path) if path.name else None
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
    if not best.exists() and not set_aside(best).exists():
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


def step_folders(run_dir: Path) -> list[Path]:
    """A run's step checkpoint folders (with or without weights), oldest first; other folders are left out."""
    root = Path(run_dir) / "checkpoints"
    folders = [p for p in root.glob("step-*") if step_number(p.name) is not None and p.is_dir()]
    return sorted(folders, key=lambda p: step_number(p.name) or 0)


def step_checkpoints(run_dir: Path) -> list[Path]:
    """A run's step checkpoints that hold weights, newest first (by step number, not by name)."""
    return [p for p in reversed(step_folders(run_dir)) if (p / MODEL_FILE).is_file()]


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
