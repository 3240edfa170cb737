"""`s5 pretrain`: LSMCL self-supervised pretraining (long-short masked contrastive learning)."""

from __future__ import annotations

import typer

from s5cli.cli.help_text import flag


def pretrain(
    recipe: str = typer.Argument(
        ..., help="Recipe YAML (path, bundled name like 'pretrain-lsmcl', or hf://repo/file)."),
    overrides: list[str] | None = typer.Argument(None, help="key=value overrides, e.g. train.lsmcl.mask_ratio=0.7"),
    resume: bool = flag(False, "--resume", help="Continue the run in the output folder from its latest checkpoint."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed (overrides the recipe file's train.seed; with a train.seed= override of another value it is refused)."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:N or auto (default: auto, cuda if available)."),
    out: str | None = typer.Option(None, "--out", metavar="PATH", help="Run folder (overrides the recipe file's train.out_dir; with a train.out_dir= override of another folder it is refused)."),
    quiet: bool = flag(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Pretrain with LSMCL on unlabelled clips; finetune afterwards with train.init=RUN_FOLDER.

    Labels are not read and no validation runs (no best/ folder: train.init takes the run's latest
    checkpoint). To try it on the bundled task:

      s5 pretrain recipes/pretrain-lsmcl.yaml

    then finetune from it with the command in that recipe's header: recipes/synthetic.yaml on the same
    videos (data.synthetic.shared_background=true), with train.init=runs/pretrain-lsmcl, into a run
    folder of its own (--out runs/lsmcl-init).

    Under torchrun the same command trains with DDP (keys gathered from every process):

      torchrun --nproc-per-node 2 -m s5cli pretrain recipes/pretrain-lsmcl.yaml
    """
    from s5cli.cli.training import run_training

    run_training(recipe, overrides, "lsmcl", resume, seed, device, out, quiet)
