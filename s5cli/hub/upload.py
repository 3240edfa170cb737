"""Push recipes and checkpoints to the Hub: create the repo if needed, one commit with a generated card."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from s5cli.errors import UserError
from s5cli.hub.client import bounded_requests, hub_errors, hub_settings, request_timeout, require_token
from s5cli.hub.paths import (
    SCHEME,
    check_repo_path,
    hub_address_of_url,
    is_repo_id,
    parse_hub_spec,
    web_address,
)


@dataclass
class PushResult:
    """What one push did: the repo, the commit and the files in it (and, for a checkpoint, which folder)."""

    repo_id: str
    revision: str
    commit_url: str
    files: list[str]
    source: Path | None = None  # the checkpoint folder pushed: a run folder stands for one of its checkpoints
    deleted: list[str] = field(default_factory=list)  # files of an earlier push this commit removed


def _check_repo_id(repo_id: str) -> None:
    if not is_repo_id(repo_id):
        raise UserError(f"{repo_id!r} is not a Hub repo id: use OWNER/NAME (letters, digits, - _ .)")


def _api(action: str):
    from huggingface_hub import HfApi

    settings = hub_settings()
    if settings.offline:
        raise UserError(f"{action}: {settings.offline_reason}, nothing can be pushed: {settings.online_fix}")
    return HfApi(endpoint=settings.endpoint, token=require_token(action))


def commit_files(
    repo_id: str, files: dict[str, Path | bytes], *, message: str, private: bool = False,
    revision: str | None = None, readme: str | None = None, readme_if_missing: bool = False, action: str = "push",
    replaces: Collection[str] = (),
) -> PushResult:
    """Create `repo_id` if needed (and branch `revision`), then upload `files` {path in repo: source} in one commit.

    `replaces`: the names this kind of push owns; those at the revision that `files` lacks are deleted in the
    same commit (see `_stale_deletions`). Other files of the repo are left alone.
    """
    from huggingface_hub import CommitOperationAdd

    _check_repo_id(repo_id)
    for name in files:
        check_repo_path(name, where=repo_id, uploading=True)
    api = _api(action)
    branch = revision or "main"
    with hub_errors(repo_id, branch, writing=True):
        with bounded_requests():  # the requests before the upload: each answered within request_timeout()
            if private:
                _refuse_public(api, repo_id)
            api.create_repo(repo_id, private=True if private else None, exist_ok=True)
            if branch != "main":
                api.create_branch(repo_id, branch=branch, exist_ok=True)
            files = dict(files)
            if readme is not None and not (readme_if_missing and api.file_exists(repo_id, "README.md", revision=branch)):
                files["README.md"] = readme.encode("utf-8")
            parent, deletions = _stale_deletions(api, repo_id, branch, replaces, files) if replaces else (None, [])
        operations: list[Any] = [
            CommitOperationAdd(path_in_repo=name, path_or_fileobj=source if isinstance(source, bytes) else str(source))
            for name, source in files.items()
        ]
        with bounded_requests(answer=False):  # the upload itself may take long: only connecting is bounded
            info = api.create_commit(repo_id, operations=operations + deletions, commit_message=message,
                                     revision=branch, parent_commit=parent)
    return PushResult(repo_id, branch, str(info.commit_url), sorted(files),
                      deleted=[op.path_in_repo for op in deletions])


def _refuse_public(api: Any, repo_id: str) -> None:
    """UserError when `repo_id` exists and is public: `--private` cannot make it private.

    Why: `create_repo(private=True, exist_ok=True)` leaves an existing repo as it is, so `--private` was
    dropped without a word and the files went to a public repo. A repo this token cannot see is left to
    `create_repo` (which then creates it private, or is refused).
    """
    from huggingface_hub import errors as hf

    try:
        info = api.model_info(repo_id, timeout=request_timeout())
    except hf.RepositoryNotFoundError:
        return
    if not info.private:
        raise UserError(f"{repo_id} exists and is public: make it private first (`hf repos settings {repo_id} "
                        "--private`, or its Settings page on the Hub) or push without --private")


def _stale_deletions(
    api: Any, repo_id: str, branch: str, owned: Collection[str], uploading: Collection[str],
) -> tuple[str | None, list[Any]]:
    """(commit the branch is at, deletions of the `owned` names it holds that this push does not upload).

    Why: a commit only adds, so a second push without --with-optimizer kept the first push's trainer_state.*,
    and one without metrics.json its old metrics.json: a download then got the weights of one step beside the
    trainer state of another. The commit is made on top of the listed one (`parent_commit`), so a push that
    lands in between makes this one fail rather than delete from a tree it never saw.
    """
    from huggingface_hub import CommitOperationDelete

    info = api.model_info(repo_id, revision=branch, timeout=request_timeout())
    present = {sibling.rfilename for sibling in info.siblings or []}
    stale = sorted(name for name in owned if name in present and name not in uploading)
    return info.sha, [CommitOperationDelete(path_in_repo=name, is_folder=False) for name in stale]


def recipe_hub_target(
    hub: dict[str, Any] | None, repo_id: str | None, revision: str | None, source: str
) -> tuple[str, str | None]:
    """(repo, revision) to push to: the ones given, else the recipe's `hub.repo_id` with its `hub.revision`.

    `hub.revision` goes with `hub.repo_id` only: it names a branch of that repo, so pushing to a repo named
    on the command line used to land on a branch of the recipe's repo's name there. Another repo means
    main unless a revision is given; the recipe's own repo named there keeps its branch. `hub` is the
    recipe's hub section as a dict (None if it has none); `source` names the recipe in errors.
    """
    hub = hub or {}
    if repo_id and repo_id.startswith(SCHEME):  # hf://OWNER/NAME[@REV], the form pull and eval take
        spec = parse_hub_spec(repo_id, revision)
        if spec.path:
            raise UserError(f"{repo_id}: push to a repo (hf://OWNER/NAME), not to a path inside it")
        repo_id, revision = spec.repo_id, spec.revision
    if repo_id and repo_id != hub.get("repo_id"):
        return repo_id, revision
    if not repo_id and not hub.get("repo_id"):
        raise UserError(f"no Hub repo given and {source} sets no hub.repo_id: pass OWNER/NAME")
    return hub["repo_id"], revision or hub.get("revision")


def push_recipe(
    recipe_path: str | Path, repo_id: str | None, *, private: bool = False, message: str | None = None,
    revision: str | None = None, path_in_repo: str | None = None,
) -> PushResult:
    """Validate a local recipe, then upload it unchanged (plus a README card if the repo has none).

    `repo_id` None means the recipe's own `hub.repo_id` (and its `hub.revision` unless `revision` is given).
    """
    from s5cli.hub.card import recipe_card
    from s5cli.recipe import load_recipe, recipe_to_dict, resolve_recipe_spec

    _refuse_hub_address(str(recipe_path), recipe=True)
    path = Path(resolve_recipe_spec(str(recipe_path)))  # a bundled name such as `synthetic` works too
    recipe = load_recipe(path)  # refuse to publish a recipe that would not load
    resolved = recipe_to_dict(recipe)
    repo_id, revision = recipe_hub_target(resolved["hub"], repo_id, revision, str(path))
    name = path_in_repo or path.name
    if not name.endswith((".yaml", ".yml")):
        raise UserError(f"{name}: recipes are pushed as .yaml files (pass --path-in-repo NAME.yaml)")
    card = recipe_card(repo_id, resolved, name, revision)
    result = commit_files(
        repo_id, {name: path.read_bytes()}, message=message or f"Add recipe {name} (s5cli)", private=private,
        revision=revision, readme=card, readme_if_missing=True, action="s5 recipes push",
    )
    warn_local_paths(resolved, f"{name} pushed to {repo_id}")
    return result


def _refuse_hub_address(source: str, *, recipe: bool) -> None:
    """UserError for an hf:// address given as what to push: a push uploads local files; say how to get them.

    Why: the CLI took the argument as a path, which folds `//`, so `s5 push hf://bob/model erin/x` said
    "checkpoint hf:/bob/model does not exist", naming an address nobody typed. A huggingface.co link is
    read as its hf:// address (the checkpoint error would suggest `hf://...`, which push refuses too).
    """
    if web_address(source) and not Path(source).exists():
        source = hub_address_of_url(source) or source
    if not source.startswith(SCHEME):
        return
    try:
        hub = parse_hub_spec(source)
    except UserError:
        hub = None
    if recipe:
        name = (hub.path if hub else "") or "recipe.yaml"
        raise UserError(f"s5 recipes push takes a local recipe file, not {source}: download it first "
                        f"(s5 recipes pull {source} --dest DIR), then push DIR/{name}")
    download, folder = "hf download OWNER/NAME --local-dir DIR", "DIR"
    if hub is not None:
        download = " ".join([f"hf download {hub.repo_id}", *([f"--revision {hub.revision}"] if hub.revision else []),
                             *([f"--include '{hub.path}/*'"] if hub.path else []), "--local-dir DIR"])
        folder = f"DIR/{hub.path}" if hub.path else "DIR"
    raise UserError(f"s5 push takes a local checkpoint or run folder, not {source}: download it first ({download}), "
                    f"then push {folder}")


def checkpoint_source(path: str | Path, *, with_optimizer: bool = False) -> Path:
    """The checkpoint folder to publish: the folder itself, or a run's best/ (else its latest checkpoint).

    With `with_optimizer`, a run folder means its latest step checkpoint instead: the trainer writes best/
    with weights and metrics only, so the step checkpoints are the only resumable copies a run has.
    """
    from s5cli.train.checkpoint import MODEL_FILE
    from s5cli.train.checkpoint_paths import checkpoint_dir, run_best_checkpoint

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
    from s5cli.train.checkpoint_paths import latest_checkpoint, step_checkpoints

    latest = latest_checkpoint(run_dir) or next(iter(step_checkpoints(run_dir)), None)
    if latest is None:
        raise UserError(f"{run_dir} has no step checkpoint (checkpoints/step-*), the only place a run keeps its "
                        "trainer state: push without --with-optimizer (best/ weights only)")
    return latest


def push_checkpoint(
    path: str | Path, repo_id: str | None, *, private: bool = False, message: str | None = None,
    revision: str | None = None, with_optimizer: bool = False,
) -> PushResult:
    """Upload a checkpoint's safetensors + JSON, its resolved recipe.yaml and a generated model card.

    `repo_id` None means the `hub.repo_id` of the recipe the checkpoint was trained with. A run folder means
    its best/, or with `with_optimizer` its latest step checkpoint (see `checkpoint_source`). The card and
    the files come from one still copy of the checkpoint (`s5cli.hub.snapshot`), so a trainer replacing it
    meanwhile cannot mix two checkpoints in one push; checkpoint files of an earlier push that this one does
    not upload are deleted in the same commit.
    """
    from s5cli.hub.card import checkpoint_card
    from s5cli.hub.checkpoints import CHECKPOINT_FILES
    from s5cli.recipe import dump_recipe
    from s5cli.train.checkpoint import METRICS_FILE
    from s5cli.train.loading import stored_recipe

    _refuse_hub_address(str(path), recipe=False)
    with _snapshot_room(path) as tmp:
        source, copy = _checkpoint_snapshot(path, with_optimizer, Path(tmp))
        metadata = _snapshot_metadata(source, copy)
        trained_with = stored_recipe(metadata, source)
        repo_id, revision = recipe_hub_target(trained_with.get("hub"), repo_id, revision,
                                              f"the recipe of checkpoint {source}")
        files: dict[str, Path | bytes] = {name: copy / name for name in sorted(p.name for p in copy.iterdir())}
        metrics = _read_json(source, copy, METRICS_FILE) if METRICS_FILE in files else None
        if trained_with:
            published = published_recipe(trained_with, repo_id, revision)
            files["recipe.yaml"] = dump_recipe(published, f"Resolved s5cli recipe of {repo_id}").encode("utf-8")
        card = checkpoint_card(repo_id, metadata, metrics if isinstance(metrics, dict) else None, revision)
        step = metadata.get("step", "?")
        result = commit_files(
            repo_id, files, message=message or f"Upload {metadata.get('model_name', 'model')} checkpoint "
            f"(step {step})", private=private, revision=revision, readme=card, action="s5 push",
            replaces=CHECKPOINT_FILES,
        )
    if trained_with:
        warn_local_paths(trained_with, f"recipe.yaml pushed to {repo_id}")
    return replace(result, source=source)


def published_recipe(recipe: dict[str, Any], repo_id: str, revision: str | None) -> dict[str, Any]:
    """The recipe as published with a checkpoint: its hub section names the repo and branch pushed to.

    Why: it kept the hub.repo_id of the recipe the run was trained from, so a run finetuned from
    hf://alice/s5-synth and pushed to erin/from-init published a recipe.yaml headed "of erin/from-init"
    whose hub section sent the next `s5 push` (REPO_ID omitted) to alice's repo.
    """
    return {**recipe, "hub": {**(recipe.get("hub") or {}), "repo_id": repo_id, "revision": revision}}


def local_path_keys(recipe: dict[str, Any]) -> list[str]:
    """The recipe's path keys (data.root, data.cache_dir, ...) whose value is an absolute path: one of this
    machine, meaningless (and maybe telling: user names) on anyone else's."""
    from s5cli.recipe_schema import PATH_KEYS

    keys = []
    for key in sorted(PATH_KEYS):
        section, _, field_name = key.partition(".")
        value = (recipe.get(section) or {}).get(field_name)
        if isinstance(value, str) and _is_absolute_path(value):
            keys.append(key)
    return keys


def _is_absolute_path(value: str) -> bool:
    """`/...`, `\\server\\...` or `C:\\...`/`C:/...`: absolute on POSIX or Windows, whichever machine wrote it."""
    import re

    return value.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:[\\/]", value) is not None


def warn_local_paths(recipe: dict[str, Any], what: str) -> None:
    """One warning naming the keys of a pushed recipe that hold absolute local paths; they are published as
    they are (a recipe is the user's to edit), and readers must override them.

    Why: `s5 push RUN` and `s5 recipes push` published data.root and data.cache_dir such as /home/NAME/...
    without a word.
    """
    keys = local_path_keys(recipe)
    if keys:
        from s5cli.cli.console import print_warning

        print_warning(f"{what} holds absolute paths of this machine ({', '.join(keys)}): readers must override "
                      f"them (e.g. {keys[0]}=PATH); use relative paths or null in the recipe to publish none")


def _snapshot_room(path: str | Path) -> tempfile.TemporaryDirectory:
    """A temporary folder for the still copy, beside `path` (a run or checkpoint folder) where possible.

    Why beside: hard links cannot cross file systems, and runs often live on another one than the system
    temp folder (NFS or Lustre against a tmpfs /tmp), where every file, optimizer state included, was
    copied into RAM or a small disk. The system temp folder is the fallback (a read-only run folder).
    """
    try:
        return tempfile.TemporaryDirectory(prefix=".s5-push-", dir=Path(path).expanduser().resolve().parent)
    except OSError:
        return tempfile.TemporaryDirectory(prefix="s5-push-")


def _checkpoint_snapshot(path: str | Path, with_optimizer: bool, tmp: Path) -> tuple[Path, Path]:
    """(checkpoint folder `path` stands for, a still copy of its files under `tmp`); see `take_snapshot`."""
    from s5cli.hub.snapshot import take_snapshot
    from s5cli.train.checkpoint import METRICS_FILE, MODEL_FILE, STATE_JSON, STATE_TENSORS

    state = (STATE_TENSORS, STATE_JSON) if with_optimizer else ()

    def resolve() -> Path:
        source = checkpoint_source(path, with_optimizer=with_optimizer)
        missing = [name for name in state if not (source / name).is_file()]
        if missing:
            raise UserError(f"{source} has no {missing[0]}: push without --with-optimizer (weights only)")
        return source

    source, copy = take_snapshot(resolve, (MODEL_FILE, METRICS_FILE, *state), (MODEL_FILE, *state), tmp)
    if with_optimizer:
        try:
            json.loads((copy / STATE_JSON).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise UserError(f"{source / STATE_JSON} is not the trainer state s5cli writes: push without "
                            "--with-optimizer, or push a checkpoint s5cli wrote") from None
    return source, copy


def _snapshot_metadata(source: Path, copy: Path) -> dict[str, str]:
    """The checkpoint's metadata, read from the copy; errors name the user's folder, not the copy."""
    from s5cli.train.checkpoint_metadata import read_metadata

    try:
        return read_metadata(copy)
    except UserError as error:
        raise UserError(str(error).replace(str(copy), str(source))) from None


def _read_json(source: Path, copy: Path, name: str) -> Any:
    """A JSON file of the copy (metrics go into the model card); UserError naming the user's file."""
    try:
        return json.loads((copy / name).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserError(f"{source / name}: not valid JSON ({error})") from None
