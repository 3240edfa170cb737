"""Download recipes (and single files) from the Hub into its cache (HF_HUB_OFFLINE and --revision honoured).

Recipes are validated against the schema before anything is written to the user's folder, and remote names
are checked so nothing lands outside the destination. Checkpoints are in `s5cli.hub.checkpoints`.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from s5cli.errors import RunFailure, UserError
from s5cli.hub.client import hub_errors, hub_settings, optional_token, request_timeout, unreachable_reason
from s5cli.hub.paths import HubSpec, parse_hub_spec, safe_destination

RECIPE_SUFFIXES = (".yaml", ".yml")
DEFAULT_RECIPE = "recipe.yaml"


def client_kwargs() -> dict:
    """The settings every download call takes: endpoint, cache, offline mode, token (read now)."""
    settings = hub_settings()
    return {
        "endpoint": settings.endpoint,
        "cache_dir": str(settings.cache_dir),
        "local_files_only": settings.offline,
        "token": optional_token(),
    }


def download_file(spec: HubSpec, filename: str) -> Path:
    """One file of a Hub repo, from the cache when possible (hf_hub_download)."""
    from huggingface_hub import hf_hub_download

    kwargs = client_kwargs()
    with hub_errors(spec.repo_id, spec.revision, filename, revision_option=spec.revision_option):
        if not kwargs["local_files_only"]:
            cached = _cached_copy_if_unreachable(spec, filename, kwargs)
            if cached is not None:
                return cached
        return Path(hf_hub_download(spec.repo_id, filename, revision=spec.revision, etag_timeout=request_timeout(),
                                    **kwargs))


def _cached_copy_if_unreachable(spec: HubSpec, filename: str, kwargs: dict) -> Path | None:
    """None when the Hub answers (hf_hub_download then fetches or revalidates the file); the cached copy,
    with a warning, when it cannot be reached; LocalEntryNotFoundError (one line, via `hub_errors`) when
    it cannot be reached and nothing is cached.

    Why ask first with one request: for a file not cached yet, hf_hub_download retries an unreachable
    Hub five times with backoff, printing two lines each, so `s5 finetune hf://...` offline took ~23 s
    and 11 lines of noise before its one-line error."""
    from huggingface_hub import errors as hf
    from huggingface_hub import get_hf_file_metadata, hf_hub_url, try_to_load_from_cache

    url = hf_hub_url(spec.repo_id, filename, revision=spec.revision, endpoint=kwargs["endpoint"])
    try:
        get_hf_file_metadata(url, token=kwargs["token"], timeout=request_timeout(), retry_on_errors=False)
    except hf.HfHubHTTPError as error:
        if not hub_unavailable(error):
            raise  # the Hub answered about the file: not found, gated, ... (named by hub_errors)
        failure: Exception = error
    except Exception as error:  # connection refused, unknown host, timeout
        failure = error
    else:
        return None
    cached = try_to_load_from_cache(spec.repo_id, filename, cache_dir=kwargs["cache_dir"], revision=spec.revision)
    if not isinstance(cached, str):
        if isinstance(failure, hf.HfHubHTTPError):
            raise failure  # an outage with nothing cached: hub_errors names the status
        raise hf.LocalEntryNotFoundError(unreachable_reason(failure)) from None
    from s5cli.cli.console import print_warning

    print_warning(f"cannot reach the Hub: {unreachable_reason(failure)[:160]}; using the cached {filename} of "
                  f"{spec.repo_id}")
    return Path(cached)


def hub_unavailable(error: Exception) -> bool:
    """A server error (5xx) or rate limit (429): the Hub said nothing about the file, so a cached copy is
    as good as when it cannot be reached at all (an outage failed `hf://` recipes and backbone weights
    that were cached, which huggingface_hub's own download would have served)."""
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    return isinstance(status, int) and (status >= 500 or status == 429)


def resolve_recipe_path(spec: str, revision: str | None = None) -> Path:
    """`hf://REPO[@REV]/path/recipe.yaml` (or a bare repo id: its recipe.yaml) -> the cached local file."""
    hub = parse_hub_spec(spec, revision)
    filename = hub.path or DEFAULT_RECIPE
    if not filename.endswith(RECIPE_SUFFIXES):
        raise UserError(f"{hub}: a recipe is a .yaml file; name one, e.g. "
                        f"{HubSpec(hub.repo_id, hub.revision, DEFAULT_RECIPE)}")
    return download_file(hub, filename)


def repo_listing(hub: HubSpec) -> tuple[list[str], str | None]:
    """(paths of the repo's files at the revision, the commit they are at), in one request (`model_info`)
    answered within `request_timeout()`.

    Not `list_repo_files`: it pages through the repo tree with huggingface_hub's backoff, which retries a
    refused connection or an unknown host five times, printing two lines each, so an offline user waited
    ~25 s before learning anything. One failed request is enough to say the Hub is unreachable.
    """
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub_settings().endpoint, token=optional_token())
    info = api.model_info(hub.repo_id, revision=hub.revision, timeout=request_timeout())
    return [sibling.rfilename for sibling in info.siblings or []], info.sha


# ------------------------------------------------------------------------------------------- recipe pull
@dataclass
class PulledRecipe:
    """One recipe fetched from the Hub and validated, before it is written."""

    name: str          # path inside the repo
    target: Path       # where it goes under --dest
    data: bytes        # the remote bytes, written unchanged


def list_remote_recipes(hub: HubSpec) -> tuple[list[str], str | None]:
    """(YAML file names in a Hub repo, the commit listed; None when listed from the cached snapshot, with a
    warning, because offline or unreachable)."""
    from s5cli.cli.console import print_warning

    settings = hub_settings()
    if settings.offline:
        names = _cached_recipe_names(hub)
        # Offline the repo cannot be listed: the cache holds what earlier pulls fetched, maybe not everything.
        print_warning(f"{settings.offline_reason}: {hub.where} listed from the Hub cache, which holds only "
                      "the recipes pulled before")
        return names, None
    try:
        with hub_errors(hub.repo_id, hub.revision, revision_option=hub.revision_option):
            files, commit = repo_listing(hub)
    except RunFailure as error:  # the network, not the repo: what an earlier pull cached is still usable
        try:
            names = _cached_recipe_names(hub)
        except (UserError, RunFailure):
            raise error from None
        print_warning(f"{error}; using the {len(names)} recipe(s) of {hub.where} in the Hub cache instead, "
                      "which may not be all of them")
        return names, None
    return sorted(f for f in files if f.endswith(RECIPE_SUFFIXES)), commit


def snapshot_commit(path: Path, name: str) -> str | None:
    """The commit of a file in the Hub cache (`.../snapshots/COMMIT/NAME`), None for a path laid out otherwise."""
    depth = len(PurePosixPath(name).parts)
    folder = path.parents[depth - 1] if 0 < depth <= len(path.parents) else None
    return folder.name if folder is not None and folder.parent.name == "snapshots" else None


def pinned_recipe_address(spec: str, revision: str | None = None) -> str:
    """`hf://REPO@COMMIT/file.yaml` for a recipe address `resolve_recipe_path` just fetched, from the Hub cache
    (no request); the address as given when the cache cannot say. A run records this, not a moving branch."""
    from huggingface_hub import try_to_load_from_cache

    hub = parse_hub_spec(spec, revision)
    filename = hub.path or DEFAULT_RECIPE
    cached = try_to_load_from_cache(hub.repo_id, filename, cache_dir=str(hub_settings().cache_dir),
                                    revision=hub.revision)
    commit = snapshot_commit(Path(cached), filename) if isinstance(cached, str) else None
    return str(HubSpec(hub.repo_id, commit, filename)) if commit else str(hub)


def _cached_recipe_names(hub: HubSpec) -> list[str]:
    """Recipe files of the repo's cached snapshot; UserError (offline) or RunFailure when nothing is cached."""
    from huggingface_hub import snapshot_download

    kwargs = {**client_kwargs(), "local_files_only": True}
    with hub_errors(hub.repo_id, hub.revision, revision_option=hub.revision_option):
        root = Path(snapshot_download(hub.repo_id, revision=hub.revision,
                                      allow_patterns=[f"*{s}" for s in RECIPE_SUFFIXES], **kwargs))
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.name.endswith(RECIPE_SUFFIXES))


def fetch_recipes(repo: str, name: str | None, revision: str | None, dest: Path) -> list[PulledRecipe]:
    """Download and validate one recipe (NAME) or all recipes of a repo; nothing is written here."""
    from s5cli.recipe import load_recipe_text
    from s5cli.recipe_yaml import read_recipe_file

    hub = parse_hub_spec(repo, revision)
    if name is not None and hub.path and name != hub.path:
        raise UserError(f"{repo} names the recipe {hub.path!r} and NAME names {name!r}: give it once, in the "
                        "address or as NAME")
    if name is None and hub.path:
        name = hub.path
    if name is not None and Path(name).name in ("", ".", ".."):
        raise UserError(f"recipe name {name!r} names no file: give one like genre.yaml or lvu/genre.yaml")
    commit = None
    if name is not None:
        names = [name if name.lower().endswith(RECIPE_SUFFIXES) else f"{name}.yaml"]
    else:
        names, commit = list_remote_recipes(hub)
        if not names:
            raise UserError(f"Hub repo {hub.where} holds no recipe (.yaml) files")
    # Check every name before downloading anything, so a hostile listing writes nothing at all.
    targets = [safe_destination(dest, n, where=f"Hub repo {hub.where}") for n in names]
    pulled = []
    for remote, target in zip(names, targets, strict=True):
        source = str(HubSpec(hub.repo_id, hub.revision or "main", remote))
        # Read capped (1 MiB) and checked as UTF-8: a huge remote file is refused by its size, not read whole.
        text = read_recipe_file(_download_listed(hub, remote, commit), source)
        load_recipe_text(text, source)  # UserError (unknown key, bad value ...) names the remote file
        pulled.append(PulledRecipe(remote, target, text.encode("utf-8")))  # the same bytes: UTF-8 round-trips
    return pulled


def _download_listed(hub: HubSpec, name: str, commit: str | None) -> Path:
    """A file of a listing, at `commit`, the commit that was listed (None: as the branch is now).

    Why: each file was fetched from the branch as it was at that moment, so a push landing during a pull
    mixed recipes of two commits. Fetched by branch first, so that the cache keeps recording which commit
    the branch is at (offline use and `pinned_recipe_address` read it); by the listed commit when the
    branch has moved on since.
    """
    path = download_file(hub, name)
    if commit is None or snapshot_commit(path, name) in (commit, None):
        return path
    return download_file(HubSpec(hub.repo_id, commit, name), name)


def pull_recipes(
    repo: str, name: str | None = None, revision: str | None = None, dest: Path = Path("recipes"),
    force: bool = False,
) -> list[Path]:
    """Fetch, validate, then write recipes under `dest`: all of them or none (existing files only with `force`)."""
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise UserError(f"--dest {dest} is a file: pass a folder")
    pulled = fetch_recipes(repo, name, revision, dest)
    for item in pulled:
        _check_target(dest, item)
    # lexists: a link to nothing is in the way too; written through, it would create the file it names.
    existing = [p.target for p in pulled if os.path.lexists(p.target)]
    if existing and not force:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        first = existing[0]
        if not first.exists():  # only lexists: a dangling link, which "already exists" misdescribed
            raise UserError(f"{first} is a link to nothing{more}: pass --force to write through it (creating "
                            "the file it names)")
        raise UserError(f"{first} already exists{more}: pass --force to overwrite")
    _write_all(pulled)
    return [p.target for p in pulled]


def _check_target(dest: Path, item: PulledRecipe) -> None:
    """UserError when `item` cannot be written: a file where one of its folders goes, a folder (or a pipe or
    device) where it goes, or a folder that takes no new file.

    Why before writing: with `DEST/z` a file, a pull wrote a.yaml, then failed on z/x.yaml, and the next
    pull refused because a.yaml already existed.
    """
    from s5cli.io import folder_problem

    fix = "move it away, or pull into another --dest"
    folder = dest.resolve()
    for part in PurePosixPath(item.name).parts[:-1]:
        folder = folder / part
        if os.path.lexists(folder) and not folder.is_dir():
            raise UserError(f"cannot pull {item.name}: {folder} is a file, not a folder ({fix})")
    if item.target.is_dir():
        raise UserError(f"cannot pull {item.name}: {item.target} is a folder ({fix})")
    if item.target.exists() and not item.target.is_file():  # followed: a link to a pipe is the pipe
        raise UserError(f"cannot pull {item.name}: {item.target} is not a regular file, which s5cli does not "
                        f"write into ({fix})")
    problem = folder_problem(item.target.parent)
    if problem:
        raise UserError(f"cannot pull {item.name} into {item.target.parent}: {problem}")


@dataclass
class _Staged:
    """A recipe written and flushed to a temp file beside its target, not yet renamed into place."""

    target: Path             # the file replaced: the recipe's path, or the file a link there names
    temp: Path
    existed: bool            # a file was at `target` (a forced pull replaces it)
    old: Path | None = None  # a hard link to that file, to put back if the pull fails


def _write_all(pulled: list[PulledRecipe]) -> None:
    """Write and flush every recipe to a temp file beside its target, then rename them into place in order.

    Why in two phases: each file was flushed and renamed as its own write finished, last file first, so a
    failed flush of the first recipe (a full disk reported at fsync, as NFS and quotas do) came after the
    others were in place. Now a failure before the renames leaves nothing: temp files and the folders this
    pull made are removed. A rename failing midway (rare: the data is already on disk) puts back what was
    renamed: a new file is removed, a replaced one gets its old file back from a hard link kept until the
    end (where the folder takes no hard link, that file keeps the new recipe, and a warning names it). Only
    a crash during the renames themselves can still leave some files renamed and others not.
    The user's own links are written through, as `s5 recipes cp` writes through them.
    """
    made: list[Path] = []
    staged: list[_Staged] = []
    try:
        for item in pulled:
            target = Path(os.path.realpath(item.target)) if item.target.is_symlink() else item.target
            _make_folders(target, made)
            entry = _Staged(target, _write_temp(target, item.data), existed=target.is_file())
            staged.append(entry)
            entry.old = _keep_old(target) if entry.existed else None
        _rename_all(staged)
    except BaseException:
        for entry in staged:
            for leftover in (entry.temp, entry.old):
                if leftover is not None:
                    leftover.unlink(missing_ok=True)
        _remove_folders(made)
        raise
    for entry in staged:
        if entry.old is not None:
            entry.old.unlink(missing_ok=True)


def _make_folders(target: Path, made: list[Path]) -> None:
    """Create the missing folders above `target`, appending the ones this call made to `made` (parents first)."""
    from s5cli.io import os_error_about

    missing = [folder for folder in (target.parent, *target.parent.parents) if not folder.exists()]
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:
            continue  # made meanwhile by someone else: theirs, not removed on failure
        except OSError as error:
            raise os_error_about(error, target) from error
        made.append(folder)


def _remove_folders(made: list[Path]) -> None:
    """Remove the folders a failed pull made, deepest first, each only if empty."""
    for folder in reversed(made):
        with contextlib.suppress(OSError):  # not empty: something else was put there meanwhile, leave it
            folder.rmdir()


def _write_temp(target: Path, data: bytes) -> Path:
    """`data` in a new temp file beside `target` (named `.STEM.XXXX.tmpSUFFIX`), flushed to disk, with the
    permissions a plain open() gives; an OSError names `target`, not the hidden temp file."""
    from s5cli.io import flush_with_default_mode, new_temp_beside, os_error_about

    temp = new_temp_beside(target, target)
    try:
        temp.write_bytes(data)
        flush_with_default_mode(temp)
    except BaseException as error:
        temp.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno is not None:
            raise os_error_about(error, target) from error
        raise
    return temp


def _keep_old(target: Path) -> Path | None:
    """A hard link to the file at `target` (a forced pull replaces it), so a failed pull can put it back; a
    copy where the folder takes no hard link (FAT/exFAT, some SMB and FUSE mounts: recipes are small);
    None where neither can be made."""
    import secrets
    import shutil

    old = target.with_name(f".{target.name}.{secrets.token_hex(4)}.old")
    try:
        os.link(target, old)
    except OSError:
        try:
            shutil.copy2(target, old)
        except OSError:
            old.unlink(missing_ok=True)
            return None
    return old


def _rename_all(staged: list[_Staged]) -> None:
    """Rename every temp file onto its target in order; on a failure, undo the renames done (`_undo`)."""
    from s5cli.io import os_error_about

    done: list[_Staged] = []
    try:
        for entry in staged:
            try:
                os.replace(entry.temp, entry.target)
            except OSError as error:
                raise os_error_about(error, entry.target) from error
            done.append(entry)
    except BaseException:
        _undo(done)
        raise


def _undo(done: list[_Staged]) -> None:
    """Put back what the renames in `done` replaced: the old file from its hard link, nothing for a new one.
    A file that cannot be put back is named in a warning (with where its old content is, when it was kept)."""
    kept = []
    for entry in reversed(done):
        try:
            if entry.old is not None:
                os.replace(entry.old, entry.target)
                # Two pulled names of one file (a link in --dest): the target may already be this backup's
                # inode, and renaming a file onto itself does nothing, leaving the backup's name behind.
                entry.old.unlink(missing_ok=True)
                entry.old = None
            elif not entry.existed:
                entry.target.unlink(missing_ok=True)
            else:
                kept.append(f"{entry.target} (its old content is lost)")
        except OSError:
            kept.append(str(entry.target) + (f" (its old content is in {entry.old})" if entry.old else ""))
            entry.old = None  # not removed: it may be the only copy left
    if kept:
        from s5cli.cli.console import print_warning

        print_warning(f"the failed pull could not undo {len(kept)} file(s) it had replaced: {', '.join(kept)}")
