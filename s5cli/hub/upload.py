"""Push recipes and checkpoints to the Hub: create the repo if needed, one commit with a generated card."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from s5cli.errors import UserError
from s5cli.hub.client import hub_errors, hub_settings, require_token
from s5cli.hub.paths import SCHEME, check_repo_path, is_repo_id, parse_hub_spec


@dataclass
class PushResult:
    """What one push did: the repo, the commit and the files in it (and, for a checkpoint, which folder)."""

    repo_id: str
    revision: str
    commit_url: str
    files: list[str]
    source: Path | None = None  # the checkpoint folder pushed: a run folder stands for one of its checkpoints


def _check_repo_id(repo_id: str) -> None:
    if not is_repo_id(repo_id):
        raise UserError(f"{repo_id!r} is not a Hub repo id: use OWNER/NAME (letters, digits, - _ .)")


def _api(action: str):
    from huggingface_hub import HfApi

    settings = hub_settings()
    if settings.offline:
        raise UserError(f"{action}: offline (HF_HUB_OFFLINE=1), nothing can be pushed: unset HF_HUB_OFFLINE")
    return HfApi(endpoint=settings.endpoint, token=require_token(action))


def commit_files(
    repo_id: str, files: dict[str, Path | bytes], *, message: str, private: bool = False,
    revision: str | None = None, readme: str | None = None, readme_if_missing: bool = False, action: str = "push",
) -> PushResult:
    """Create `repo_id` if needed (and branch `revision`), then upload `files` {path in repo: source} in one commit."""
    from huggingface_hub import CommitOperationAdd

    _check_repo_id(repo_id)
    for name in files:
        check_repo_path(name, where=repo_id, uploading=True)
    api = _api(action)
    branch = revision or "main"
    with hub_errors(repo_id, branch, writing=True):
        api.create_repo(repo_id, private=True if private else None, exist_ok=True)
        if branch != "main":
            api.create_branch(repo_id, branch=branch, exist_ok=True)
        files = dict(files)
        if readme is not None and not (readme_if_missing and api.file_exists(repo_id, "README.md", revision=branch)):
            files["README.md"] = readme.encode("utf-8")
        operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=source if isinstance(source, bytes)
                                         else str(source)) for name, source in files.items()]
        info = api.create_commit(repo_id, operations=operations, commit_message=message, revision=branch)
    return PushResult(repo_id, branch, str(info.commit_url), sorted(files))


def recipe_hub_target(
    hub: dict[str, Any] | None, repo_id: str | None, revision: str | None, source: str
) -> tuple[str, str | None]:
    """(repo, revision) to push to: the ones given, else the recipe's `hub.repo_id` / `hub.revision`.

    `hub` is the recipe's hub section as a dict (None if it has none); `source` names the recipe in errors.
    """
    hub = hub or {}
    if repo_id and repo_id.startswith(SCHEME):  # hf://OWNER/NAME[@REV], the form pull and eval take
        spec = parse_hub_spec(repo_id, revision)
        if spec.path:
            raise UserError(f"{repo_id}: push to a repo (hf://OWNER/NAME), not to a path inside it")
        repo_id, revision = spec.repo_id, spec.revision
    repo_id = repo_id or hub.get("repo_id")
    if not repo_id:
        raise UserError(f"no Hub repo given and {source} sets no hub.repo_id: pass OWNER/NAME")
    return repo_id, revision or hub.get("revision")


def push_recipe(
    recipe_path: str | Path, repo_id: str | None, *, private: bool = False, message: str | None = None,
    revision: str | None = None, path_in_repo: str | None = None,
) -> PushResult:
    """Validate a local recipe, then upload it unchanged (plus a README card if the repo has none).

    `repo_id` None means the recipe's own `hub.repo_id` (and `hub.revision` unless `revision` is given).
    """
    from s5cli.hub.card import recipe_card
    from s5cli.recipe import load_recipe, recipe_to_dict, resolve_recipe_spec

    path = Path(resolve_recipe_spec(str(recipe_path)))  # a bundled name such as `synthetic` works too
    recipe = load_recipe(path)  # refuse to publish a recipe that would not load
    resolved = recipe_to_dict(recipe)
    repo_id, revision = recipe_hub_target(resolved["hub"], repo_id, revision, str(path))
    name = path_in_repo or path.name
    if not name.endswith((".yaml", ".yml")):
        raise UserError(f"{name}: recipes are pushed as .yaml files (pass --path-in-repo NAME.yaml)")
    card = recipe_card(repo_id, resolved, name, revision)
    return commit_files(
        repo_id, {name: path.read_bytes()}, message=message or f"Add recipe {name} (s5cli)", private=private,
        revision=revision, readme=card, readme_if_missing=True, action="s5 recipes push",
    )


def checkpoint_source(path: str | Path, *, with_optimizer: bool = False) -> Path:
    """The checkpoint folder to publish: the folder itself, or a run's best/ (else its latest checkpoint).

    With `with_optimizer`, a run folder means its latest step checkpoint instead: the trainer writes best/
    with weights and metrics only, so the step checkpoints are the only resumable copies a run has.
    """
    from s5cli.train.checkpoint import MODEL_FILE, checkpoint_dir, run_best_checkpoint

    path = Path(path).expanduser()
    if (path / MODEL_FILE).is_file():
        return path
    if with_optimizer and path.is_dir():
        return latest_step_checkpoint(path)
    return run_best_checkpoint(path) or checkpoint_dir(path)


def latest_step_checkpoint(run_dir: Path) -> Path:
    """The step checkpoint `run_dir/latest` names, else the newest checkpoints/step-*; UserError if none.

    The fallback covers a run copied without its `latest` file; the order is the one `--resume` tries.
    """
    from s5cli.train.checkpoint import latest_checkpoint, step_checkpoints

    latest = latest_checkpoint(run_dir) or next(iter(step_checkpoints(run_dir)), None)
    if latest is None:
        raise UserError(f"{run_dir} has no step checkpoint (checkpoints/step-*), the only place a run keeps its "
                        "trainer state: push without --with-optimizer (best/ weights only)")
    return latest


def _check_inside(source: Path, file: Path) -> None:
    """UserError unless `file` is a regular file of the checkpoint folder itself, not reached through a link.

    Why: a checkpoint in a shared folder whose metrics.json or trainer_state.json was a symlink to the
    user's ~/.docker/config.json or an SSH key uploaded that file to the Hub (possibly a public repo).
    """
    if file.is_symlink() or not file.resolve().is_relative_to(source.resolve()) or not file.is_file():
        raise UserError(f"{file} is a link or lies outside the checkpoint {source}: s5 push uploads only the "
                        "files s5cli wrote there (replace the link by the file, or push another checkpoint)")


def push_checkpoint(
    path: str | Path, repo_id: str | None, *, private: bool = False, message: str | None = None,
    revision: str | None = None, with_optimizer: bool = False,
) -> PushResult:
    """Upload a checkpoint's safetensors + JSON, its resolved recipe.yaml and a generated model card.

    `repo_id` None means the `hub.repo_id` of the recipe the checkpoint was trained with. A run folder means
    its best/, or with `with_optimizer` its latest step checkpoint (see `checkpoint_source`).
    """
    from s5cli.hub.card import checkpoint_card
    from s5cli.recipe import dump_recipe
    from s5cli.train.checkpoint import METRICS_FILE, MODEL_FILE, STATE_JSON, STATE_TENSORS, read_metadata

    source = checkpoint_source(path, with_optimizer=with_optimizer)
    metadata = read_metadata(source)
    from s5cli.train.loading import stored_recipe

    trained_with = stored_recipe(metadata, source)
    repo_id, revision = recipe_hub_target(trained_with.get("hub"), repo_id, revision,
                                          f"the recipe of checkpoint {source}")
    files: dict[str, Path | bytes] = {MODEL_FILE: source / MODEL_FILE}
    metrics = None
    if (source / METRICS_FILE).is_file():
        files[METRICS_FILE] = source / METRICS_FILE
    if with_optimizer:
        missing = [n for n in (STATE_TENSORS, STATE_JSON) if not (source / n).is_file()]
        if missing:
            raise UserError(f"{source} has no {missing[0]}: push without --with-optimizer (weights only)")
        files[STATE_TENSORS] = source / STATE_TENSORS
        files[STATE_JSON] = source / STATE_JSON
    for file in files.values():  # before anything is read from them (metrics go into the model card)
        if isinstance(file, Path):
            _check_inside(source, file)
    if METRICS_FILE in files:
        try:
            metrics = json.loads((source / METRICS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise UserError(f"{source / METRICS_FILE}: not valid JSON ({error})") from None
    if with_optimizer:
        try:
            json.loads((source / STATE_JSON).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise UserError(f"{source / STATE_JSON} is not the trainer state s5cli writes: push without "
                            "--with-optimizer, or push a checkpoint s5cli wrote") from None
    if trained_with:
        files["recipe.yaml"] = dump_recipe(trained_with, f"Resolved s5cli recipe of {repo_id}").encode("utf-8")
    card = checkpoint_card(repo_id, metadata, metrics if isinstance(metrics, dict) else None, revision)
    step = metadata.get("step", "?")
    result = commit_files(
        repo_id, files, message=message or f"Upload {metadata.get('model_name', 'model')} checkpoint (step {step})",
        private=private, revision=revision, readme=card, action="s5 push",
    )
    return replace(result, source=source)
