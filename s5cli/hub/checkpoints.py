"""Checkpoints from the Hub: `hf://OWNER/NAME[@REV][/folder]` or `OWNER/NAME` -> a checkpoint folder in the Hub cache.

One request (`model_info`, answered within HF_HUB_ETAG_TIMEOUT) gives the repo's file list and the commit the
revision is at; only the checkpoint files that list holds are fetched, at that commit (safetensors, JSON,
YAML; never pickle). Offline, or when the Hub does not answer, the cached snapshot of the revision is used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from s5cli.errors import RunFailure, UserError
from s5cli.hub.client import hub_errors, hub_settings, is_transport_error, request_timeout, unreachable_reason
from s5cli.hub.download import client_kwargs, hub_unavailable, repo_listing
from s5cli.hub.paths import HubSpec, is_pickle_name, parse_hub_spec

# The files of one checkpoint folder, by exact name: a pattern such as "*.safetensors" also matches every
# file below the folder (fnmatch's * crosses "/"), so `eval -c hf://REPO` downloaded the whole repo.
CHECKPOINT_FILES = ("model.safetensors", "metrics.json", "recipe.yaml", "latest", "README.md",
                    "trainer_state.json", "trainer_state.safetensors")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def resolve_checkpoint_dir(spec: str, revision: str | None = None) -> Path:
    """`hf://REPO[@REV][/subdir]` or `owner/name` -> local checkpoint folder in the Hub cache (safetensors only)."""
    from s5cli.train.checkpoint import MODEL_FILE
    from s5cli.train.checkpoint_paths import checkpoint_dir, latest_target_name

    hub = parse_hub_spec(spec, revision)
    if is_pickle_name(hub.path):
        raise _pickle_error(hub, hub.path)
    sub = hub.path[: -len(MODEL_FILE)].rstrip("/") if hub.path.endswith(MODEL_FILE) else hub.path
    source = _open(hub, sub)
    local = source.fetch(sub)
    if not (local / MODEL_FILE).is_file() and (local / "latest").is_file():
        # A run folder means its best/ checkpoint, as a local run folder does (`run_best_checkpoint`):
        # `s5 eval -c hf://REPO/run` scored the latest step while the same folder on disk scored best/.
        best = source.fetch(_join(sub, "best"))
        if (best / MODEL_FILE).is_file():
            return checkpoint_dir(best)
        # No best/ (a run without validation): `latest` names its checkpoint (checked by checkpoint_dir
        # below); fetch that folder.
        target = latest_target_name(local)
        if target is not None:
            source.fetch(_join(sub, target))
    if not (local / MODEL_FILE).is_file() and not (local / "latest").is_file():
        raise source.no_checkpoint(sub)
    return checkpoint_dir(local)


def _join(*parts: str) -> str:
    """A path in the repo from folder names, the empty name (the repo's top) left out."""
    return "/".join(part for part in parts if part)


@dataclass
class _Source:
    """Where a checkpoint's files come from: the repo at `commit` (its file list `files` known), or, with
    `files` None, the cached snapshot of the revision (offline, or the Hub did not answer: `unreachable`)."""

    hub: HubSpec
    files: frozenset[str] | None = None
    commit: str | None = None
    unreachable: str | None = None

    def fetch(self, folder: str) -> Path:
        """`folder` of the snapshot, with the checkpoint files it holds downloaded (or found in the cache)."""
        from huggingface_hub import hf_hub_download, snapshot_download

        names = [_join(folder, name) for name in CHECKPOINT_FILES]
        kwargs = client_kwargs()
        with hub_errors(self.hub.repo_id, self.hub.revision, folder or None, revision_option=self.hub.revision_option):
            if self.files is None:
                root = snapshot_download(self.hub.repo_id, revision=self.hub.revision, allow_patterns=names,
                                         **{**kwargs, "local_files_only": True})
                return Path(root) / folder
            # File by file, at the commit listed: snapshot_download would list the repo tree once more, with
            # no time limit, and an empty match printed its "No files matched" warning and a "Fetching 0
            # files" bar before s5cli's own message. A file cached at that commit needs no request.
            root = _snapshot_folder(self.hub, str(self.commit), kwargs["cache_dir"])
            for name in names:
                if name in self.files:
                    path = hf_hub_download(self.hub.repo_id, name, revision=self.commit,
                                           etag_timeout=request_timeout(), **kwargs)
                    root = Path(path).parents[len(PurePosixPath(name).parts) - 1]  # snapshots/COMMIT
        return root / folder

    def no_checkpoint(self, sub: str) -> Exception:
        """The error for a repo (or the cache of it) without a checkpoint where `sub` points."""
        from s5cli.train.checkpoint import MODEL_FILE

        where = f"{self.hub.where}{' folder ' + repr(sub) if sub else ''}"
        if self.files is None and self.unreachable is not None:
            return RunFailure(f"cannot reach the Hub for {where} and the Hub cache has no checkpoint there: "
                              f"{self.unreachable}")
        if self.files is None:  # offline: the repo may well hold one; only the cache is known to lack it
            settings = hub_settings()
            return UserError(f"{settings.offline_reason} and the Hub cache has no checkpoint of {where}: "
                             f"{settings.online_fix} to download it, or pass a local checkpoint folder")
        prefix = f"{sub}/" if sub else ""
        pickles = sorted(name for name in self.files if name.startswith(prefix) and is_pickle_name(name))
        if pickles:
            return _pickle_error(self.hub, pickles[0])
        return UserError(f"Hub repo {where} holds no {MODEL_FILE}: push a checkpoint with `s5 push CHECKPOINT_DIR "
                         "REPO_ID`, or name the folder that holds it")


def _open(hub: HubSpec, sub: str) -> _Source:
    """The repo's file list and commit, from one bounded request; the cached snapshot (with a warning) when
    the Hub does not answer, is unreachable or is down; RunFailure naming the time limit when nothing is
    cached then."""
    if hub_settings().offline:
        return _Source(hub)
    with hub_errors(hub.repo_id, hub.revision, revision_option=hub.revision_option):
        try:
            files, commit = repo_listing(hub)
        except Exception as error:
            if not _unreachable(error):
                raise  # the Hub answered: not found, gated, no such revision ... (named by hub_errors)
            return _cached_source(hub, sub, error)
    if commit is None:  # a Hub that names no commit: huggingface_hub resolves the revision for each file
        commit = hub.revision or "main"
    _remember_commit(hub, commit)
    return _Source(hub, frozenset(files), commit)


def _unreachable(error: Exception) -> bool:
    """Whether a failed request says nothing about the repo: no answer in time, no connection, or a server
    error or rate limit (as for single files, `hub_unavailable`)."""
    from huggingface_hub import errors as hf

    if isinstance(error, hf.HfHubHTTPError):
        return hub_unavailable(error)
    return is_transport_error(error) or isinstance(error, (TimeoutError, ConnectionError))  # offline mode too


def _cached_source(hub: HubSpec, sub: str, failure: Exception) -> _Source:
    """The cached snapshot of `hub`'s revision, with a warning; LocalEntryNotFoundError (one line through
    `hub_errors`) naming why the Hub could not be used when nothing of it is cached."""
    from huggingface_hub import errors as hf
    from huggingface_hub import snapshot_download

    from s5cli.cli.console import print_warning

    reason = unreachable_reason(failure)
    kwargs = {**client_kwargs(), "local_files_only": True}
    try:
        snapshot_download(hub.repo_id, revision=hub.revision, allow_patterns=[_join(sub, n) for n in CHECKPOINT_FILES],
                          **kwargs)
    except hf.LocalEntryNotFoundError:
        if isinstance(failure, hf.HfHubHTTPError):
            raise failure from None  # an outage with nothing cached: hub_errors names the status
        raise hf.LocalEntryNotFoundError(reason) from None
    print_warning(f"cannot reach the Hub: {reason[:160]}; using the cached checkpoint of {hub.where}")
    return _Source(hub, unreachable=reason)


def _repo_cache_folder(hub: HubSpec, cache_dir: str | Path) -> Path:
    """The Hub cache's folder of `hub`'s repo (`models--OWNER--NAME`), holding its snapshots and refs."""
    from huggingface_hub.file_download import repo_folder_name

    return Path(cache_dir) / repo_folder_name(repo_id=hub.repo_id, repo_type="model")


def _snapshot_folder(hub: HubSpec, commit: str, cache_dir: str) -> Path:
    """Where the cache keeps the files of `hub` at `commit` (it may not exist yet)."""
    return _repo_cache_folder(hub, cache_dir) / "snapshots" / commit


def _remember_commit(hub: HubSpec, commit: str) -> None:
    """Record in the cache which commit the revision is at (`refs/REV`), as huggingface_hub does when it
    resolves a revision itself: offline use, and the fallback when the Hub does not answer, read it.

    Why here: the files are fetched by the commit (`_Source.fetch`), and a download by commit records no ref.
    Best effort: a read-only cache still downloads.
    """
    revision = hub.revision or "main"
    if revision == commit or _COMMIT.match(revision):
        return
    from s5cli.io import atomic_write_text

    ref = _repo_cache_folder(hub, client_kwargs()["cache_dir"]) / "refs"
    try:
        if not (ref / revision).is_file() or (ref / revision).read_text() != commit:
            atomic_write_text(ref / revision, commit)
    except (OSError, UserError):
        pass


def _pickle_error(hub: HubSpec, name: str) -> UserError:
    return UserError(
        f"Hub repo {hub.where} file {name!r} is a pickle checkpoint: s5cli loads safetensors only "
        "(unpickling can run arbitrary code); convert it to model.safetensors or use a repo pushed with `s5 push`"
    )
