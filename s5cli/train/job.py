"""Build a training job from one Recipe: data, model, objective, output folder. Shared by pretrain/finetune."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from s5cli.errors import UserError
from s5cli.train.distributed import DistContext


def recipe_objects(recipe_path: str, overrides: list[str] | None, seed: int | None, check_paths: bool = True):
    """Load + validate the recipe (before any work); `--seed` overrides train.seed.

    `check_paths` also checks that the recipe's videos and split files exist on this machine.
    """
    from s5cli.recipe import check_data_paths, load_recipe_spec

    extra = list(overrides or [])
    if seed is not None:
        from s5cli.seeding import check_seed

        check_seed(seed)  # named as typed (--seed), not as the train.seed override it becomes
        _refuse_two_seeds(extra, seed)
        extra.append(f"train.seed={seed}")
    recipe = load_recipe_spec(recipe_path, extra)
    if check_paths:
        check_data_paths(recipe)
    return recipe


def _refuse_two_seeds(overrides: list[str], seed: int) -> None:
    """UserError when an override sets train.seed to another value than --seed: the one given last won."""
    from s5cli.recipe import parse_overrides, show_value

    for key, value in parse_overrides(overrides):
        if overrides_key(key, "train.seed") and value != seed:
            raise UserError(f"--seed {seed} and the override {key}={show_value(value)} both set train.seed: give one")


def overrides_key(key: str, full: str, model_name: str = "s5") -> bool:
    """Whether an override's `key` as typed (`out_dir`, `train.out_dir`) sets the recipe key `full`.

    Why resolved: bare keys set the one section's key that has that name, and a check of the text alone
    missed `out_dir=runs/a`, so `s5 finetune RUN/recipe.yaml out_dir=runs/d --resume` trained RUN.
    """
    from s5cli.recipe import full_override_key

    return full_override_key({"model": {"name": model_name}}, key) == full


# What torch imports on first use once training runs: torch._dynamo when the first optimizer is built
# (`torch._compile` wraps Optimizer.add_param_group; with it sympy and triton, ~900 modules, seconds), the
# CUPTI monitor at the first optimizer step (`record_function`).
LAZY_TORCH_MODULES = ("torch._dynamo", "torch.profiler._cupti_monitor")


def import_lazy_torch_modules() -> None:
    """Import LAZY_TORCH_MODULES now, with Ctrl-C and SIGTERM deferred until they are in.

    Why: the CLI's SIGTERM handler raises `Terminated` wherever Python is, and raised while torch.optim
    imported torch._dynamo (triton's C++ extension loading) it aborted the process: exit 134, "terminate
    called after throwing an instance of 'nanobind::python_error'", instead of the clean stop with exit 143.
    A signal that comes meanwhile is raised as the imports end, where Python stops cleanly (a few seconds
    later). Call before the optimizer is built.
    """
    import contextlib
    import importlib

    from s5cli.signals_deferred import stop_signals_deferred

    with stop_signals_deferred():
        for name in LAZY_TORCH_MODULES:
            # Not in this torch version: torch imports what it needs where it did.
            with contextlib.suppress(ImportError):
                importlib.import_module(name)


def build_model_from_recipe(recipe: Any, num_outputs: int):
    """The video model named in recipe.model."""
    from s5cli.models.registry import build_model
    from s5cli.recipe import model_config

    return build_model(recipe.model.name, model_config(recipe), num_outputs)


def lsmcl_config(recipe: Any):
    """LSMCLConfig from train.lsmcl."""
    from s5cli.models.lsmcl import LSMCLConfig

    section = recipe.train.lsmcl
    values = asdict(section) if is_dataclass(section) else dict(section or {})
    return LSMCLConfig(**values)


def out_dir_for(recipe: Any, out: Path | None, recipe_path: str | None = None, overrides: Sequence[str] = ()) -> Path:
    """Run folder: --out, else the run folder that `recipe_path` (a RUN/recipe.yaml) sits in, else
    train.out_dir (`~` expanded).

    Why the recipe's own folder: RUN/recipe.yaml names its run folder as typed when the run started, so a
    relative train.out_dir (the bundled recipes' `runs/NAME`) made `s5 finetune RUN/recipe.yaml --resume`
    from another working folder start a new run there, and a copied run folder resumed the original.
    A `train.out_dir=` override still wins.
    """
    if out is not None:
        return Path(out).expanduser()
    home = run_folder_of(recipe_path)
    keys = [item.partition("=")[0].strip() for item in overrides]
    if home is not None and not any(overrides_key(key, "train.out_dir", recipe.model.name) for key in keys):
        return home
    return Path(recipe.train.out_dir).expanduser()


def run_folder_of(recipe_path: str | None) -> Path | None:
    """The folder of a recipe.yaml that training wrote (checkpoints or a log beside it), else None."""
    if not recipe_path:
        return None
    path = Path(recipe_path).expanduser()
    if path.name != "recipe.yaml" or not path.is_file():
        return None
    from s5cli.train.checkpoint import has_checkpoints

    folder = path.parent
    return folder if has_checkpoints(folder) or (folder / "metrics.jsonl").is_file() else None


def save_run_recipe(recipe: Any, out_dir: Path, resume: bool = False) -> None:
    """Write RUN/recipe.yaml with train.out_dir set to the run folder itself; with `resume`, its header keeps
    the run's own provenance (`_with_saved_provenance`).

    So `s5 finetune RUN/recipe.yaml --resume` continues that run, not the recipe's original folder. Only
    this file says where the run lives: the recipe inside its checkpoints keeps train.out_dir as given, so
    two runs of the same recipe and seed in different folders still write byte-identical checkpoints.
    """
    import copy

    from s5cli.recipe import save_recipe

    located = copy.deepcopy(recipe)
    located.train.out_dir = str(out_dir)
    if resume:
        _with_saved_provenance(located, out_dir / "recipe.yaml")
    save_recipe(located, out_dir / "recipe.yaml")


def _with_saved_provenance(recipe: Any, saved: Path) -> None:
    """Give `recipe` the source and overrides the header of `saved` lists, then its own new overrides.

    Why: `s5 finetune runs/s4/recipe.yaml --resume train.epochs=2` rewrote the header as "(from
    runs/s4/recipe.yaml)" with train.epochs=2 alone, and the run's real origin (its recipe file and the
    `model.name=s4` it was started with) was lost. Left as it is when `saved` has no header to read."""
    provenance = saved_provenance(saved)
    if provenance is None:
        return
    source, listed = provenance
    recipe.source = source or getattr(recipe, "source", None)
    # A new override is listed unless the last one listed for its key already says the same (an earlier
    # `key=5` followed by `key=10` reads as 10: resuming with `key=5` must list it again).
    last = {item.split("=", 1)[0]: item for item in listed}
    recipe.overrides = (*listed, *(item for item in getattr(recipe, "overrides", ())
                                   if last.get(item.split("=", 1)[0]) != item))


_HEADER = "# Resolved s5cli recipe"


def saved_provenance(path: Path) -> tuple[str | None, tuple[str, ...]] | None:
    """(source, overrides) from the header `recipe_header` wrote at the top of a saved recipe; None when the
    file cannot be read or has no such header (written by hand, or by an older s5cli)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    if not lines or not lines[0].startswith(_HEADER):
        return None
    rest = lines[0][len(_HEADER):]
    source = rest[len(" (from "):-1] if rest.startswith(" (from ") and rest.endswith(")") else None
    overrides: list[str] = []
    if len(lines) > 1 and lines[1] == "# with overrides:":
        for line in lines[2:]:
            if not line.startswith("#   "):
                break
            overrides.append(line[len("#   "):])
    return source, tuple(overrides)


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


# Recipe keys a resumed run may change: how long it trains and when it stops, what it logs and keeps,
# how it is evaluated and published, and where its data lies. Everything else (model, optimiser, batch,
# seed, tokens) is part of what the checkpoints hold or of the schedule they continue, and would be
# ignored or break the step count silently (the optimiser's saved settings win over a new optim.lr).
RESUMABLE_KEYS = (
    "train.epochs", "train.early_stop_patience", "train.keep_last", "train.log_every", "train.tensorboard",
    "train.out_dir", "eval.", "hub.", "data.root", "data.annotations", "data.cache_dir",
    "data.decode_threads", "data.num_workers", "data.prefetch_batches",
)


def check_resume_recipe(out_dir: Path, recipe: Any) -> None:
    """Refuse `--resume` with a recipe that differs from the run's own in keys that cannot change mid-run."""
    import yaml

    from s5cli.recipe import recipe_to_dict
    from s5cli.recipe_validation import show_value

    saved_file = out_dir / "recipe.yaml"
    saved, source = None, str(saved_file)
    if saved_file.is_file():
        try:
            saved = yaml.safe_load(saved_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            saved = None
    if not isinstance(saved, dict):
        # Deleted or damaged: the latest checkpoint stores the same resolved recipe in its metadata, so a
        # lost recipe.yaml no longer lets --resume change the optimiser, batch or seed without a word.
        saved, source = _recipe_of_latest_checkpoint(out_dir), f"the recipe of {out_dir}'s latest checkpoint"
        if saved is None:
            if saved_file.exists():
                from s5cli.cli.console import print_warning

                print_warning(f"--resume: {saved_file} is unreadable and no checkpoint holds the run's recipe, so "
                              "changed optimiser, batch or seed settings cannot be caught; the run goes on with "
                              "this recipe's")
            return
    if isinstance(saved.get("data"), dict):
        from s5cli.data.encode import with_settings_of_old_runs

        # recipe.yaml of a run saved before data.resize existed (a checkpoint's recipe comes filled in by
        # `stored_recipe`): it cropped its frames, and resuming it with a recipe that now squashes would
        # switch to another token cache mid-run (only keys both sides have are compared).
        saved = {**saved, "data": with_settings_of_old_runs(saved["data"])}
    saved_flat = _flatten(saved)
    new_flat = _flatten(recipe_to_dict(recipe))
    if "model.name" in saved_flat:  # a run saved before names were stored as registered (`S5`, `vit`)
        saved_flat["model.name"] = _registered_name(saved_flat["model.name"])
    objectives = saved_flat.get("train.objective"), new_flat.get("train.objective")
    if objectives[0] != objectives[1] and None not in objectives:
        command = {"lsmcl": "s5 pretrain", "supervised": "s5 finetune"}.get(objectives[0], "the command that made it")
        again = saved_file if saved_file.is_file() else f"RECIPE --out {out_dir}"
        raise UserError(f"--resume: {out_dir} is a {objectives[0]} run: resume it with `{command} {again} --resume`")
    # Keys only one side has come from another s5cli version (a new key holds its default): not a change.
    unread = _keys_not_read_by(new_flat.get("train.objective"))
    changed = [
        f"{key} ({show_value(saved_flat[key])} -> {show_value(new_flat[key])})"
        for key in sorted(set(saved_flat) & set(new_flat))
        if saved_flat[key] != new_flat[key] and not key.startswith(RESUMABLE_KEYS + unread)
    ]
    if changed:
        raise UserError(
            f"--resume: {source} differs in {', '.join(changed[:4])}"
            f"{f' and {len(changed) - 4} more' if len(changed) > 4 else ''}; these cannot change mid-run: "
            "resume without them, or start a new run with another --out"
        )


def _keys_not_read_by(objective: Any) -> tuple[str, ...]:
    """Recipe key prefixes a run of `objective` never reads, so a change in them is no change to the run.

    Why: every run's recipe.yaml holds train.lsmcl, a supervised one too; when the LSMCL defaults moved
    (mask_ratio 0.5 -> 0.25), `s5 finetune recipes/lvu/genre.yaml --resume` of an older run was refused
    over settings that finetuning never uses."""
    return ("train.lsmcl.",) if objective == "supervised" else ()


def _registered_name(name: Any) -> Any:
    """The registered name of model `name` (`S5` -> s5); `name` itself when no model has it."""
    from s5cli.models.registry import UnknownModelError, canonical_name

    try:
        return canonical_name(str(name))
    except UnknownModelError:
        return name


def run_end(out_dir: Path, recipe: Any) -> str | None:
    """How a run ended when `--resume` would train nothing (its latest checkpoint finished every epoch of
    the recipe's train.epochs, or had used up its train.early_stop_patience), with what continues it;
    None when there is training left, or the checkpoint cannot be read (the resume itself then reports
    it, or falls back to an older one).

    Why before any data work: resuming a finished run generated and extracted the whole dataset (22 s
    for the bundled task, hours for LVU) only to say there was nothing to do. From the trainer state,
    not from metrics.jsonl: a run that ran out of patience on its last epoch logged no early stop.
    """
    import json

    from s5cli.train import checkpoint as ckpt
    from s5cli.train.resume_point import find_resume_point

    if not ckpt.has_checkpoints(out_dir):
        return None
    epochs, patience = recipe.train.epochs, recipe.train.early_stop_patience
    try:  # the small JSON first: a run with training left costs no extra read of its weights
        trainer = json.loads((ckpt.checkpoint_dir(out_dir) / ckpt.STATE_JSON).read_text(encoding="utf-8"))["trainer"]
        if _how_it_ended(trainer, epochs, patience) is None:
            return None
        # Then the checkpoint the resume would take: a damaged newest one (a torn model.safetensors beside
        # an intact trainer_state.json) sends the resume to an older one, which has training left.
        point = find_resume_point(out_dir, report=False)
        return None if point is None else _how_it_ended(point.payload["trainer"], epochs, patience)
    except (UserError, OSError, ValueError, KeyError, TypeError):
        return None


def _how_it_ended(trainer: dict[str, Any], epochs: int, patience: int | None) -> str | None:
    """How the run whose trainer state this is ended, with what continues it; None with training left."""
    epoch, batch, since_best = int(trainer["epoch"]), int(trainer["batch_in_epoch"]), int(trainer["evals_since_best"])
    if batch:
        return None
    if epoch >= epochs:
        return f"had finished its {epochs} epochs; raise train.epochs to go on"
    if patience and since_best >= patience:
        return (f"stopped early after epoch {epoch} ({since_best} validations in a row without a better one, "
                f"train.early_stop_patience={patience}); raise train.early_stop_patience, or set it to null, "
                "to go on")
    return None


def _recipe_of_latest_checkpoint(out_dir: Path) -> dict[str, Any] | None:
    """The resolved recipe stored in a run's latest checkpoint, or None when it has none to read."""
    from s5cli.train import checkpoint as ckpt
    from s5cli.train.loading import stored_recipe

    if not ckpt.has_checkpoints(out_dir):
        return None
    try:
        return stored_recipe(ckpt.read_metadata(out_dir), out_dir) or None
    except UserError:  # the resume itself reports a damaged checkpoint
        return None


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections as dotted keys: {"optim": {"lr": 0.001}} -> {"optim.lr": 0.001}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def remember_last_run(out_dir: Path, ctx: DistContext) -> None:
    """Note the run folder in ./.s5/last_run so visualize-mask / eval can find it without flags."""
    if not ctx.is_main:
        return
    from s5cli.io import atomic_write_text

    marker = Path(".s5") / "last_run"
    marker.parent.mkdir(exist_ok=True)
    atomic_write_text(marker, str(out_dir.resolve()) + "\n")


def last_run() -> Path | None:
    """The run folder of the last `s5 finetune` in this working directory, if it still exists."""
    path = _last_run_marker()
    return path if path is not None and (path / "latest").is_file() else None


def stale_last_run() -> str | None:
    """The error for a ./.s5/last_run that names a run no longer there (deleted, moved, or without a
    checkpoint), with the runs beside it to pass instead; None when it names a run or there is none.

    Why: `s5 eval` and `s5 visualize-mask` said "no finetune run in this folder" after the last run was
    deleted, though other runs sat beside it."""
    path = _last_run_marker()
    if path is None or (path / "latest").is_file():
        return None
    what = "no longer exists" if not path.exists() else "holds no checkpoint"
    others = _runs_in(path.parent)
    listed = f" (runs there: {', '.join(others[:5])}{', ...' if len(others) > 5 else ''})" if others else ""
    return f"the last finetune run here ({path}) {what}; pass -c/--checkpoint <run folder>{listed}"


def _last_run_marker() -> Path | None:
    """The folder ./.s5/last_run names, whether or not it is still a run; None without one."""
    marker = Path(".s5") / "last_run"
    if not marker.is_file():
        return None
    try:
        text = marker.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:  # not written by s5cli: as if there were none
        return None
    return Path(text) if text not in ("", ".") else None


def _runs_in(folder: Path) -> list[str]:
    """The run folders (those with a `latest` checkpoint) directly in `folder`, sorted, as a -c argument:
    relative to the working folder when inside it."""
    try:
        entries = sorted(entry for entry in folder.resolve().iterdir() if (entry / "latest").is_file())
    except OSError:  # gone too, or unreadable: nothing to list
        return []
    here = Path.cwd().resolve()
    return [str(entry.relative_to(here)) if entry.is_relative_to(here) else str(entry) for entry in entries]
