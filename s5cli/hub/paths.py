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


def parse_hub_spec(spec: str, revision: str | None = None) -> HubSpec:
    """Split `hf://owner/name[@rev][/path]` or `owner/name`; `revision` (e.g. --revision) must agree with `@rev`."""
    text = spec.strip()
    body = text[len(SCHEME):] if text.startswith(SCHEME) else text
    parts = body.split("/")
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
    """`dest/name` for a remote file name, guaranteed to stay inside `dest` (checked after resolving)."""
    relative = check_repo_path(name, where)
    target = (dest / Path(*relative.parts)).resolve()
    root = dest.resolve()
    if root != target and root not in target.parents:
        raise UserError(f"{where}: refusing remote file name {name!r}: it resolves outside {dest}")
    return target


def is_pickle_name(name: str) -> bool:
    """True for file names of pickle-based checkpoints (never loaded: unpickling runs arbitrary code)."""
    return name.lower().endswith(PICKLE_SUFFIXES)
