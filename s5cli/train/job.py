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
    from s5cli.train import checkpoint as ckpt

    meta = ckpt.read_metadata(directory)
    _check_init_tokens(recipe.data, meta, spec)
    _check_init_task(recipe.data, meta, spec)
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
    from s5cli.train import checkpoint as ckpt

    meta = ckpt.read_metadata(directory)
    state = ckpt.model_weights(directory, meta)
    if meta.get("objective") == "lsmcl":
        # Pretraining never trains the head: loading it handed every finetuning run the pretraining run's
        # random draw (the same whatever --seed) and counted it as pretrained. The new run draws its own.
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    own = model.state_dict()
    state = {k: v for k, v in state.items() if not (k.startswith("head.") and (k not in own or own[k].shape != v.shape))}
    missing, unused, wrong = ckpt.weight_mismatch(own, state)
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


def save_run_recipe(recipe: Any, out_dir: Path) -> None:
    """Write RUN/recipe.yaml with train.out_dir set to the run folder itself.

    So `s5 finetune RUN/recipe.yaml --resume` continues that run, not the recipe's original folder. Only
    this file says where the run lives: the recipe inside its checkpoints keeps train.out_dir as given, so
    two runs of the same recipe and seed in different folders still write byte-identical checkpoints.
    """
    import copy

    from s5cli.recipe import save_recipe

    located = copy.deepcopy(recipe)
    located.train.out_dir = str(out_dir)
    save_recipe(located, out_dir / "recipe.yaml")


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
    marker = Path(".s5") / "last_run"
    if not marker.is_file():
        return None
    try:
        path = Path(marker.read_text(encoding="utf-8").strip())
    except UnicodeDecodeError:  # not written by s5cli: as if there were none
        return None
    return path if str(path) not in ("", ".") and (path / "latest").is_file() else None
