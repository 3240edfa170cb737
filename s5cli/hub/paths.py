"""Hub address parsing (`hf://owner/name[@rev][/path]`, bare `owner/name`) and safe local file names.

Pure string handling, no huggingface_hub import, so that `s5 --help` and recipe validation stay fast.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote

from s5cli.errors import UserError

SCHEME = "hf://"
# Hub repo ids: `owner/name`, letters, digits, '-', '_', '.'; no '--' or '..' (the Hub refuses them).
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


@dataclass(frozen=True)
class HubSpec:
    """A parsed Hub address: repo id, optional revision (branch, tag or commit) and path inside the repo."""

    repo_id: str
    revision: str | None = None
    path: str = ""
    # The revision came from a --revision option, not from `@REV` in the address: errors say where to fix it.
    revision_option: bool = field(default=False, compare=False)

    def __str__(self) -> str:
        rev = f"@{quote_revision(self.revision)}" if self.revision else ""
        return f"{SCHEME}{self.repo_id}{rev}" + (f"/{self.path}" if self.path else "")

    @property
    def where(self) -> str:
        """`owner/name@rev` for error messages."""
        return f"{self.repo_id}@{self.revision or 'main'}"


def quote_revision(revision: str) -> str:
    """A revision as written in an hf:// address: URL-encoded, so `refs/pr/1` becomes `refs%2Fpr%2F1`.

    Why: `parse_hub_spec` reads the first `/` after `@` as the start of the path, so an address printed
    with a raw `/` in its branch name pointed at another revision and file when copied back.
    """
    return quote(revision, safe="")


def is_repo_id(text: str) -> bool:
    """True for a well-formed `owner/name` Hub repo id."""
    return bool(_REPO_ID.match(text)) and "--" not in text and ".." not in text


def looks_like_hub_spec(text: str) -> bool:
    """True for `hf://...` addresses and bare `owner/name` ids that are not local paths."""
    if text.startswith(SCHEME):
        return True
    return is_repo_id(text) and not Path(text).expanduser().exists()


# Repo-type prefixes of huggingface_hub's HfFileSystem (`hf://datasets/OWNER/NAME`); models is the default type.
_OTHER_REPO_TYPES = {"datasets": "a dataset", "spaces": "a Space"}
_MODELS_PREFIX = "models"
# A web address as typed (`https://...`) or as a Path folded it (`https:/...`).
_WEB = re.compile(r"^(https?):/+(.*)$", re.IGNORECASE)
_HUB_HOSTS = ("huggingface.co", "www.huggingface.co", "hf.co")
# Routes of a repo page followed by REVISION[/path]: the files, their history and the file editor.
_WEB_REVISION_PARTS = ("tree", "blob", "resolve", "raw", "commits", "edit")
_WEB_COMMIT_PART = "commit"  # `commit/SHA`: one commit, the repo as it was then


def web_address(text: str) -> str | None:
    """`text` as the http(s) address the user typed (`//` restored where a Path folded it), or None when it
    is not one."""
    match = _WEB.match(text.strip())
    return f"{match.group(1)}://{match.group(2)}" if match else None


def hub_address_of_url(text: str) -> str | None:
    """The hf:// address of a huggingface.co link to a model repo (`.../tree/REV/path`, `/blob/`, `/resolve/`,
    `/raw/`, `/commits/` and `/edit/` keep their revision and path, `/commit/SHA` its commit); None for other
    links, or when no valid address follows."""
    match = _WEB.match(text.strip())
    if not match:
        return None
    host, _, rest = match.group(2).partition("/")
    parts = [part for part in rest.split("?")[0].split("#")[0].split("/") if part]
    if host.lower() not in _HUB_HOSTS or not parts or parts[0] in _OTHER_REPO_TYPES:
        return None
    parts = parts[1:] if parts[0] == _MODELS_PREFIX else parts
    if len(parts) < 2 or not is_repo_id(f"{parts[0]}/{parts[1]}"):
        return None
    revision, path = _web_revision_and_path(parts[2:])
    try:
        return str(parse_hub_spec(str(HubSpec(f"{parts[0]}/{parts[1]}", revision, path))))
    except UserError:
        return None


def _web_revision_and_path(route: list[str]) -> tuple[str | None, str]:
    """(revision, path in the repo) of what follows OWNER/NAME in a repo page's link; the bare repo for pages
    about no file (`discussions/3`, `settings`, a route without its revision).

    Why not everything after NAME as the path: `.../discussions/3` became `hf://alice/x/discussions/3`, a file
    that does not exist, and `.../raw/main/a.yaml` the file `raw/main/a.yaml`.
    """
    if len(route) >= 2 and route[0] in _WEB_REVISION_PARTS:
        return unquote(route[1]), "/".join(route[2:])
    if len(route) >= 2 and route[0] == _WEB_COMMIT_PART:
        return unquote(route[1]), ""
    return None, ""


def web_address_error(text: str, what: str) -> UserError:
    """The refusal for an http(s) link given where a path or hf:// address goes, suggesting its hf:// form
    only where it has a valid one.

    Why: `s5 eval -c https://huggingface.co/alice/s5-synth` said "checkpoint https:/huggingface.co/... does
    not exist", naming an address nobody typed and not the form that works.
    """
    address = hub_address_of_url(text)
    fix = f"use {address}" if address else "give a local path, or a Hub model repo as hf://OWNER/NAME[@REVISION][/path]"
    return UserError(f"{what}{web_address(text) or text} is a web address, not a path or an hf:// address: {fix}")


def _strip_repo_type(spec: str, parts: list[str]) -> list[str]:
    """`parts` of an address without a `models/` prefix; UserError for a dataset or Space repo.

    Why: `hf://datasets/alice/recipes` (HfFileSystem's form) was read as the model repo `datasets/alice`, and
    the user was told it was not found or private and to set HF_TOKEN.
    """
    if len(parts) >= 2 and parts[0] in _OTHER_REPO_TYPES:
        raise UserError(f"{spec!r} names {_OTHER_REPO_TYPES[parts[0]]} repo: s5cli reads and writes model repos "
                        "only (hf://OWNER/NAME)")
    return parts[1:] if len(parts) >= 3 and parts[0] == _MODELS_PREFIX else parts


def parse_hub_spec(spec: str, revision: str | None = None) -> HubSpec:
    """Split `hf://owner/name[@rev][/path]` or `owner/name`; `revision` (e.g. --revision) must agree with `@rev`."""
    text = spec.strip()
    if web_address(text):
        raise web_address_error(text, "")
    body = text[len(SCHEME):] if text.startswith(SCHEME) else text
    parts = _strip_repo_type(spec, body.split("/"))
    body = "/".join(parts)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise UserError(f"{spec!r} is not a Hub address: use hf://OWNER/NAME[@REVISION][/path] or OWNER/NAME")
    # '@' only counts in the repo-name part: `hf://bob/r/genre@v2.yaml` names a file, not a revision.
    name, at, inline_rev = parts[1].partition("@")
    repo_id = f"{parts[0]}/{name}"
    if not is_repo_id(repo_id):
        raise UserError(f"{spec!r}: {repo_id!r} is not a valid Hub repo id (OWNER/NAME of letters, digits, - _ .)")
    if not text.startswith(SCHEME) and len(parts) > 2:
        raise UserError(f"{spec!r}: a path inside a Hub repo needs the hf:// prefix (hf://{body})")
    # Revisions with '/' (refs/pr/1) are written URL-encoded in the address: hf://o/n@refs%2Fpr%2F1/file.
    inline_rev = unquote(inline_rev) if inline_rev else None
    if at and not inline_rev:
        raise UserError(f"{spec!r}: empty revision after '@'")
    if inline_rev and revision and inline_rev != revision:
        raise UserError(f"{spec!r} names revision {inline_rev!r} but --revision is {revision!r}: give only one")
    path = "/".join(p for p in parts[2:] if p)
    if path:
        check_repo_path(path, where=repo_id)
    return HubSpec(repo_id, inline_rev or revision or None, path, revision_option=bool(revision and not inline_rev))


def check_repo_path(name: str, where: str = "Hub repo", uploading: bool = False) -> PurePosixPath:
    """A remote file name as a relative POSIX path; UserError for absolute paths, `..`, backslashes and
    control characters (a name holding a newline or an escape sequence printed a fake "wrote" line or
    recoloured the terminal), worded for a download's destination folder, or with `uploading` for a
    path in the repo."""
    controls = any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in name)  # NUL, newlines, terminal escapes
    bad = (
        not name
        or "\\" in name
        or controls
        or name.startswith("/")
        or re.match(r"^[A-Za-z]:", name) is not None
    )
    pure = PurePosixPath(name)
    # Parts of the name as given: PurePosixPath folds `a//b` and `a/./b`, which were then pushed as typed.
    if bad or any(part in ("..", "", ".") for part in name.split("/")) or pure.is_absolute():
        if controls:
            raise UserError(f"{where}: refusing file name {name!r}: it holds control characters")
        if uploading:
            raise UserError(f"{where}: refusing path in repo {name!r}: give a relative path without '..' or "
                            "backslashes (e.g. lvu/genre.yaml)")
        raise UserError(
            f"{where}: refusing remote file name {name!r}: it would be written outside the destination folder"
        )
    return pure


def safe_destination(dest: Path, name: str, where: str = "Hub repo") -> Path:
    """`dest/name` for a remote file name, its folder guaranteed to stay inside `dest` (checked after resolving
    every folder on the way, so neither `..` nor a linked sub-folder leads out).

    The final name is not resolved: a link there is the user's own file in their own folder, which a pull
    with --force writes through, as `s5 recipes cp` does (without --force it is refused: it exists).
    Resolving it refused `--force` onto such a link as if the remote name were hostile ("it resolves
    outside DEST").
    """
    relative = check_repo_path(name, where)
    root = dest.resolve()
    folder = (dest / Path(*relative.parts[:-1])).resolve()
    if root != folder and root not in folder.parents:
        raise UserError(f"{where}: refusing remote file name {name!r}: it resolves outside {dest}")
    return folder / relative.name


def is_pickle_name(name: str) -> bool:
    """True for file names of pickle-based checkpoints (never loaded: unpickling runs arbitrary code)."""
    return name.lower().endswith(PICKLE_SUFFIXES)
