"""What `s5 pretrain` and `s5 finetune` share: recipe → data → model → the one trainer → summary."""

from __future__ import annotations

from pathlib import Path


def run_training(recipe_path: str, overrides: list[str] | None, objective: str, resume: bool, seed: int | None,
                 device: str | None, out: Path | None, quiet: bool) -> dict:
    """Run pretraining or finetuning from a recipe and print a summary; returns the final metrics."""
    from s5cli.cli.console import stderr, stdout
    from s5cli.recipe import recipe_to_dict, save_recipe
    from s5cli.seeding import seed_everything
    from s5cli.train import job
    from s5cli.train.data import prepare_splits, token_dataset
    from s5cli.train.distributed import init_distributed
    from s5cli.train.loop import TrainSetup, check_fresh_run, train

    recipe = job.recipe_objects(recipe_path, overrides, seed)
    if objective == "lsmcl" and recipe.train.objective != "lsmcl":
        recipe.train.objective = "lsmcl"
    out_dir = job.out_dir_for(recipe, out)
    check_fresh_run(out_dir, resume)
    ctx = init_distributed(device)
    try:
        seed_everything(recipe.train.seed)
        splits = ("train", "val")
        records = prepare_splits(recipe.data, splits, ctx, show_progress=not quiet)
        from s5cli.data.datasets import task_info

        task = task_info(recipe.data)
        frames = None
        if objective == "lsmcl":
            frames = job.lsmcl_config(recipe).long_frames
        train_set = token_dataset(recipe.data, records["train"], training=True, frames=frames)
        val_set = token_dataset(recipe.data, records["val"], training=False) if objective == "supervised" else None
        if len(train_set) == 0:
            from s5cli.errors import UserError

            raise UserError(f"no training videos with cached tokens for {recipe.data.dataset} (data.root={recipe.data.root})")
        model = job.build_model_from_recipe(recipe, task.num_outputs)
        if recipe.train.init and not resume:
            job.init_from_pretrained(model, recipe.train.init)
        module = model
        if objective == "lsmcl":
            from s5cli.models.lsmcl import LSMCL

            module = LSMCL(model, job.lsmcl_config(recipe))
        recipe_dict = recipe_to_dict(recipe)
        if ctx.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            save_recipe(recipe, out_dir / "recipe.yaml")
            if not quiet:
                n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
                stderr.print(
                    f"[bold]{objective}[/] {recipe.model.name} ({n_params / 1e6:.2f}M trainable) on {recipe.data.dataset}: "
                    f"{len(train_set)} train / {len(val_set) if val_set is not None else 0} val clips, "
                    f"device {ctx.device}, world {ctx.world_size}, run folder {out_dir}"
                )
        job.remember_last_run(out_dir, ctx)
        setup = TrainSetup(
            module=module, model_name=recipe.model.name, num_outputs=task.num_outputs, objective=objective,
            task=task, train_set=train_set, val_set=val_set, recipe=recipe, recipe_dict=recipe_dict,
            out_dir=out_dir, ctx=ctx, seed=recipe.train.seed, resume=resume, show_progress=not quiet,
        )
        metrics = train(setup)
        if ctx.is_main:
            _summary(stdout, out_dir, metrics)
        return metrics
    finally:
        ctx.close()


def _summary(console, out_dir: Path, metrics: dict) -> None:
    """Last-epoch validation metrics beside those of the best checkpoint (what eval and visualize load)."""
    import json

    from rich.table import Table

    best_file = out_dir / "best" / "metrics.json"
    best = json.loads(best_file.read_text()) if best_file.is_file() else {}
    table = Table(title=f"run {out_dir}", show_header=True)
    table.add_column("val metric")
    table.add_column("last epoch", justify="right")
    if best:
        table.add_column("best checkpoint", justify="right")
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            cells = [_format(value)] + ([_format(best.get(key))] if best else [])
            table.add_row(key, *cells)
    console.print(table)
    console.print(f"checkpoint: {out_dir / 'best' if best else out_dir / 'latest'}")


def _format(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)
