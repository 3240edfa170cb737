"""What `s5 pretrain` and `s5 finetune` share: recipe → data → model → the one trainer → summary."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from s5cli.train.loop import TrainSetup


def run_training(recipe_path: str, overrides: list[str] | None, objective: str, resume: bool, seed: int | None,
                 device: str | None, out: str | Path | None, quiet: bool) -> dict:
    """Run pretraining or finetuning from a recipe and print a summary; returns the final metrics.

    `out` comes as typed (a str): typer would turn `--out ""` into Path("."), and the run was written
    into the working folder."""
    from s5cli.cli.console import stderr, stdout
    from s5cli.errors import UserError
    from s5cli.recipe import recipe_to_dict
    from s5cli.seeding import seed_everything
    from s5cli.train import batching, init_weights, job, last_run, resume_checks, run_folder, run_recipe
    from s5cli.train.checkpoint_paths import holds_weights_to_resume
    from s5cli.train.checkpoint_weights import load_into
    from s5cli.train.data import prepare_splits, token_dataset
    from s5cli.train.distributed import init_distributed
    from s5cli.train.loop import TrainSetup, train
    from s5cli.train.run_lock import hold_run_folder, release_run_folder

    # The command decides the objective; validating with it applies its own cross-checks (early stopping
    # is fine when finetuning from a pretraining recipe, refused when pretraining).
    if out is not None and not str(out).strip():
        raise UserError('--out "" names no folder: give the run folder, e.g. --out runs/mine')
    _check_objective(recipe_path, overrides or [], objective)
    injected = f"train.objective={objective}"
    recipe = job.recipe_objects(recipe_path, [*(overrides or []), injected], seed)
    recipe.overrides = _without_last(recipe.overrides, injected)
    if recipe.data.dataset == "synthetic" and recipe.data.synthetic.num_train == 0:
        # Before any work: it was found only when the train split came back empty, after the val split's
        # videos were made and their tokens extracted (the recipe check cannot tell a training command).
        raise UserError("data.synthetic.num_train=0: there is nothing to train on (set it to at least 1)")
    out_dir = run_folder.out_dir_for(recipe, None if out is None else Path(out), recipe_path, overrides or [])
    run_folder.check_run_folder(out_dir)
    ctx = None
    try:
        # The process group first: checks that fail on some ranks only (rank 0 alone takes the lock) then
        # stop every rank at once instead of leaving the others waiting for the failed one.
        ctx = init_distributed(device)
        problem = None
        try:
            # Before the fresh-run check: a second launch seconds later found no run yet.
            # Before the lock, the folder and any data work: it needs only the recipe and the process count.
            batching.check_batch_split(recipe, objective, ctx)
            hold_run_folder(out_dir)
            run_folder.check_fresh_run(out_dir, resume)
            if resume:
                resume_checks.check_resume_recipe(out_dir, recipe)
        except Exception as error:  # re-raised by stop_together, on every rank
            problem = error
        ctx.stop_together(problem)
        # train.init starts a new run: also under --resume while the folder has no checkpoint with weights
        # yet (a preemptible job's first start, one killed before its first checkpoint, or one whose
        # checkpoints were deleted and only `latest` is left).
        continues = resume and holds_weights_to_resume(out_dir)
        # Before data work that would serve no step; every rank must agree (each reads the checkpoint).
        ends = ctx.gather_objects(resume_checks.run_end(out_dir, recipe) if continues else None)
        if all(end is not None for end in ends):
            if ctx.is_main:
                stderr.print(f"nothing left to train: {out_dir} {ends[0]}", soft_wrap=True)
                _summary(stdout, out_dir, _last_validation(out_dir / "metrics.jsonl"))
            return {}
        init_dir = init_weights.resolve_init(recipe.train.init) if recipe.train.init and not continues else None
        init_state = init_weights.check_init(recipe, init_dir, recipe.train.init) if init_dir is not None else None
        seed_everything(recipe.train.seed)
        # Pretraining reads no validation: its videos are not extracted (a ViT-L pass over LVU's val split,
        # and a damaged val video could stop a run that never uses it).
        splits = ("train", "val") if objective == "supervised" else ("train",)
        records = prepare_splits(recipe.data, splits, ctx, show_progress=not quiet)
        from s5cli.data.datasets import task_info

        task = task_info(recipe.data)
        frames = None
        if objective == "lsmcl":
            frames = job.lsmcl_config(recipe).long_frames
        train_set = token_dataset(recipe.data, records["train"], training=True, frames=frames)
        val_set = (token_dataset(recipe.data, records["val"], training=False, stride=recipe.eval.window_stride)
                   if objective == "supervised" else None)
        if len(train_set) == 0:
            raise UserError(f"no training videos with cached tokens for {recipe.data.dataset} "
                            f"(data.root={recipe.data.root}): check that data.root holds the videos the train "
                            "split names (missing ones are skipped)")
        job.import_lazy_torch_modules()  # before the optimizer imports them, where a stop signal could abort
        model = job.build_model_from_recipe(recipe, task.num_outputs)
        if init_state is not None:
            load_into(model, init_state, f"train.init={recipe.train.init}", strict=False)
            if ctx.is_main and not quiet:  # the only sign that the weights came from there
                own = model.state_dict()
                new = [name for name in own if name not in init_state]
                rest = f", {len(new)} newly initialised (e.g. {new[0]})" if new else ""
                stderr.print(f"weights from train.init={recipe.train.init} ({init_dir}): "
                             f"{len(own) - len(new)} of {len(own)} tensors{rest}", soft_wrap=True)
        module = model
        if objective == "lsmcl":
            from s5cli.models.lsmcl import LSMCL

            module = LSMCL(model, job.lsmcl_config(recipe))
            if ctx.is_main and (warning := lsmcl_dropout_warning(recipe)):
                from s5cli.cli.console import print_warning

                print_warning(warning)
        recipe_dict = recipe_to_dict(recipe)
        if ctx.is_main:
            try:
                out_dir.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise UserError(f"cannot create run folder {out_dir}: {error.strerror}") from None
            run_recipe.save_run_recipe(recipe, out_dir, resume=resume)
            if not quiet:
                n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
                stderr.print(
                    f"[bold]{objective}[/] {recipe.model.name} ({n_params / 1e6:.2f}M trainable) on {recipe.data.dataset}: "
                    f"{len(train_set)} train clips / {len(val_set) if val_set is not None else 0} val windows, "
                    f"device {ctx.device}, world {ctx.world_size}, run folder {out_dir}"
                )
        if objective == "supervised":  # what eval and visualize-mask fall back to: a trained classifier
            last_run.remember_last_run(out_dir, ctx)
        setup = TrainSetup(
            module=module, model_name=recipe.model.name, num_outputs=task.num_outputs, objective=objective,
            task=task, train_set=train_set, val_set=val_set, recipe=recipe, recipe_dict=recipe_dict,
            out_dir=out_dir, ctx=ctx, seed=recipe.train.seed, resume=resume, show_progress=not quiet,
        )
        metrics = train(setup)
        if ctx.is_main:
            # Counted, not inferred from checkpoint names: a resume that fell back past a damaged newest
            # checkpoint trains up to that step again and rewrites the checkpoint of the same name.
            # A resume that only ran an interrupted validation again did something (and said so, e.g. its
            # early stop): "nothing left to train" would contradict it.
            if resume and setup.steps_run == 0 and setup.validations_run == 0:
                stderr.print(f"nothing left to train: {out_dir} {_why_nothing_was_left(ends[0], recipe, setup)}",
                             soft_wrap=True)
            _summary(stdout, out_dir, metrics)
        return metrics
    finally:
        if ctx is not None:
            ctx.close()
        release_run_folder(out_dir)


def _without_last(overrides: tuple[str, ...], item: str) -> tuple[str, ...]:
    """`overrides` without the last `item`: the override the command added, which RUN/recipe.yaml's header
    listed as if the user had given it (`train.objective=supervised` in every run). One the user typed as
    well, earlier in the list, stays."""
    if item not in overrides:
        return overrides
    last = len(overrides) - 1 - overrides[::-1].index(item)
    return (*overrides[:last], *overrides[last + 1:])


def _why_nothing_was_left(ended: str | None, recipe: Any, setup: TrainSetup) -> str:
    """How a resumed run that trained nothing had ended: `ended`, what `run_end` read from its checkpoint
    before training (a run that trained nothing wrote none since), else what the trainer saw. Why the
    trainer's word: a run whose used-up patience stopped it was said to have "nothing left of its epochs"
    when its checkpoint could not tell."""
    if ended is not None:
        return ended
    patience = recipe.train.early_stop_patience
    if setup.stopped_early:
        return (f"stopped early (train.early_stop_patience={patience} validations in a row without a better "
                "one); raise train.early_stop_patience, or set it to null, to go on")
    return f"had nothing left of its {recipe.train.epochs} epochs"


def _summary(console, out_dir: Path, metrics: dict) -> None:
    """Last-epoch validation metrics beside those of the best checkpoint (what eval and visualize load)."""
    from rich.table import Table

    best = _best_metrics(out_dir / "best" / "metrics.json")
    table = Table(title=f"run {out_dir}", show_header=True)
    table.add_column("metric")
    table.add_column("last epoch", justify="right")
    if best:
        table.add_column("best checkpoint", justify="right")
    # A resumed run with nothing left to do has no new validation: show the best one's numbers.
    for key, value in (metrics or best).items():
        # None: a metric that could not be computed (non-finite outputs), a row all the same.
        if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
            cells = [_format(value, missing="not finite") if metrics else "-"]
            table.add_row(key, *cells, *([_format(best.get(key))] if best else []))
    log = out_dir / "metrics.jsonl"
    last_loss = _last_logged_loss(log)
    if last_loss is not None:  # LSMCL pretraining has no validation: its loss is what there is to show
        table.add_row("train loss (last logged)", _format(last_loss), *(["-"] if best else []))
    top1 = _last_logged(log, lambda record: record.get("contrastive_top1"))
    if top1 is not None:  # LSMCL: how often a clip's own key scored highest (chance: 1 / candidates)
        table.add_row("contrastive top-1 (last logged)", _format(float(top1)), *(["-"] if best else []))
    console.print(table)
    console.print(f"checkpoint: {_checkpoint_to_load(out_dir, bool(best))}")


def _checkpoint_to_load(out_dir: Path, has_best: bool) -> Path:
    """What the summary names for `train.init` and `s5 eval -c`: best/ when validation chose one, else the
    run folder, which both read as its latest checkpoint. Why not RUN/latest: that is the pointer file, and
    both refused it (every pretraining run, which has no best/, printed it)."""
    return out_dir / "best" if has_best else out_dir


def _best_metrics(path: Path) -> dict:
    """best/metrics.json, or {} with a warning when it cannot be read: the summary comes after the training
    it sums up, and a damaged file there turned a finished run's exit 0 into a traceback."""
    if not path.is_file():
        return {}
    try:
        best = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        best = error
    if isinstance(best, dict):
        return best
    from s5cli.cli.console import print_warning

    print_warning(f"{path} is not a JSON object of metrics (damaged?): the summary leaves out the best "
                  "checkpoint's column; `s5 eval` measures that checkpoint again")
    return {}


def _last_validation(log: Path) -> dict:
    """The last validation metrics in metrics.jsonl (`val_top1` -> `top1`), {} when there are none."""
    return _last_logged(log, lambda record: {key[len("val_"):]: value for key, value in record.items()
                                             if key.startswith("val_")} or None) or {}


def _last_logged_loss(log: Path) -> float | None:
    """The training loss of the last record in metrics.jsonl that has one."""
    return _last_logged(log, lambda record: float(record["loss"]) if "loss" in record else None)


def _last_logged(log: Path, pick: Callable[[dict], Any]) -> Any:
    """`pick` of the last record of metrics.jsonl for which it is not None; None without one (or a log)."""
    if not log.is_file():
        return None
    from s5cli.train.metrics_log import read_records

    for record in reversed(read_records(log)[0]):
        found = pick(record)
        if found is not None:
            return found
    return None


def _format(value: object, missing: str = "-") -> str:
    """A summary cell: floats to 4 places, None as `missing`."""
    if isinstance(value, float):
        return f"{value:.4f}"
    return missing if value is None else str(value)


_COMMANDS = {"supervised": "finetune", "lsmcl": "pretrain"}


def _check_objective(recipe_path: str, overrides: list[str], objective: str) -> None:
    """The command, not the recipe, decides the objective; say so where the two disagree.

    Why: the command's `train.objective` replaced the user's silently, so `s5 finetune R train.objective=lsmcl`
    trained the supervised way. An override that disagrees is an error; a recipe file that does (finetuning
    with a pretraining recipe) gets a warning, as that can be meant.
    """
    from s5cli.errors import UserError
    from s5cli.recipe import parse_overrides

    command = _COMMANDS[objective]
    for key, value in parse_overrides(overrides):
        if key in ("train.objective", "objective") and value != objective:
            other = _COMMANDS.get(str(value))
            fix = f"run `s5 {other}` for {value}" if other else "drop the override"
            raise UserError(f"override {key}={value}: `s5 {command}` always trains the {objective} objective ({fix})")
    file_objective = _recipe_file_objective(recipe_path)
    if file_objective is not None and file_objective != objective:
        from s5cli.cli.console import print_warning

        print_warning(f"{recipe_path} sets train.objective: {file_objective}; `s5 {command}` trains the {objective} "
                      f"objective (`s5 {_COMMANDS.get(str(file_objective), 'pretrain')}` runs {file_objective})")


def _recipe_file_objective(recipe_path: str) -> object | None:
    """`train.objective` as written in a local or bundled recipe file; None when unset or not readable here
    (loading the recipe reports a broken file; a Hub recipe is not downloaded twice for a warning)."""
    from s5cli.hub.paths import SCHEME
    from s5cli.recipe import resolve_recipe_spec
    from s5cli.recipe_yaml import peek_recipe_yaml

    if recipe_path.startswith(SCHEME):
        return None
    path = Path(resolve_recipe_spec(recipe_path))
    if not path.is_file():  # a pipe (`<(...)`) can be read once, by the loading itself
        return None
    try:
        raw = peek_recipe_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None
    train = raw.get("train") if isinstance(raw, dict) else None
    return train.get("objective") if isinstance(train, dict) else None


def lsmcl_dropout_warning(recipe: Any) -> str | None:
    """What to say when LSMCL pretrains with channel dropout in its encoders, else None.

    Why: `s5 pretrain recipes/lvu/genre.yaml` takes the finetuning recipe's `model.dropout: 0.2`, and on the
    bundled task any dropout in the query and key encoders kept the loss above log B (the noise was larger
    than what tells two videos apart; benchmarks/README.md). A warning, not a refusal: real videos differ
    more than the bundled ones, and the user may mean it.
    """
    dropout = float(getattr(recipe.model, "dropout", 0.0) or 0.0)
    if dropout <= 0:
        return None
    return (f"model.dropout={dropout:g} while pretraining with LSMCL: on the bundled task any channel dropout in "
            "the two encoders kept the loss at chance, above log B (benchmarks/README.md); set model.dropout=0 for "
            "pretraining (finetuning keeps its own)")
