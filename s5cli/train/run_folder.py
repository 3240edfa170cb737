"""The run folder: which one a command means (--out, a run's own recipe.yaml, train.out_dir), and whether a
run may write into it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from s5cli.errors import UserError
from s5cli.train.job import overrides_key


def out_dir_for(recipe: Any, out: Path | None, recipe_path: str | None = None, overrides: Sequence[str] = ()) -> Path:
    """Run folder: --out, else the run folder that `recipe_path` (a RUN/recipe.yaml) sits in, else
    train.out_dir (`~` expanded).

    Why the recipe's own folder: RUN/recipe.yaml names its run folder as typed when the run started, so a
    relative train.out_dir (the bundled recipes' `runs/NAME`) made `s5 finetune RUN/recipe.yaml --resume`
    from another working folder start a new run there, and a copied run folder resumed the original.
    A `train.out_dir=` override still wins; given with another --out it is refused, as --seed with another
    train.seed is: --out won, and RUN/recipe.yaml listed the override that was not used.
    """
    keys = [item.partition("=")[0].strip() for item in overrides]
    set_by_override = any(overrides_key(key, "train.out_dir", recipe.model.name) for key in keys)
    if out is not None:
        if set_by_override and _absolute(recipe.train.out_dir) != _absolute(out):
            raise UserError(f"--out {out} and the override train.out_dir={recipe.train.out_dir} both set the run "
                            "folder: give one")
        return Path(out).expanduser()
    home = run_folder_of(recipe_path)
    if home is not None and not set_by_override:
        return home
    return Path(recipe.train.out_dir).expanduser()


def _absolute(path: str | Path) -> str:
    """`path` as one folder is spelt (`~` expanded, made absolute, `.`/`..`/`//` folded): `runs/x` and
    `$PWD/runs/x` given as --out and train.out_dir name one run folder."""
    import os

    return os.path.abspath(os.path.expanduser(path))


def run_folder_of(recipe_path: str | None) -> Path | None:
    """The folder of a recipe.yaml that training wrote (checkpoints or a log beside it), else None."""
    if not recipe_path:
        return None
    path = Path(recipe_path).expanduser()
    if path.name != "recipe.yaml" or not path.is_file():
        return None
    from s5cli.train.checkpoint_paths import has_checkpoints

    folder = path.parent
    return folder if has_checkpoints(folder) or (folder / "metrics.jsonl").is_file() else None

def check_run_folder(out_dir: Path) -> None:
    """Fail before any work if the run folder cannot be a folder this process writes into."""
    from s5cli.io import check_writable_folder

    check_writable_folder(out_dir, "run folder", "pass a folder with --out or train.out_dir")
    refuse_folder_of_another_run(out_dir)


# What a run keeps its checkpoints in: replaced (best/) or pruned (checkpoints/step-N) as it trains.
CHECKPOINT_AREAS = ("best", "checkpoints")


def refuse_folder_of_another_run(out_dir: Path) -> None:
    """UserError when `out_dir` is a checkpoint folder or lies in another run's best/ or checkpoints/.

    Why: a run trained into runs/a/best was deleted without a word when run a wrote a new best (the replace
    removes the old folder whole), one in runs/a/checkpoints/step-N when run a pruned it, and `s5 eval -c
    runs/a/best` scored run a's model instead. A run folder of its own, fresh or resumed, is not refused.
    """
    from s5cli.train.checkpoint import MODEL_FILE

    try:
        here = Path(out_dir).expanduser().resolve()  # through links: a link into runs/a/best is still in it
    except (OSError, RuntimeError):  # a link loop: creating the folder reports it
        return
    for run in here.parents:
        if here.relative_to(run).parts[0] in CHECKPOINT_AREAS and _is_run_folder(run):
            raise UserError(f"train.out_dir={out_dir} is inside run {run} (its best/ or checkpoints/ are replaced as "
                            "it trains): pick another --out")
    if (here / MODEL_FILE).is_file():
        raise UserError(f"train.out_dir={out_dir} is a checkpoint folder (it holds {MODEL_FILE}), not a run folder: "
                        "pick another --out")


def _is_run_folder(folder: Path) -> bool:
    """Whether `folder` holds a training run: its `latest` file, or its recipe.yaml with a metrics log or a
    best checkpoint.

    Why not a `checkpoints/` folder alone: the path being checked passes through it, so any working folder
    under `.../checkpoints/...` (a cluster's scratch layout) was taken for the inside of a run."""
    from s5cli.train.checkpoint import MODEL_FILE

    if (folder / "latest").is_file():
        return True
    return (folder / "recipe.yaml").is_file() and (
        (folder / "metrics.jsonl").is_file() or (folder / "best" / MODEL_FILE).is_file())


def check_fresh_run(out_dir: Path, resume: bool) -> None:
    """Refuse to overwrite a run folder that already has checkpoints unless resuming."""
    from s5cli.train.checkpoint_paths import has_checkpoints

    # Step checkpoints count too: a run whose `latest` was lost (deleted, or never written by a kill between
    # the two) was overwritten by a fresh start, without a word.
    if not resume and has_checkpoints(out_dir):
        raise UserError(
            f"{out_dir} already holds a run: pass --resume to continue it, or pick another folder for a new one "
            "(--out or train.out_dir)"
        )
