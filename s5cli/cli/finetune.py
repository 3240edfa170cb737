"""`s5 finetune`: supervised training of S5 (or a baseline) from a recipe."""

from __future__ import annotations

import typer

from s5cli.cli.help_text import flag


def finetune(
    recipe: str = typer.Argument(..., help="Recipe YAML (path, bundled name like 'synthetic', or hf://repo/file)."),
    overrides: list[str] | None = typer.Argument(None, help="key=value overrides, e.g. optim.lr=3e-4 model.keep_ratio=0.5"),
    resume: bool = flag(False, "--resume", help="Continue the run in the output folder from its latest checkpoint."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed (overrides the recipe file's train.seed; with a train.seed= override of another value it is refused)."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:N or auto (default: auto, cuda if available)."),
    out: str | None = typer.Option(None, "--out", metavar="PATH", help="Run folder (overrides the recipe file's train.out_dir; with a train.out_dir= override of another folder it is refused)."),
    quiet: bool = flag(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Train a video model on labelled data (to try it: the bundled recipes/synthetic.yaml).

    Start from an LSMCL checkpoint with train.init=PATH_OR_HUB_ID. Under torchrun the same command trains
    with DDP:

      torchrun --nproc-per-node 2 -m s5cli finetune recipes/synthetic.yaml
    """
    from s5cli.cli.training import run_training

    run_training(recipe, overrides, "supervised", resume, seed, device, out, quiet)
