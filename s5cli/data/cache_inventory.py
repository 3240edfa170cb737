"""What s5cli has cached on disk, whether this version can still use it, and how to remove it safely.

Generated synthetic videos and backbone tokens live in folders named by a hash of their settings, so a
format bump or a changed knob leaves the old folders behind, and nothing ever removed them. Folders are
recognised by their marker file (`synthetic.json`, `settings.json`), never by name, and judged against
the formats this version writes (`FORMAT`, `CACHE_FORMAT`), so the next bump makes old folders stale
without touching this module. Folders without a marker, or with one that cannot be read or parsed, may be
anyone's data: they are listed as unknown (with the reason), and only deleted when the user names them.
No Typer or Rich here: `s5 cache` (`s5cli/cli/cache.py`) renders it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from stat import S_ISDIR, S_ISFIFO, S_ISLNK, S_ISREG
from typing import Any

from s5cli.data.cache_lock import LOCK_NAME, exclusive, in_use, is_claim
from s5cli.data.cache_settings import CACHE_FORMAT
from s5cli.data.synthetic_video import FORMAT as SYNTHETIC_FORMAT
from s5cli.errors import UserError

DEFAULT_ROOT = Path(".s5cache")
SYNTHETIC, TOKENS, TEMPORARY, UNKNOWN_KIND = "synthetic videos", "backbone tokens", "temporary file", "unknown"
CURRENT, STALE, UNKNOWN, RECENT = "current", "stale", "unknown", "recent"
# Kind -> (marker file, the format this version writes). Imported, so a format bump makes old folders stale.
MARKERS = {SYNTHETIC: ("synthetic.json", SYNTHETIC_FORMAT), TOKENS: ("settings.json", CACHE_FORMAT)}
# A younger temporary file may belong to a writer that is still running (another shell, a DDP rank):
# deleting it would crash that job, so it only counts as a leftover once it has sat unchanged this long.
TEMP_GRACE_SECONDS = 15 * 60
# `s5cli.io.atomic_write_path` names its temporary files `.<stem>.<8 mkstemp chars>.tmp<suffix>`.
_TEMP_NAME = re.compile(r"^\.(?P<stem>.+)\.[a-z0-9_]{8}\.tmp(?P<suffix>\.[^.]+)?$")
# What `read_marker` finds: a marker that identifies the folder, nothing there, something that is not a
# regular file (never read), a file it cannot read, or one it read that is no marker of its kind.
FOUND, ABSENT, NOT_A_FILE, UNREADABLE, NOT_A_MARKER = "found", "absent", "not a file", "unreadable", "not a marker"
# s5cli's markers are well under 1 KiB: a bigger file is not one, and is not read into memory to find out.
MAX_MARKER_BYTES = 1 << 16


@dataclass(frozen=True)
class CacheEntry:
    """One deletable unit: a cache folder, a leftover temporary file, or the tokens of stale videos."""

    kind: str
    key: str  # folder name (tokens of stale videos: the videos' key); what `--key` matches
    path: Path
    format: str | None  # "format" of the marker, None where there is none (or it is unreadable)
    status: str  # CURRENT, STALE, UNKNOWN (no usable marker) or RECENT (a temporary file maybe still in use)
    settings: str  # one-line summary of what the folder holds
    files: int
    bytes: int
    modified: float  # latest mtime inside, seconds since the epoch
    members: tuple[Path, ...] = ()  # what deleting it removes, when not `path` itself
    owner: Path | None = None  # a folder whose deletion makes this entry useless (it goes with it)
    in_use: bool = False  # a running job has marked the folder (`cache_lock`): `clean` skips it

    @property
    def targets(self) -> tuple[Path, ...]:
        """The paths to remove."""
        return self.members or (self.path,)

    def as_json(self) -> dict[str, Any]:
        """Plain-JSON form (the `s5 cache ls --json` schema)."""
        stamp = datetime.fromtimestamp(self.modified, timezone.utc).isoformat(timespec="seconds")
        fields = ("kind", "key", "format", "status", "in_use", "settings", "files", "bytes")
        return {**{name: getattr(self, name) for name in fields}, "path": str(self.path), "modified": stamp}


@dataclass
class Inventory:
    """Everything found under the scanned folders (`parents`), and notes on what was not scanned."""

    parents: list[Path]
    entries: list[CacheEntry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def temp_target(name: str) -> str | None:
    """The file name an atomic write was producing, if `name` is one of its temporary files."""
    found = _TEMP_NAME.match(name)
    return None if found is None else found["stem"] + (found["suffix"] or "")


def cache_parents(root: Path | None, cache_dirs: Sequence[Path] = ()) -> tuple[list[Path], list[str]]:
    """Folders whose sub-folders are cache entries: `<root>/features`, `<root>/synthetic` and each cache dir.

    Cache dirs alone are scanned without the default root (`.s5cache` in the working folder): `clean
    --all --cache-dir scratch` deleted `.s5cache`'s current caches too, which nobody named; `--root` with
    them scans both. A symlinked `features/` or `synthetic/` is not followed, since it leads out of the root.
    """
    named_root = root is not None
    root = Path(root if root is not None else DEFAULT_ROOT).expanduser()
    dirs = [Path(d).expanduser() for d in cache_dirs]
    # The default root named as a cache dir is scanned as the root it is, as before.
    root_named = _names(dirs, root)  # also given as --cache-dir
    scan_root = named_root or not dirs or root_named
    parents: list[Path] = []
    notes: list[str] = []
    root_is_cache_dir = scan_root and _is_cache_dir(root)
    if scan_root and root.is_dir():
        _check_root_is_a_root(root, root_is_cache_dir, named_as_cache_dir=root_named)
        for name in ("features", "synthetic"):
            sub = root / name
            if sub.is_symlink():
                notes.append(f"{sub} is a symlink, not followed: pass --root {root} --cache-dir {sub} to include it")
            elif sub.is_dir():
                parents.append(sub)
    elif scan_root and (named_root or root.exists() or not dirs):
        problem = "is not a folder" if root.exists() else "does not exist"
        fix = "run s5 in the folder you train in, or pass --root PATH or --cache-dir PATH"
        raise UserError(f"cache root {root} {problem}", hint=fix)
    # The root itself is never a parent: its features/ and synthetic/ would be "unknown" entries then. A
    # root that is a cache dir, named with --cache-dir too (`_check_root_is_a_root`), is scanned as one.
    seen = {os.path.realpath(p) for p in (parents if root_is_cache_dir else [root, *parents])}
    for folder in dirs:
        if not folder.is_dir():
            raise UserError(f"--cache-dir {folder} is not a folder", hint="a recipe's data.cache_dir")
        if any((folder / marker).is_file() for marker, _ in MARKERS.values()):
            raise UserError(f"{folder} is one cache entry, not a cache dir: pass its parent {folder.parent}")
        if os.path.realpath(folder) not in seen:
            seen.add(os.path.realpath(folder))
            parents.append(folder)
    return parents, notes


def _names(dirs: Sequence[Path], folder: Path) -> bool:
    """Whether `folder` is one of `dirs` (by real path)."""
    return any(os.path.realpath(d) == os.path.realpath(folder) for d in dirs)


def _is_cache_dir(folder: Path) -> bool:
    """Whether `folder` holds cache entries itself (a sub-folder with a marker) instead of features/ and
    synthetic/: a recipe's data.cache_dir, such as .s5cache/features."""
    if (folder / "features").exists() or (folder / "synthetic").exists() or not folder.is_dir():
        return False
    with contextlib.suppress(OSError):
        for child in folder.iterdir():
            if child.is_dir() and not child.is_symlink() and _is_entry(child):
                return True
    return False


def _is_entry(folder: Path) -> bool:
    """Whether `folder` carries an s5cli marker. Why not any `settings.json`: editors and other tools
    leave theirs (`.vscode/settings.json`), and a project folder was then called a cache dir."""
    return _classify(folder)[0] != UNKNOWN_KIND


def _check_root_is_a_root(root: Path, is_cache_dir: bool, named_as_cache_dir: bool) -> None:
    """UserError when the root is one cache entry or a cache dir: scanned as a root, it said "nothing
    cached" although it held entries (`--root .s5cache/features`). Fine when also named with --cache-dir."""
    if _is_entry(root):
        raise UserError(f"{root} is one cache entry, not a cache root", hint=f"use --cache-dir {root.parent}")
    if is_cache_dir and not named_as_cache_dir:
        raise UserError(f"{root} is a cache dir, not a cache root holding features/ and synthetic/",
                        hint=f"use --cache-dir {root}")


def scan(root: Path | None = None, cache_dirs: Sequence[Path] = (), now: float | None = None) -> Inventory:
    """Find every cache entry under the root and the given cache dirs (see `cache_parents`)."""
    parents, notes = cache_parents(root, cache_dirs)
    inventory = Inventory(parents, notes=notes)
    now = time.time() if now is None else now
    # Marked folders come with their marker, unknown ones with the reason they are not identified.
    folders: dict[str, list[tuple[Path, Any]]] = {SYNTHETIC: [], TOKENS: [], UNKNOWN_KIND: []}
    for parent in parents:
        for child in sorted(parent.iterdir()):
            if child.is_symlink():  # listed, never entered: it may point anywhere
                inventory.entries.append(_unknown(child, f"symlink to {os.readlink(child)}"))
            elif child.is_dir():
                kind, marker = _classify(child)
                folders[kind].append((child, marker))
            elif temp_target(child.name):
                inventory.entries.append(_temporary(child, child.lstat(), now, parent))
    # Stale videos first: tokens extracted from them are named by their video ids and are stale too.
    stale_videos: dict[str, Path] = {}
    for folder, marker in folders[SYNTHETIC]:
        entries = _marked_folder(SYNTHETIC, folder, marker, now, {})
        if entries[0].status == STALE:  # video files are `<split>/<video id>.mp4|.json`
            videos = (f for f, _ in _walk(folder) if f.parent != folder and f.suffix in (".mp4", ".json"))
            stale_videos.update((f.stem, folder) for f in videos)
        inventory.entries.extend(entries)
    for folder, marker in folders[TOKENS]:
        inventory.entries.extend(_marked_folder(TOKENS, folder, marker, now, stale_videos))
    for folder, reason in folders[UNKNOWN_KIND]:
        inventory.entries.append(_unknown(folder, reason))
    order = [SYNTHETIC, TOKENS, TEMPORARY, UNKNOWN_KIND]
    inventory.entries.sort(key=lambda entry: (order.index(entry.kind), entry.key, str(entry.path)))
    return inventory


def select(inventory: Inventory, *, everything: bool = False, keys: Sequence[str] = ()) -> list[CacheEntry]:
    """Entries to delete: stale ones (default), all but unknown and recent ones, or those named (`KEY` or
    `PARENT/KEY`, see `named`); plus what they hold.

    Recent temporary files are never picked by --all: a running job may still be writing them.
    """
    entries = inventory.entries
    if keys:
        chosen = [entry for key in keys for entry in named(inventory, key)]
    else:
        chosen = [entry for entry in entries
                  if entry.status == STALE or (everything and entry.status not in (UNKNOWN, RECENT))]
    # What lies inside a chosen folder goes with it, and so do the tokens of chosen stale videos: count them.
    gone = {target for entry in chosen for target in entry.targets}
    picked = {id(entry) for entry in chosen}
    return [
        e for e in entries if id(e) in picked or e.owner in gone or any(gone.intersection(t.parents) for t in e.targets)
    ]


def named(inventory: Inventory, name: str) -> list[CacheEntry]:
    """The entries `--key name` means: those with that key, in one scanned folder; UserError otherwise.

    `name` is a key, or `PARENT/KEY` to pick one of several folders holding that key. Why refuse a key
    found in several folders: the same settings in two cache dirs share a key, and `--key` deleted them
    all (`.s5cache`'s too when only another cache dir was meant), where the help says "the entry".
    """
    parent_text, _, key = name.rpartition("/")
    found = [e for e in inventory.entries if e.key == key and e.owner is None]  # owned ones follow their owner
    if parent_text:
        wanted = os.path.realpath(Path(parent_text).expanduser())
        found = [e for e in found if os.path.realpath(scanned_parent(e, inventory.parents)) == wanted]
    if not found:
        where = f" in {parent_text}" if parent_text else ""
        raise UserError(f"no cache entry with key {key!r}{where}", hint="`s5 cache ls` lists the keys")
    parents = sorted({str(scanned_parent(e, inventory.parents)) for e in found})
    if len(parents) > 1:
        raise UserError(f"key {key!r} names entries in {len(parents)} cache folders ({', '.join(parents)})",
                        hint=f"pick one with --key PARENT/{key}, e.g. --key {parents[0]}/{key}")
    return found


def scanned_parent(entry: CacheEntry, parents: Sequence[Path]) -> Path:
    """The scanned folder an entry lies in (the innermost, if scanned folders nest)."""
    path = Path(os.path.abspath(entry.path))
    inside = [p for p in parents if Path(os.path.abspath(p)) in path.parents]
    return max(inside, key=lambda p: len(Path(os.path.abspath(p)).parts)) if inside else entry.path.parent


def kept_in_use(chosen: Sequence[CacheEntry]) -> list[CacheEntry]:
    """The chosen entries a clean keeps because a running job uses them: those marked in use, and stale
    videos whose tokens are (deleting the videos would leave the tokens unrecognisable, see `delete`)."""
    busy_owners = {entry.owner for entry in chosen if entry.in_use and entry.owner is not None}
    return [entry for entry in chosen if entry.in_use or entry.path in busy_owners]


def delete(inventory: Inventory, chosen: Sequence[CacheEntry]) -> tuple[list[CacheEntry], list[str]]:
    """Remove the chosen entries; (those removed, one line per failure). Only paths inside a scanned folder.

    Entries owned by another (the tokens of stale videos) go before their owner, and an owner whose
    dependents could not all go is kept: the tokens are recognised as stale only through their videos,
    so deleting the videos first left tokens in a folder in use that no later clean could find.
    """
    removed: list[CacheEntry] = []
    failures: list[str] = []
    kept_owners: set[Path] = set()
    for entry in sorted(chosen, key=lambda e: e.owner is None):  # stable: dependents first, in scan order
        if entry.path in kept_owners:
            failures.append(f"{entry.path}: kept until the tokens extracted from its videos can go (see "
                            "above), as only these videos show that those tokens are stale; retry then")
            continue
        problem = _delete_one(entry, inventory.parents)
        if problem is None:
            removed.append(entry)
        else:
            failures.append(f"{entry.path}: {problem}")
            if entry.owner is not None:
                kept_owners.add(entry.owner)
    return removed, failures


def _delete_one(entry: CacheEntry, parents: Sequence[Path]) -> str | None:
    """Remove one entry holding its cache folder's lock; None, or why it could not.

    The lock (`cache_lock`) is taken again now and held while deleting: a job may have started since the
    scan. A temporary file takes the lock of the cache folder it is in: its writer holds it, and deleting
    the file under a running writer made that writer's final rename fail.
    """
    folder = _lock_folder(entry, parents)
    try:
        with exclusive(folder) if folder else contextlib.nullcontext(True) as free:
            if not free:
                return "in use by a running s5 job; stop it (or let it end) and retry"
            _remove(entry, parents)
    except (OSError, UserError) as error:
        return str(error)
    return None


def _lock_folder(entry: CacheEntry, parents: Sequence[Path]) -> Path | None:
    """The cache folder whose in-use lock guards deleting `entry` (None: a file directly in a scanned folder)."""
    if entry.kind != TEMPORARY:
        return entry.path if entry.path.is_dir() and not entry.path.is_symlink() else None
    parent = scanned_parent(entry, parents)
    if entry.path.parent == parent:
        return None
    top = parent / entry.path.relative_to(parent).parts[0]
    return top if top.is_dir() and not top.is_symlink() else None


def _remove(entry: CacheEntry, parents: Sequence[Path]) -> None:
    # Each target on its own, also when a chosen folder holds it: that folder may have been skipped (in
    # use), and what it already took is simply missing now.
    for target in entry.targets:
        _check_inside(target, parents)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)  # removes the links inside, never what they point to
        else:
            target.unlink(missing_ok=True)


def _check_inside(target: Path, parents: Sequence[Path]) -> None:
    # Re-checked at deletion time: the tree may have changed since the scan (a folder swapped for a link).
    path = Path(os.path.abspath(target))
    for parent in (Path(os.path.abspath(p)) for p in parents):
        if path != parent and parent in path.parents:
            between = [a for a in path.parents if parent in a.parents]
            if not any(a.is_symlink() for a in between):
                return
    raise UserError(f"refusing to delete {target}: not inside a scanned cache folder")


def _classify(folder: Path) -> tuple[str, dict[str, Any] | str]:
    """(kind, its marker) of a folder, or (UNKNOWN_KIND, why it is not identified), by `read_marker`.

    A marker that is missing, or is not a regular file, lets the next kind's marker speak; one that cannot
    be read, or is no marker of its kind, leaves the folder unidentified.
    """
    skipped: list[str] = []
    for kind in MARKERS:
        state, found = read_marker(folder, kind)
        if state == FOUND:
            return kind, found
        if state in (UNREADABLE, NOT_A_MARKER):
            return UNKNOWN_KIND, found
        if state == NOT_A_FILE:
            skipped.append(str(found))
    return UNKNOWN_KIND, "; ".join(skipped) or "no synthetic.json or settings.json"


def read_marker(folder: Path, kind: str) -> tuple[str, dict[str, Any] | str]:
    """What `folder` holds as `kind`'s marker: (FOUND, the marker) when it identifies the folder, else
    (ABSENT, NOT_A_FILE, UNREADABLE or NOT_A_MARKER, why not in one line).

    The one rule for what identifies a folder: `s5 cache ls` judges folders by it, and `s5 extract`
    writes a token folder's note exactly when it is ABSENT or NOT_A_MARKER (`FeatureCache`). Only a
    marker that reads and parses as an object with a format of this kind's family identifies the folder:
    one that cannot be read or parsed says nothing about what the folder holds, and calling it stale would
    let a plain `clean` delete what may be anyone's data. Every marker s5cli ever wrote has a string
    "format". Only a regular file, not a link, of at most MAX_MARKER_BYTES is read: a pipe blocked every
    reader until it was killed, a link may lead anywhere (/dev/zero), and a huge file was read whole.
    """
    name, current = MARKERS[kind]
    marker = folder / name
    try:
        mode, size = _lstat(marker)
    except OSError as error:  # no permission to look inside the folder, an I/O error
        return UNREADABLE, f"cannot read {name}: {error.strerror or error}"
    if mode is None:
        return ABSENT, f"no {name}"
    if not S_ISREG(mode):
        return NOT_A_FILE, f"{name} is {_file_kind(mode)}: not read"
    if size > MAX_MARKER_BYTES:
        return NOT_A_MARKER, f"{name} is over {MAX_MARKER_BYTES // 1024} KiB: not an s5cli marker"
    try:
        found = json.loads(marker.read_text(encoding="utf-8"))
    except OSError as error:
        return UNREADABLE, f"cannot read {name}: {error.strerror or error}"
    except ValueError as error:  # not JSON, or not UTF-8
        return NOT_A_MARKER, f"cannot parse {name}: {error}"
    if not isinstance(found, dict) or not isinstance(found.get("format"), str):
        return NOT_A_MARKER, f"{name} holds no format: not an s5cli marker"
    # Another tool's settings.json is not ours to call stale: only this kind's own format family
    # ("s5cli-tokens/<version>") identifies the folder.
    family = current.split("/")[0] + "/"
    if not found["format"].startswith(family):
        return NOT_A_MARKER, f"{name} has format {found['format']!r}, not {family}...: not an s5cli marker"
    return FOUND, found


def _lstat(path: Path) -> tuple[int | None, int]:
    """(mode, size) of `path` itself, not of what a link there names; (None, 0) when nothing is there."""
    try:
        info = path.lstat()
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR):
            return None, 0
        raise
    return info.st_mode, info.st_size


def _file_kind(mode: int) -> str:
    """What a marker that is not a regular file is, for the reason `s5 cache ls` shows."""
    if S_ISLNK(mode):
        return "a symbolic link"
    if S_ISFIFO(mode):
        return "a pipe"
    return "a folder" if S_ISDIR(mode) else "not a regular file"


def _marked_folder(
    kind: str, folder: Path, marker: dict[str, Any], now: float, stale_videos: dict[str, Path]
) -> list[CacheEntry]:
    """The folder's entry, then its leftover temporary files, then (tokens) its files of stale videos."""
    found: str = marker["format"]  # a string: `_classify` made sure
    status = CURRENT if found == MARKERS[kind][1] else STALE
    busy = in_use(folder)  # a running job's mark covers everything inside: its writes and its tokens
    own: list[os.stat_result] = []
    extras: list[CacheEntry] = []
    orphans: dict[Path, list[tuple[Path, os.stat_result]]] = {}
    for path, stat in _walk(folder):
        if path.parent == folder and (path.name == LOCK_NAME or is_claim(path.name)):
            continue  # the in-use mark or a video's claim (empty, deleted by its extraction): not cached data
        if temp_target(path.name):
            extras.append(_temporary(path, stat, now, folder, busy))
        elif status == CURRENT and path.suffix == ".safetensors" and path.stem in stale_videos:
            orphans.setdefault(stale_videos[path.stem], []).append((path, stat))
        else:
            own.append(stat)
    summary = _summary(kind, marker)
    entry = CacheEntry(
        kind, folder.name, folder, found, status, summary, *_tally(own, folder.lstat().st_mtime), in_use=busy
    )
    for videos, files in orphans.items():
        # Keyed like the videos, and owned by them: `--key` on the videos deletes their tokens too.
        note = f"tokens of these stale videos, in {folder.name}"
        counts = _tally(stat for _, stat in files)
        members = tuple(path for path, _ in files)
        extras.append(CacheEntry(kind, videos.name, folder, found, STALE, note, *counts, members, videos, busy))
    return [entry, *extras]


def _summary(kind: str, marker: dict[str, Any]) -> str:
    if kind == SYNTHETIC:
        counts = "/".join(str(marker.get(f"num_{split}", "?")) for split in ("train", "val", "test"))
        text = f"{marker.get('frames', '?')} frames, {marker.get('size', '?')} px, {counts} videos"
        return text + (", shared background" if marker.get("shared_background") else "")
    # Empty strings stand for None in the note: all frames, or as many as `fps` gives.
    frames = marker.get("frames") and f"{marker['frames']} frames"
    rate = frames or (f"{marker['fps']} fps" if marker.get("fps") else "all frames")
    size = f"{marker.get('image_size', '?')} px" + (" squashed" if marker.get("resize") == "squash" else "")
    return f"{marker.get('backbone', '?')}, {rate}, {size}, {marker.get('dtype', '?')}"


def _temporary(path: Path, stat: os.stat_result, now: float, folder: Path, busy: bool = False) -> CacheEntry:
    status = STALE if now - stat.st_mtime >= TEMP_GRACE_SECONDS else RECENT
    note = f"unfinished {temp_target(path.name)}, in {path.parent.relative_to(folder.parent)}"
    return CacheEntry(TEMPORARY, path.name, path, None, status, note, 1, stat.st_size, stat.st_mtime, in_use=busy)


def _unknown(path: Path, note: str) -> CacheEntry:
    stats = () if path.is_symlink() else (stat for _, stat in _walk(path))
    return CacheEntry(UNKNOWN_KIND, path.name, path, None, UNKNOWN, note, *_tally(stats, path.lstat().st_mtime))


def bytes_left(entry: CacheEntry) -> int:
    """Bytes still on disk under an entry's targets, measured as the scan measured them (`_walk`, `_tally`):
    what an entry that failed part-way through `delete` did not free."""
    stats: list[os.stat_result] = []
    for target in entry.targets:
        if target.is_dir() and not target.is_symlink():
            stats.extend(stat for _, stat in _walk(target))
        else:
            with contextlib.suppress(OSError):
                stats.append(target.lstat())
    return _tally(stats)[1]


def _tally(stats: Iterable[os.stat_result], modified: float = 0.0) -> tuple[int, int, float]:
    """(files, bytes, latest mtime) of some files."""
    files = size = 0
    for stat in stats:
        files, size, modified = files + 1, size + stat.st_size, max(modified, stat.st_mtime)
    return files, size, modified


def _walk(folder: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """Every file under `folder` with its lstat; symlinks are reported as files and never entered."""
    for top, dirs, files in os.walk(folder):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(top, d))]:
            path = Path(top, name)
            try:
                yield path, path.lstat()
            except FileNotFoundError:  # removed while we looked (a running job replacing a file)
                continue
