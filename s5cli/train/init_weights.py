"""What `train.init` gives a model: the checkpoint it names, checked against the recipe before any video is
decoded, and the weights of it the model takes.

Why a module of its own: starting from another run's weights has its own rules (same tokens, same weight
shapes, an S5 selection left out of a model without one, LVU tasks sharing videos), apart from how a job
is built and where its run folder lies (`job`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from s5cli.errors import UserError


def resolve_init(spec: str) -> Path:
    """The checkpoint folder `train.init` names, found before any data work so a typo fails at once.

    The same rules as `s5 eval --checkpoint`: a local checkpoint or run folder (a run means its best
    checkpoint if it has one, so a finetuned model starts from what it validated best), else a Hub repo.
    """
    from s5cli.train.loading import resolve_checkpoint

    try:
        return resolve_checkpoint(spec)
    except UserError as error:
        raise UserError(f"train.init={spec}: {error}") from None


# Model settings that decide which weights a model holds and their shapes; the others (dropout, the keep
# ratio, ...) may differ between pretraining and finetuning.
WEIGHT_SETTINGS = ("name", "d_input", "d_model", "n_blocks", "d_state", "kernel", "bidirectional",
                   "guide_channels", "mg_hidden", "selector", "depth", "heads", "mlp_ratio", "max_frames",
                   "max_tokens_per_frame")
# S5's token selection: a model that selects no tokens (S4, `selector: none`) has no place for these weights.
SELECTION_PREFIXES = ("guide.", "mask_generator.")


def check_init(recipe: Any, directory: Path, spec: str) -> dict[str, Any]:
    """The weights `train.init` gives the recipe's model (`pretrained_state`), checked before any video is
    extracted: a checkpoint that cannot start this run fails in seconds, not after hours of extraction.

    The tokens must come from the backbone it was trained on (another one's tokens, even of the same
    width, are another input space); another image size only warns. The model is built here only to
    check the weights against, under a forked RNG: the run's own model draws exactly what it drew before.
    """
    import torch

    from s5cli.data.datasets import task_info
    from s5cli.recipe import recipe_to_dict
    from s5cli.train.checkpoint_metadata import read_metadata
    from s5cli.train.job import build_model_from_recipe

    meta = read_metadata(directory)
    _check_init_tokens(recipe.data, meta, spec)
    _check_init_task(recipe.data, meta, spec)
    _check_init_finished(directory, spec)
    with torch.random.fork_rng(devices=[]):
        model = build_model_from_recipe(recipe, task_info(recipe.data).num_outputs)
    return pretrained_state(model, directory, spec, recipe_to_dict(recipe)["model"])


def _stored_section(meta: dict[str, str], section: str) -> dict[str, Any]:
    """A section of the recipe a checkpoint stores; empty when it stores none that can be read (the weights
    check names what is wrong with such a checkpoint)."""
    from s5cli.train.loading import stored_recipe

    try:
        stored = stored_recipe(meta, "").get(section)
    except UserError:
        return {}
    return stored if isinstance(stored, dict) else {}


def _check_init_tokens(data: Any, meta: dict[str, str], spec: str) -> None:
    from s5cli.cli.console import print_warning
    from s5cli.data.encode import TOKEN_IDENTITY, token_identity

    stored = _stored_section(meta, "data")  # with the settings of old runs filled in (`stored_recipe`)
    for name in TOKEN_IDENTITY:
        if name in stored and token_identity(name, getattr(data, name)) != token_identity(name, stored[name]):
            raise UserError(f"train.init={spec} was trained on tokens of data.{name}={stored[name]}, this recipe "
                            f"makes them with data.{name}={getattr(data, name)}: set data.{name}={stored[name]}, "
                            "or start from a checkpoint trained on this backbone")
    if "image_size" in stored and data.image_size != stored["image_size"]:
        print_warning(f"data.image_size={data.image_size}: train.init={spec} was trained on tokens of "
                      f"{stored['image_size']} px frames, which its weights learned")
    if "resize" in stored and data.resize != stored["resize"]:
        print_warning(f"data.resize={data.resize}: train.init={spec} was trained on tokens of frames resized "
                      f"with data.resize={stored['resize']}, which its weights learned")


def _check_init_task(data: Any, meta: dict[str, str], spec: str) -> None:
    """Warn when `train.init` was trained on another LVU task than the recipe's.

    Why: LVU's tasks are labels over one pool of movie clips, and a video in one task's train split may be
    in another's test split (genre's train holds 26 of way_speaking's test videos): weights trained on
    those inputs have seen this task's test videos, so its test scores are no longer held out."""
    from s5cli import torchrun_env

    stored = _stored_section(meta, "data")
    if data.dataset != "lvu" or stored.get("dataset") != "lvu" or stored.get("task") in (None, data.task):
        return
    if torchrun_env.rank() != 0:  # every rank checks the checkpoint; one says so
        return
    shared = _lvu_test_videos_seen(data, stored["task"])
    if shared is not None and shared[0] == 0:  # 10 of the 72 task pairs share none
        return
    from s5cli.cli.console import print_warning

    seen = (f"so its weights may have seen {data.task}'s test videos" if shared is None else
            f"and {stored['task']}'s train and val splits hold {shared[0]} of {data.task}'s {shared[1]} test videos")
    print_warning(f"train.init={spec} was trained on LVU task {stored['task']}, this recipe trains "
                  f"data.task={data.task}: LVU tasks share videos, {seen}, so its test scores are not held out; "
                  f"start from a run of {data.task} or of another dataset")


def _check_init_finished(directory: Path, spec: str) -> None:
    """Warn when `train.init` takes the weights of a run that has training left (interrupted, or still running).

    Why: a pretraining run stopped by Ctrl-C at step 5 of 18 left its `latest` there, and `train.init=RUN`
    took those weights with only the usual "weights from train.init" line. From a finetuning run `best/` is
    taken, the best of the epochs it validated: a sound choice in itself, but of only part of the run, so
    it is said too. A run stopped by train.early_stop_patience has finished, and a step checkpoint other
    than the run's latest was named on purpose: neither is warned about.
    """
    from s5cli import torchrun_env

    if torchrun_env.rank() != 0:  # every rank checks the checkpoint; one says so
        return
    unfinished = _unfinished_run(directory)
    if unfinished is None:
        return
    from s5cli.cli.console import print_warning
    from s5cli.train.resume_checks import resume_command

    run_dir, where, best_step, objective = unfinished
    if directory.name == "best":
        at = f" (step {best_step})" if best_step is not None else ""
        these = f"its best/{at} is the best of the epochs validated so far, not of the whole run"
    else:
        these = "these are not its final weights"
    print_warning(f"train.init={spec} {where} (interrupted, or still running?): {these}; finish it first with "
                  f"`{resume_command(run_dir, objective)}`")


def _unfinished_run(directory: Path) -> tuple[Path, str, Any, str] | None:
    """(run folder, where it stopped ("stopped at step 5 of 18"), its best step or None, its train.objective)
    when checkpoint `directory` is its run's `best/` or latest and that run has training left; None
    otherwise, and when any of it cannot be read (a checkpoint from the Hub or copied out of its run holds
    no run to ask; a hand-edited trainer state without `step` is not worth a crash in finetune)."""
    import json

    from s5cli.train.checkpoint import STATE_JSON, STEP_NAME
    from s5cli.train.checkpoint_metadata import read_metadata
    from s5cli.train.checkpoint_paths import checkpoint_dir
    from s5cli.train.loading import stored_recipe
    from s5cli.train.resume_checks import has_training_left

    if directory.name == "best":
        run_dir = directory.parent
    elif directory.parent.name == "checkpoints" and STEP_NAME.fullmatch(directory.name):
        run_dir = directory.parent.parent
    else:
        return None
    try:
        latest = checkpoint_dir(run_dir)
        if directory.name != "best" and latest.resolve() != directory.resolve():
            return None  # an earlier step of the run, named on purpose
        trainer = json.loads((latest / STATE_JSON).read_text(encoding="utf-8"))["trainer"]
        meta = read_metadata(latest)
        recipe = stored_recipe(meta, latest)
        train = recipe["train"]
        if not has_training_left(trainer, int(train["epochs"]), train.get("early_stop_patience")):
            return None
        where = _where_it_stopped(trainer, int(train["epochs"]))
    except (UserError, OSError, ValueError, KeyError, TypeError):
        return None
    return run_dir, where, trainer.get("best_step"), meta.get("objective") or train.get("objective")


def _where_it_stopped(trainer: dict[str, Any], epochs: int) -> str:
    """`stopped at step 5 of 18`: where a run's latest checkpoint stands in the run's planned length (in its
    epochs for a checkpoint from before the planned steps were stored)."""
    planned = int(trainer.get("planned_steps") or 0)
    if planned:
        return f"stopped at step {trainer['step']} of {planned}"
    return f"stopped at step {trainer['step']}, with {trainer['epoch']} of its {epochs} epochs done"


def _lvu_test_videos_seen(data: Any, trained_task: str) -> tuple[int, int] | None:
    """(how many of this task's test videos are in `trained_task`'s train and val splits, test videos); None
    when the split files cannot be read here (the warning then says "may")."""
    from s5cli.data.datasets import lvu

    try:
        def ids(task: str, split: str) -> set[str]:
            return {row.youtube_id for row in lvu.parse_split_file(lvu.annotations_dir(data, task) / task
                                                                   / f"{split}.csv", task)}

        test = ids(data.task, "test")
        return len(test & (ids(trained_task, "train") | ids(trained_task, "val"))), len(test)
    except (UserError, OSError):
        return None


def pretrained_state(model: Any, directory: Path, spec: str, recipe_model: dict[str, Any] | None = None
                     ) -> dict[str, Any]:
    """The weights of an LSMCL (or any s5cli) checkpoint that `model` takes, leaving a head of another shape
    (and an LSMCL checkpoint's untrained head) alone.

    Every weight of the model but its head comes from the checkpoint, and every weight of the checkpoint
    must have a place in the model: only S5's token selection may be left out, with a warning, when the
    model selects no tokens. Why: a checkpoint of more blocks than the recipe's model (pretrained with
    n_blocks=3, finetuned with 1) loaded its first block and dropped the rest without a word.
    `recipe_model` (the recipe's `model` section) lets the error name the settings that differ.
    """
    from s5cli.train.checkpoint_metadata import read_metadata
    from s5cli.train.checkpoint_weights import model_weights, weight_mismatch

    meta = read_metadata(directory)
    state = model_weights(directory, meta)
    if meta.get("objective") == "lsmcl":
        # Pretraining never trains the head: loading it handed every finetuning run the pretraining run's
        # random draw (the same whatever --seed) and counted it as pretrained. The new run draws its own.
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    own = model.state_dict()
    state = {k: v for k, v in state.items() if not (k.startswith("head.") and (k not in own or own[k].shape != v.shape))}
    missing, unused, wrong = weight_mismatch(own, state)
    missing = [k for k in missing if not k.startswith("head.")]
    if unused and not missing and not wrong and all(k.startswith(SELECTION_PREFIXES) for k in unused):
        from s5cli.cli.console import print_warning

        print_warning(f"train.init={spec}: its token selection ({len(unused)} tensors of the guide and mask "
                      f"generator) is left out, as this model {_why_no_selection_weights(model, recipe_model)}; "
                      "the rest is loaded")
        state = {k: v for k, v in state.items() if k in own}
    elif missing or unused or wrong:
        parts = [f"{len(keys)} {what} (e.g. {keys[0]})" for keys, what in (
            (missing, "weights missing"), (unused, "weights without a place"), (wrong, "weights of another shape"))
            if keys]
        differs = _settings_that_differ(meta, recipe_model)
        cause = (f"it was trained with {differs}" if differs
                 else f"it holds a {meta.get('model_name') or 'different'} model of other settings")
        raise UserError(f"train.init={spec} does not fit the recipe's model: {cause}; {', '.join(parts)}: use the "
                        "checkpoint's model settings, or another train.init")
    return state


def _why_no_selection_weights(model: Any, recipe_model: dict[str, Any] | None) -> str:
    """Why a model has no place for a checkpoint's guide and mask generator, naming the setting that decides.

    Why not always "selects no tokens": `model.selector=random` (or uniform) selects tokens, it only has
    nothing learned to select them with."""
    settings = recipe_model or {}
    selector = settings.get("selector")
    if selector == "none":
        return "(model.selector=none) selects no tokens"
    if selector not in (None, "learned"):
        return f"(model.selector={selector}) has no learned selector"
    return f"(model.name={settings.get('name', model.__class__.__name__)}) selects no tokens"


def _settings_that_differ(meta: dict[str, str], recipe_model: dict[str, Any] | None) -> str:
    """`model.n_blocks=2 (recipe: 1), ...` for the weight-shaping settings in which a checkpoint's stored recipe
    and this recipe differ; empty when either is unknown or none differs."""
    if not recipe_model:
        return ""
    stored = _stored_section(meta, "model")
    from s5cli.models.registry import UnknownModelError, canonical_name

    def same(key: str) -> bool:
        if key != "name":
            return stored.get(key) == recipe_model.get(key)
        try:
            return canonical_name(str(stored.get(key))) == canonical_name(str(recipe_model.get(key)))
        except UnknownModelError:
            return False

    keys = [key for key in WEIGHT_SETTINGS if key in stored and key in recipe_model and not same(key)]
    return ", ".join(f"model.{key}={stored[key]} (recipe: {recipe_model[key]})" for key in keys)
