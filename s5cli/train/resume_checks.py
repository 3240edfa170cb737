"""Checks before a `--resume` does any work: the recipe changes only keys a run may change mid-way, and a
run that has ended says so instead of training nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from s5cli.errors import UserError

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
    from s5cli.recipe import recipe_to_dict
    from s5cli.recipe_validation import show_value
    from s5cli.recipe_yaml import peek_recipe_yaml

    saved_file = out_dir / "recipe.yaml"
    saved, source = None, str(saved_file)
    if saved_file.is_file():
        try:
            saved = peek_recipe_yaml(saved_file.read_text(encoding="utf-8"))  # None where YAML cannot read it
        except (OSError, UnicodeDecodeError):
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
        raise UserError(f"--resume: {out_dir} is {run_kind(objectives[0])}: resume it with "
                        f"`{resume_command(out_dir, objectives[0])}`")
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


# What a run of each train.objective is called in messages (the objective's own name, `lsmcl`, is a recipe value).
RUN_KINDS = {"lsmcl": "an LSMCL pretraining run", "supervised": "a finetuning run"}
COMMANDS = {"lsmcl": "s5 pretrain", "supervised": "s5 finetune"}


def run_kind(objective: Any) -> str:
    """`an LSMCL pretraining run`: a run of train.objective `objective`, as a message names it."""
    return RUN_KINDS.get(objective, f"a run of train.objective={objective}")


def resume_command(out_dir: Path, objective: Any) -> str:
    """The command that continues run `out_dir` of train.objective `objective`: its own recipe.yaml when
    it has one (the recipe it was started with, overrides included), else a placeholder for the recipe."""
    command = COMMANDS.get(objective, "the command that made it")
    saved_file = out_dir / "recipe.yaml"
    again = saved_file if saved_file.is_file() else f"RECIPE --out {out_dir}"
    return f"{command} {again} --resume"


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

    from s5cli.train.checkpoint import STATE_JSON
    from s5cli.train.checkpoint_paths import checkpoint_dir, has_checkpoints
    from s5cli.train.resume_point import find_resume_point

    if not has_checkpoints(out_dir):
        return None
    epochs, patience = recipe.train.epochs, recipe.train.early_stop_patience
    try:  # the small JSON first: a run with training left costs no extra read of its weights
        trainer = json.loads((checkpoint_dir(out_dir) / STATE_JSON).read_text(encoding="utf-8"))["trainer"]
        if _how_it_ended(trainer, epochs, patience) is None:
            return None
        # Then the checkpoint the resume would take: a damaged newest one (a torn model.safetensors beside
        # an intact trainer_state.json) sends the resume to an older one, which has training left.
        point = find_resume_point(out_dir, report=False)
        return None if point is None else _how_it_ended(point.payload["trainer"], epochs, patience)
    except (UserError, OSError, ValueError, KeyError, TypeError):
        return None


def has_training_left(trainer: dict[str, Any], epochs: int, patience: int | None) -> bool:
    """Whether the run whose trainer state this is (of `epochs` epochs and train.early_stop_patience
    `patience`) would train on under `--resume`: it stopped mid-epoch, or before its last epoch without
    running out of patience. KeyError, TypeError or ValueError when the state lacks a field."""
    return _how_it_ended(trainer, epochs, patience) is None


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
    from s5cli.train.checkpoint_metadata import read_metadata
    from s5cli.train.checkpoint_paths import has_checkpoints
    from s5cli.train.loading import stored_recipe

    if not has_checkpoints(out_dir):
        return None
    try:
        return stored_recipe(read_metadata(out_dir), out_dir) or None
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
