"""Load a trained model (and the recipe it was trained with) from a checkpoint folder, run folder or Hub id."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from s5cli.errors import UserError


def resolve_checkpoint(spec: str | Path, revision: str | None = None) -> Path:
    """Local checkpoint/run folder, or hf://REPO[@REV]/path / a bare Hub repo id (through s5cli.hub)."""
    text = str(spec)
    local = Path(text).expanduser()
    # OWNER/NAME whose OWNER is a folder here (`runs/nosuch` beside runs/): a mistyped local path, not a Hub
    # id; asking the Hub then only added its connection error to the message. `hf://` still means the Hub.
    beside_a_folder = not text.startswith("hf://") and text.count("/") == 1 and local.parent.is_dir()
    if local.exists() or beside_a_folder or not (text.startswith("hf://") or text.count("/") == 1):
        from s5cli.train.checkpoint_paths import checkpoint_dir, run_best_checkpoint

        # A run folder means its best checkpoint (what eval and visualize want); resuming uses `latest`.
        try:
            found = run_best_checkpoint(local) or checkpoint_dir(local)
        except UserError as error:
            if beside_a_folder and not local.exists() and _names_a_repo(text):
                raise UserError(f"{error} (a Hub repo of that name: hf://{text})") from None
            raise
        if revision is not None:
            from s5cli.cli.console import print_warning

            print_warning(f"--revision {revision} is for Hub checkpoints; {text} is a local folder, used as it is")
        return found
    from s5cli.errors import RunFailure
    from s5cli.hub import resolve_checkpoint_dir

    if text.startswith("hf://"):
        return Path(resolve_checkpoint_dir(text, revision=revision))
    try:  # a bare OWNER/NAME is also what a mistyped local run/folder looks like: say both
        return Path(resolve_checkpoint_dir(text, revision=revision))
    except (UserError, RunFailure) as error:
        raise UserError(f"{text}: no such local checkpoint folder, and as a Hub repo id: {error}") from None


def load_trained_model(spec: str | Path, expect_model: str | None = None, revision: str | None = None):
    """(model in eval mode, recipe dict, metadata) of a finetune checkpoint; LSMCL checkpoints give the encoder."""
    from s5cli.models.registry import canonical_name
    from s5cli.train.checkpoint_metadata import read_metadata
    from s5cli.train.checkpoint_weights import load_into, model_weights

    directory = resolve_checkpoint(spec, revision)
    meta = read_metadata(directory)
    recipe = stored_recipe(meta, directory)
    model_cfg = dict(recipe.get("model", {}))
    name = meta.get("model_name") or model_cfg.get("name")
    if not name:
        raise UserError(f"{directory}: checkpoint metadata names no model")
    if expect_model is not None and canonical_name(expect_model) != canonical_name(name):
        raise UserError(f"{directory} holds a {name!r} model, but this needs {expect_model!r}: pass a checkpoint "
                        f"of an {expect_model} run (model.name={expect_model})")
    outputs = _num_outputs(meta, directory)
    settings = {k: v for k, v in model_cfg.items() if k != "name"}
    state = model_weights(directory, meta)  # before the model: its count of tensors bounds the build
    _check_block_counts(settings, len(state), directory)
    model = _build(name, settings, outputs, directory)
    load_into(model, state, str(directory))
    model.eval()
    return model, recipe, meta


# Model settings that repeat a block that many times; each block stores weights of its own.
BLOCK_COUNTS = ("n_blocks", "depth")


def _check_block_counts(settings: dict[str, Any], tensors: int, directory: Path) -> None:
    """A model of N blocks stores more than N tensors: a larger count in metadata is damage, and building
    the model it describes would loop that many times (for hours at a billion) before the weights were
    compared.

    Why not build the described model on the meta device and compare every shape first: in torch 2.13 the
    S4 kernels' initialisation on meta tensors imports torch._dynamo, 1.6 s on every load."""
    for key in BLOCK_COUNTS:
        count = settings.get(key)
        if isinstance(count, int) and count > tensors:
            raise UserError(f"{directory}: its metadata's model.{key}={count} does not match its weights "
                            f"({tensors} tensors): pass a checkpoint written by s5 finetune/pretrain")


def _build(name: str, settings: dict[str, Any], outputs: int, directory: Path):
    """The model a checkpoint's metadata describes; settings no s5cli run writes (unknown model or key,
    wrong type, absurd size) become a UserError."""
    from s5cli.models.registry import build_model

    try:
        return build_model(name, settings, outputs)
    except MemoryError:
        raise
    except Exception as error:
        text = str(error)
        problem = ("needs more memory than this machine has" if "alloc" in text.lower()
                   else f"cannot be built ({type(error).__name__}: {text.splitlines()[0][:200] if text else ''})")
        raise UserError(f"{directory}: the model its metadata describes ({name}) {problem}: pass a checkpoint "
                        "written by s5 finetune/pretrain") from None


# More classes than any video benchmark has by far; a larger count in metadata is damage, not a task.
MAX_OUTPUTS = 1_000_000


def stored_recipe(meta: dict[str, str], directory: Path | str) -> dict[str, Any]:
    """The recipe a checkpoint's metadata stores (a mapping with a `model` mapping); UserError otherwise.

    Its data section gets the settings a checkpoint saved before they existed was made with
    (`encode.SETTINGS_OF_OLD_RUNS`), so every reader compares like with like."""
    try:
        recipe = json.loads(meta.get("recipe") or "{}")
    except ValueError:
        recipe = None
    if not isinstance(recipe, dict) or not isinstance(recipe.get("model", {}), dict):
        raise UserError(f"{directory}: its metadata's recipe is not the JSON mapping s5cli writes: pass a checkpoint "
                        "written by s5 finetune/pretrain")
    if isinstance(recipe.get("data"), dict):
        from s5cli.data.encode import with_settings_of_old_runs

        recipe["data"] = with_settings_of_old_runs(recipe["data"])
    return recipe


def _num_outputs(meta: dict[str, str], directory: Path | str) -> int:
    try:
        outputs = int(meta["num_outputs"])
    except (KeyError, ValueError):
        outputs = 0
    if not 1 <= outputs <= MAX_OUTPUTS:
        raise UserError(f"{directory}: its metadata's num_outputs ({meta.get('num_outputs')!r}) is not a count of "
                        "classes s5cli writes: pass a checkpoint written by s5 finetune/pretrain")
    return outputs


def recipe_from_checkpoint(recipe_dict: dict[str, Any], overrides: list[str] | None = None,
                           source: str = "the checkpoint's recipe"):
    """A validated Recipe object from the JSON stored in a checkpoint; `source` names it in error messages."""
    import yaml

    from s5cli.recipe import load_recipe_text

    return load_recipe_text(yaml.safe_dump(recipe_dict, sort_keys=False), source, list(overrides or []),
                            line_numbers=False)


def _names_a_repo(text: str) -> bool:
    """Whether `text` is a valid Hub repo id, so that suggesting hf://TEXT helps: `alice/` is not one, and the
    suggested hf://alice/ was itself refused as invalid."""
    from s5cli.hub.paths import is_repo_id

    return is_repo_id(text)
