"""`s5 push`: upload a checkpoint (or a run's best checkpoint) to the Hugging Face Hub with a model card."""

from __future__ import annotations

from pathlib import Path

import typer

from s5cli.cli.help_text import flag


def push(
    # A str, not a Path: a Path folds `//`, and an hf:// address given by mistake was then printed as hf:/...
    checkpoint: str = typer.Argument(
        ..., help="Checkpoint folder, or a run folder (pushes best/, else latest; with --with-optimizer, the "
        "latest step checkpoint)."),
    repo_id: str | None = typer.Argument(
        None, help="Hub repo OWNER/NAME, created if it does not exist (default: hub.repo_id of the "
        "checkpoint's recipe)."),
    private: bool = flag(False, "--private", help="Create the repo as private; refused if it exists and is public."),
    message: str | None = typer.Option(None, "--message", "-m", help="Commit message."),
    revision: str | None = typer.Option(
        None, "--revision", help="Branch to commit to, created if missing. Default: the recipe's hub.revision "
        "when the push goes to its hub.repo_id (REPO_ID omitted or that repo), otherwise main."),
    with_optimizer: bool = flag(
        False, "--with-optimizer", help="Also upload trainer_state.* (optimizer + RNG), so training can resume. "
        "A run folder then pushes its latest step checkpoint, not best/ (best/ keeps weights only)."
    ),
) -> None:
    """Upload model.safetensors, metrics.json, the resolved recipe.yaml and a generated README.md model card.

    One commit, from a still copy of the checkpoint (safe while training runs). Checkpoint files of an
    earlier push that this one does not upload (trainer_state.* without --with-optimizer, an old
    metrics.json) are deleted in that commit; other files in the repo are kept. Needs a token: set
    HF_TOKEN or run `hf auth login`. Pickle files are never uploaded.
    """
    from s5cli.cli.console import stderr, stdout
    from s5cli.hub import push_checkpoint

    result = push_checkpoint(checkpoint, repo_id, private=private, message=message, revision=revision,
                             with_optimizer=with_optimizer)
    # A run folder stands for one of its checkpoints; with --with-optimizer not the best/ one, so say which.
    given = Path(checkpoint).expanduser()
    which = "the latest step checkpoint " if with_optimizer and given.is_dir() and result.source != given else ""
    stderr.print(f"pushed {which}{result.source} ({len(result.files)} files) to "
                 f"{result.repo_id}@{result.revision}: {', '.join(result.files)}")
    if result.deleted:  # said, so that a file missing from the repo afterwards is no surprise
        stderr.print(f"removed {', '.join(result.deleted)} of an earlier push (not part of this checkpoint)")
    stdout.print(result.commit_url, soft_wrap=True)
