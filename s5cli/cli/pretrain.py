"""`s5 pretrain`: LSMCL self-supervised pretraining (long-short masked contrastive learning)."""

from __future__ import annotations

import typer

from s5cli.cli.help_text import flag


def pretrain(
    recipe: str = typer.Argument(..., help="Recipe YAML, e.g. recipes/pretrain-lsmcl.yaml."),
    overrides: list[str] | None = typer.Argument(None, help="key=value overrides, e.g. train.lsmcl.mask_ratio=0.7"),
    resume: bool = flag(False, "--resume", help="Continue the run in the output folder from its latest checkpoint."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed (overrides train.seed)."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:N or auto (default: auto, cuda if available)."),
    out: str | None = typer.Option(None, "--out", metavar="PATH", help="Run folder (overrides train.out_dir)."),
    quiet: bool = flag(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Pretrain with LSMCL on unlabelled clips; finetune afterwards with train.init=RUN_FOLDER."""
    from s5cli.cli.training import run_training

    run_training(recipe, overrides, "lsmcl", resume, seed, device, out, quiet)
