"""`s5 eval`: score a checkpoint on a dataset split (LVU per-video protocol), or predict one raw video."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from s5cli.cli import eval_video
from s5cli.cli.help_text import flag
from s5cli.io import is_stdout


def evaluate(
    recipe: str | None = typer.Argument(None, help="Recipe YAML: path, bundled name or hf://repo/file (default: the recipe stored in the checkpoint)."),
    overrides: list[str] | None = typer.Argument(None, help="key=value overrides, e.g. eval.split=val"),
    checkpoint: str | None = typer.Option(None, "--checkpoint", "-c", help="Checkpoint folder, run folder or hf://repo (default: RECIPE's train.out_dir; without RECIPE, the last finetune run here)."),
    video: list[Path] | None = typer.Option(None, "--video", help="Predict raw videos end to end instead of a dataset split: a file or a folder of videos, repeatable (windows averaged as for a dataset video)."),
    split: str | None = typer.Option(None, "--split", help="train, val or test (overrides eval.split)."),
    top: int = typer.Option(5, "--top", min=1, help="How many predictions to print for --video."),
    json_out: str | None = typer.Option(None, "--json", help="Also write the metrics (with --video: the predictions) as JSON to this file ('-' = stdout)."),
    revision: str | None = typer.Option(None, "--revision", help="Hub revision when --checkpoint is a Hub repo."),
    seed: int = typer.Option(0, "--seed", help="Random seed (evaluation is deterministic; kept for uniformity)."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:N or auto (default: auto, cuda if available)."),
    quiet: bool = flag(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Top-1/top-5 (classification) or MSE (regression), per video over all windows, with a confusion matrix.

    Also counted: `missing` videos (listed, not under data.root) and `broken` ones (could not be decoded).
    Regression values are on the target's own scale (LVU: like ratio x10, ln(view count)).

    With --video, predict raw videos instead (the backbone is loaded once for all of them):

      s5 eval -c runs/synthetic --video movie.mp4 --video clips/ --json out.json
    """
    from s5cli.cli.console import stderr, stdout
    from s5cli.errors import UserError
    from s5cli.seeding import seed_everything
    from s5cli.train.distributed import pick_device
    from s5cli.train.job import recipe_objects
    from s5cli.train.loading import load_trained_model, recipe_from_checkpoint, resolve_checkpoint

    seed_everything(seed)
    if recipe is not None and "=" in recipe and not Path(recipe).exists():
        # `s5 eval eval.split=val -c RUN`: an override, not a recipe file; the checkpoint's recipe is used.
        overrides, recipe = [recipe, *(overrides or [])], None
    video_files = eval_video.video_files(video) if video else []  # a mistyped path is reported before the model loads
    if video_files and split is not None:
        from s5cli.cli.console import print_warning

        print_warning(f"--split {split} is for dataset evaluation; with --video the videos given are scored")
    if json_out is not None and not is_stdout(json_out):
        from s5cli.io import check_output_file

        check_output_file(json_out, "--json", "metrics.json")  # before the evaluation, not after it
    # A recipe is read first: without --checkpoint, its train.out_dir says which run to score.
    given = None if recipe is None else recipe_objects(recipe, overrides, None, check_paths=not video_files)
    if checkpoint is None:
        checkpoint = _default_checkpoint(given, recipe, overrides or [])
    dev = pick_device(device)
    directory = resolve_checkpoint(checkpoint, revision)  # the folder scored: runs/x means runs/x/best
    model, stored_recipe, meta = load_trained_model(directory)
    _refuse_model_changes(overrides or [], stored_recipe, checkpoint)
    if meta.get("objective") == "lsmcl":
        raise UserError(
            f"{checkpoint} is an LSMCL pretraining checkpoint, whose classifier head was never trained: "
            f"finetune it first (s5 finetune RECIPE train.init={checkpoint}) and evaluate that run"
        )
    model.to(dev)
    # A recipe given is used as it is (one raw video needs its decoding settings, not its dataset here).
    rec = given if given is not None else recipe_from_checkpoint(stored_recipe, overrides,
                                                                 source=f"{checkpoint}'s recipe")
    # The task before the model section: a recipe for another dataset differs in its model too, and its
    # six-setting warning came before the refusal that says what is wrong.
    _refuse_another_task(rec.data, stored_recipe.get("data", {}), checkpoint, _checkpoint_kind(meta))
    if given is not None:
        _warn_model_section_ignored(rec, stored_recipe.get("model", {}), recipe, checkpoint)
    _check_token_settings(rec.data, stored_recipe.get("data", {}), checkpoint)
    # With --json - stdout carries only the JSON (pipe-able); the human-readable tables go to stderr.
    console = stderr if is_stdout(json_out) else stdout
    failed: list[dict] = []
    if video_files:
        task = _video_task(rec, meta, checkpoint)
        videos = eval_video.predict_videos(model, rec, task, video_files, dev, top, quiet, console)
        failed = [entry for entry in videos if "error" in entry]
        # One object for one video file named; a list whenever a folder or several were asked for, so a
        # script reading a folder's results does not meet another shape when the folder holds one video.
        one_file = len(video) == 1 and not Path(video[0]).is_dir()
        result = videos[0] if one_file and len(videos) == 1 else {"videos": videos}
    else:
        task = _task_that_fits(rec, int(meta["num_outputs"]), checkpoint)
        _warn_other_class_names(task, meta, rec.data.dataset, checkpoint)
        shift = _label_shift(task, meta)
        result = {"checkpoint": str(directory),
                  **_evaluate_split(model, rec, task, split or rec.eval.split, dev, quiet, shift)}
        _print_metrics(console, checkpoint, result)
    if json_out:
        text = json.dumps(result, indent=1)
        if is_stdout(json_out):
            typer.echo(text)
        else:
            from s5cli.io import atomic_write_text

            atomic_write_text(json_out, text + "\n", follow_symlinks=True)
    if failed:
        from s5cli.errors import RunFailure

        raise RunFailure(f"{len(failed)} of {len(videos)} videos could not be read (first: {failed[0]['error']})")


def _default_checkpoint(rec: Any, recipe: str | None, overrides: list[str]) -> str:
    """What `s5 eval` scores without --checkpoint: with a recipe, its run (train.out_dir after the overrides,
    or the run a RUN/recipe.yaml sits in, as training resolves it; UserError when it holds no checkpoint);
    without one, the last finetune run here.

    Why not always the last run: `s5 eval RECIPE train.out_dir=runs/a` scored whichever run was trained
    last (runs/b), under the name of the metrics the user asked for."""
    from s5cli.errors import UserError
    from s5cli.train.last_run import last_run, stale_last_run

    newest = last_run()
    if rec is None:
        if newest is None:
            raise UserError(stale_last_run() or "no --checkpoint given and no finetune run in this folder: run "
                            "`s5 finetune RECIPE` first")
        return str(newest)  # its best/ (a damaged one refused naming the latest), else its latest
    from s5cli.train.checkpoint_paths import has_checkpoints
    from s5cli.train.run_folder import out_dir_for

    run = out_dir_for(rec, None, recipe, overrides)
    if has_checkpoints(run) or (run / "best").exists():
        return str(run)
    hint = f" (the last finetune run here: --checkpoint {newest})" if newest is not None else ""
    raise UserError(f"train.out_dir={run} holds no checkpoint: train it first, or pass the run to score with "
                    f"--checkpoint{hint}")


def _refuse_another_task(data: Any, stored_data: dict, checkpoint: str, kind: str = "classification") -> None:
    """UserError when the recipe names another dataset or LVU task than the checkpoint was trained on.

    Why: the class count alone was compared, so a genre model evaluated with data.task=relationship (4
    classes each) was scored against relationship's labels under its class names, exit 0. Checkpoints
    whose stored recipe lacks the field are not checked. `kind`: the checkpoint's task kind, so that a
    regression model is not said to output classes."""
    from s5cli.errors import UserError

    outputs = "whose target its output predicts" if kind == "regression" else "whose classes its outputs are"
    for name in ("dataset", "task"):
        if name in stored_data and getattr(data, name) != stored_data[name]:
            raise UserError(f"data.{name}={getattr(data, name)}: {checkpoint} was trained on data.{name}="
                            f"{stored_data[name]}, {outputs}; evaluate it on its own task "
                            f"(omit RECIPE, or set data.{name}={stored_data[name]})")


def _checkpoint_kind(meta: dict) -> str:
    """"regression" or "classification": the checkpoint's stored task, else its output count (a classifier
    has at least two classes, a regression head one output)."""
    from s5cli.train.checkpoint_metadata import stored_task

    stored = stored_task(meta)
    if stored is not None:
        return stored["kind"]
    return "regression" if int(meta.get("num_outputs", 0)) == 1 else "classification"


def _warn_other_class_names(task: Any, meta: dict, dataset: str, checkpoint: str) -> None:
    """One warning when the checkpoint stored other class names than the recipe's task gives (other split
    files of the same dataset): the metrics compare labels by index, which then mean other classes."""
    from s5cli.cli.console import print_warning
    from s5cli.train.checkpoint_metadata import stored_task

    stored = stored_task(meta)
    trained = stored.get("class_names") if stored is not None else None
    if not trained or not task.class_names or trained == list(task.class_names):
        return
    index = next((i for i, (a, b) in enumerate(zip(trained, task.class_names, strict=False)) if a != b),
                 min(len(trained), len(task.class_names)))
    shown = trained[index] if index < len(trained) else "(none)"
    here = task.class_names[index] if index < len(task.class_names) else "(none)"
    print_warning(f"{checkpoint} names its classes unlike the recipe's {dataset} task (class {index}: "
                  f"{shown!r} trained, {here!r} here): the metrics count labels by index; check that these "
                  "are the split files it was trained on")


# Settings that decide what a token is (another backbone: other features, maybe another width) and settings
# that only change which frames are seen and at what size (the model runs, on inputs it was not trained on).
_TOKEN_SAMPLING = ("image_size", "resize", "frames", "fps", "window_seconds")


def _check_token_settings(data: Any, stored_data: dict, checkpoint: str) -> None:
    """UserError when the tokens would come from another backbone than the checkpoint's; one warning when they
    are sampled differently (size, frames, rate), since the metrics then describe other inputs.

    Why: a recipe file given with -c was used as it was, so another backbone failed deep in the model with
    a bare shape error ("mat1 and mat2 shapes cannot be multiplied"), and data.image_size=128 quietly gave
    top-1 0.37 for a model that scores 0.96 on its own settings."""
    from s5cli.cli.console import print_warning
    from s5cli.data.encode import TOKEN_IDENTITY, token_identity
    from s5cli.errors import UserError

    def differs(name: str) -> bool:
        return name in stored_data and getattr(data, name) != stored_data[name]

    for name in TOKEN_IDENTITY:
        if name in stored_data and token_identity(name, getattr(data, name)) != token_identity(
                name, stored_data[name]):
            raise UserError(f"data.{name}={getattr(data, name)}: {checkpoint} was trained on tokens of "
                            f"data.{name}={stored_data[name]}; evaluate with its own (drop the recipe, or set "
                            f"data.{name}={stored_data[name]})")
    changed = [f"data.{name}={getattr(data, name)} (trained: {stored_data[name]})"
               for name in _TOKEN_SAMPLING if differs(name)]
    if changed:
        print_warning(f"{', '.join(changed)}: {checkpoint} is evaluated on inputs sampled unlike its training")


def _warn_model_section_ignored(rec: Any, stored_model: dict, recipe: str, checkpoint: str) -> None:
    """One warning naming the keys where the recipe file's `model:` differs from the checkpoint's model.

    Why: eval always runs the checkpoint's model; a recipe with `keep_ratio: 0.25` evaluated a 0.5 model
    without a word, while the same change as an override is refused (`_refuse_model_changes`)."""
    from s5cli.cli.console import print_warning
    from s5cli.recipe import recipe_to_dict

    given = recipe_to_dict(rec).get("model", {})
    changed = [f"model.{name}={given[name]} (trained: {stored_model[name]})"
               for name in given if name in stored_model and not _same_setting(name, given[name], stored_model[name])]
    if changed:
        print_warning(f"{recipe}: {', '.join(changed)}: eval runs {checkpoint}'s own model as trained (to "
                      "evaluate these settings, train a model with them)")


def _same_setting(name: str, given: Any, trained: Any) -> bool:
    """Whether a model setting equals the trained one; names as registered (a run may store `S5` or `vit`)."""
    if name != "name" or given == trained:
        return given == trained
    from s5cli.models.registry import UnknownModelError, canonical_name

    try:
        return canonical_name(str(given)) == canonical_name(str(trained))
    except UnknownModelError:
        return False


def _refuse_model_changes(overrides: list[str], stored_recipe: dict, checkpoint: str) -> None:
    """UserError for a `model.*` override that differs from the checkpoint's model, which eval cannot change.

    Why: such an override used to be accepted and ignored, so a user comparing `keep_ratio=0.25` at eval
    time got the trained ratio's numbers. One that repeats the trained value (the finetune command line
    reused for eval) is fine, compared as the recipe reads it: `model.dt_min=1e-3` is the trained 0.001,
    `model.name=S5` the trained s5.
    """
    from s5cli.errors import UserError
    from s5cli.recipe import full_override_key, parse_overrides, recipe_to_dict
    from s5cli.train.loading import recipe_from_checkpoint

    stored_model = stored_recipe.get("model") or {}
    items = [item for item in overrides if "=" in item]
    asked = []  # (override as typed, full key, value)
    for item, (key, value) in zip(items, parse_overrides(items), strict=True):
        full = full_override_key({"model": stored_model}, key) or key  # the short form too: keep_ratio=
        if full.startswith("model."):
            asked.append((item, full, value))
    if not asked:
        return
    source = f"{checkpoint}'s recipe"
    trained = recipe_to_dict(recipe_from_checkpoint(stored_recipe, [], source))["model"]
    for item, key, value in asked:
        name = key.split(".", 1)[1]
        if name not in trained:  # a setting of another model (or of none)
            raise UserError(f"override {item}: {checkpoint} is a {trained.get('name')} model, which has no {key}, "
                            "and eval cannot change the model (train one with it: s5 finetune RECIPE ...)")
        if name == "name" and not _same_setting(name, value, trained[name]):
            _refuse_change(key, value, trained[name], checkpoint)
    # The values as the recipe reads them: `1e-3` is the trained 0.001.
    settings = [item for item, key, _ in asked if key != "model.name"]
    changed = recipe_to_dict(recipe_from_checkpoint(stored_recipe, settings, source))["model"] if settings else trained
    for _, key, _ in asked:
        name = key.split(".", 1)[1]
        if changed.get(name) != trained.get(name):
            _refuse_change(key, changed.get(name), trained.get(name), checkpoint)


def _refuse_change(key: str, value: Any, trained: Any, checkpoint: str) -> None:
    """UserError: the override `key=value` asks for another model than the `trained` one."""
    from s5cli.errors import UserError
    from s5cli.recipe import show_value

    raise UserError(f"override {key}={show_value(value)}: {checkpoint} was trained with {key}={show_value(trained)}, "
                    "and eval cannot change the model (train one with it: s5 finetune RECIPE ...)")


def _task_that_fits(rec, num_outputs: int, checkpoint: str):
    """The recipe's task (read once: LVU parses every split file for it); UserError when it has another
    number of classes than the model, whose scores would then be noise."""
    from s5cli.data.datasets import task_info
    from s5cli.errors import UserError

    task = task_info(rec.data)
    if task.num_outputs != num_outputs:
        raise UserError(
            f"{checkpoint} has {num_outputs} outputs, but the recipe's {rec.data.dataset} task has "
            f"{task.num_outputs}: evaluate with the recipe it was trained with (omit RECIPE to use it)"
        )
    return task


def _video_task(rec, meta: dict, checkpoint: str):
    """What the model's outputs mean for --video: the task stored in the checkpoint (its class names travel
    with it, so a downloaded LVU model needs no split files), else the recipe's (older checkpoints)."""
    from s5cli.data.datasets.base import TaskInfo
    from s5cli.train.checkpoint_metadata import stored_task

    stored = stored_task(meta)
    if stored is None or stored["num_outputs"] != int(meta["num_outputs"]):
        return _task_that_fits(rec, int(meta["num_outputs"]), checkpoint)
    offset = stored["target_offset"]
    if offset is None and stored["kind"] == "regression":
        offset = _recipe_offset(rec, checkpoint)
    return TaskInfo(stored["kind"], stored["num_outputs"], stored["class_names"], target_offset=offset or 0.0)


def _recipe_offset(rec, checkpoint: str) -> float:
    """A regression checkpoint from before the offset was stored: the recipe's split files give it, else
    the predictions stay centred (with a warning saying so)."""
    from s5cli.cli.console import print_warning
    from s5cli.data.datasets import task_info
    from s5cli.errors import UserError

    try:
        return task_info(rec.data).target_offset
    except (UserError, OSError):
        print_warning(f"{checkpoint} predates stored target offsets and the recipe's split files are not "
                      "here: predictions are centred on the training mean, not on the target's own scale")
        return 0.0


def _label_shift(task, meta: dict) -> float:
    """What to add to the split's regression labels so that they are centred as the checkpoint's outputs are.

    Why: the labels are centred by the mean of the eval recipe's train.csv, the outputs by the one the model
    was trained with (stored in the checkpoint); a copy of the split files with another train.csv changed
    the MSE of the same model on the same videos and targets. Shifted, the MSE is that of prediction +
    stored offset against the raw target. A checkpoint from before the offset was stored: 0 (the recipe's
    offset is taken to be the trained one, as before)."""
    from s5cli.train.checkpoint_metadata import stored_task

    stored = stored_task(meta)
    if task.kind != "regression" or stored is None or stored["target_offset"] is None:
        return 0.0
    return task.target_offset - float(stored["target_offset"])


def _shifted(records, shift: float) -> list:
    """`records` with `shift` added to each label (the records themselves unchanged); `records` for 0."""
    from dataclasses import replace

    if not shift:
        return records
    return [replace(record, label=record.label + shift) for record in records]


def _evaluate_split(model, rec, task, split: str, dev, quiet: bool, label_shift: float = 0.0) -> dict:
    """The metrics of `split`; `label_shift` is added to each regression label first (`_label_shift`)."""
    from s5cli.data.cache import TokensLost
    from s5cli.errors import RunFailure
    from s5cli.train.data import prepare_splits, token_dataset
    from s5cli.train.distributed import DistContext
    from s5cli.train.evaluation import evaluate as run_eval

    records = prepare_splits(rec.data, (split,), DistContext(device=dev), show_progress=not quiet)
    if not records[split]:
        from s5cli.errors import UserError

        raise UserError(f"the {split} split of {rec.data.dataset} has no videos: evaluate another split "
                        "(--split train|val|test)")
    listed = records[split]
    dataset = token_dataset(rec.data, _shifted(listed, label_shift), training=False, stride=rec.eval.window_stride)
    try:
        metrics = run_eval(model, dataset, task, rec.eval.batch_size, dev, rec.eval.aggregate,
                           show_progress=not quiet, num_workers=rec.data.num_workers,
                           prefetch_batches=rec.data.prefetch_batches, amp=rec.train.amp)
    except TokensLost as lost:
        raise RunFailure(f"{lost}: run the same command again; it extracts missing tokens first") from None
    metrics["split"] = split
    # Not scored: videos the split names but data.root lacks (`missing`, as `s5 extract` counts them), and
    # videos on disk whose tokens could not be made (`broken`: undecodable, reported while extracting).
    metrics["missing"] = len(getattr(listed, "missing", []))
    metrics["broken"] = dataset.num_missing
    if task.class_names:
        metrics["class_names"] = task.class_names
    return metrics


def _print_metrics(console, checkpoint: str, metrics: dict) -> None:
    from rich.table import Table

    table = Table(title=f"{checkpoint} on {metrics.get('split')}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("top1", "top5", "mse", "count", "windows", "missing", "broken", "nonfinite", "nonfinite_windows"):
        if key in metrics:
            value = metrics[key]
            shown = "not finite" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)
            table.add_row(key, shown)
    console.print(table)
    matrix = metrics.get("confusion_matrix")
    if matrix and len(matrix) <= 20:
        conf = Table(title="confusion matrix (rows: true, columns: predicted)")
        conf.add_column("")
        for j in range(len(matrix)):
            conf.add_column(str(j), justify="right")
        for i, row in enumerate(matrix):
            conf.add_row(str(i), *[str(v) for v in row])
        console.print(conf)
