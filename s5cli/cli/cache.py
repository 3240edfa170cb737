"""`s5 cache ls|clean`: see and delete the generated videos and backbone tokens s5cli keeps on disk."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from s5cli.benchmark.measure import format_bytes
from s5cli.cli.help_text import PlainFlagCommand, PlainFlagGroup, command_help, flag

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from s5cli.data.cache_inventory import CacheEntry, Inventory

app = typer.Typer(
    cls=PlainFlagGroup,
    help=command_help(
        """See and delete the videos and tokens s5cli caches (under .s5cache by default).

        Training reuses current entries; stale ones (older formats, leftovers of interrupted writes) can go.

          s5 cache ls                  # what is cached, and what is stale
          s5 cache clean --dry-run     # what `clean` would delete
        """
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
)

ROOT_HELP = "Cache root holding features/ and synthetic/ (default: .s5cache)."
CACHE_DIR_HELP = (
    "Scan this folder of caches, e.g. a recipe's data.cache_dir, instead of .s5cache (add --root to scan "
    "a root too); repeatable."
)
STATUS_STYLE = {"current": "green", "stale": "yellow", "unknown": "dim", "recent": "cyan"}


def list_caches(
    root: Path | None = typer.Option(None, "--root", help=ROOT_HELP),
    cache_dirs: list[Path] | None = typer.Option(None, "--cache-dir", metavar="<path>", help=CACHE_DIR_HELP),
    as_json: bool = flag(False, "--json", help="Print JSON to stdout instead of a table."),
) -> None:
    """List cached synthetic videos and backbone tokens, and whether this version still uses them.

    An entry is current when its marker (synthetic.json, settings.json) has the format this version
    writes, stale when older (videos of an older generator, the tokens extracted from them, token folders
    of an older format), unknown when a folder has no marker or one that cannot be read or parsed (the
    settings column says why): unknown folders are never deleted unless named with --key. Temporary files
    left by interrupted writes are listed too.

      s5 cache ls
      s5 cache ls --cache-dir /data/tokens     # a recipe's data.cache_dir
      s5 cache ls --json                       # machine-readable
    """
    from s5cli.cli.console import stderr, stdout
    from s5cli.data.cache_inventory import STALE

    inventory = _scan(root, cache_dirs)
    entries = inventory.entries
    if as_json:
        import json

        stale = [e for e in entries if e.status == STALE]
        total = {"entries": len(entries), "files": sum(e.files for e in entries), "bytes": _bytes(entries)}
        document = {
            "parents": [str(p) for p in inventory.parents],
            "entries": [entry.as_json() for entry in entries],
            "total": {**total, "stale_entries": len(stale), "stale_bytes": _bytes(stale)},
        }
        typer.echo(json.dumps(document, indent=1))
        return
    if not entries:
        stdout.print(f"nothing cached in {_where(inventory, root)}")
        return
    _print_tables(stdout, entries, inventory.parents)
    stale = [e for e in entries if e.status == STALE]
    line = f"{_count(len(entries), 'entry')}, {_count(sum(e.files for e in entries), 'file')}, {format_bytes(_bytes(entries))}"
    stdout.print(line + (f"; {len(stale)} stale: {format_bytes(_bytes(stale))}" if stale else ""))
    _notes(stderr, entries)
    if stale:
        stderr.print("delete the stale ones with `s5 cache clean` (`--dry-run` shows what goes)")


def clean_caches(
    root: Path | None = typer.Option(None, "--root", help=ROOT_HELP),
    cache_dirs: list[Path] | None = typer.Option(None, "--cache-dir", metavar="<path>", help=CACHE_DIR_HELP),
    stale: bool = flag(False, "--stale", help="Delete stale entries and leftover temporary files (default)."),
    everything: bool = flag(False, "--all", help="Delete every recognised entry, current ones too (those running jobs use are skipped)."),
    keys: list[str] | None = typer.Option(
        None, "--key", metavar="<str>",
        help="Delete the entry with this key (see `s5 cache ls`); PARENT/KEY where several folders hold it; "
             "repeatable.",
    ),
    dry_run: bool = flag(False, "--dry-run", help="Show what would be deleted; delete nothing."),
    yes: bool = flag(False, "--yes", "-y", help="Do not ask (needed when stdin is not a terminal)."),
) -> None:
    """Delete stale caches (default), every recognised one (--all) or the entries named with --key.

    Stale: videos of an older generator format, the tokens extracted from them, token folders of an older
    format, and temporary files left by interrupted writes (once 15 min old; younger ones are kept even
    with --all). Current entries are kept unless --all or --key; folders without a readable marker only
    go when named with --key. Folders a running s5 job is using, and the files being written in them, are
    skipped (and the command exits non-zero). Shows what goes and how much it frees, then asks (--yes
    does not ask; needed when stdin is not a terminal).

      s5 cache clean --dry-run          # show, delete nothing
      s5 cache clean                    # the stale entries, after asking
      s5 cache clean --all --yes        # everything recognised, no question
      s5 cache clean --key 3360df8198b1 # one entry (keys: s5 cache ls)
    """
    from s5cli.cli.console import print_warning, stderr, stdout
    from s5cli.data.cache_inventory import bytes_left, delete, kept_in_use, select
    from s5cli.errors import RunFailure, UserError

    if stale + everything + bool(keys) > 1:
        raise UserError("--stale, --all and --key cannot be combined: pick one")
    inventory = _scan(root, cache_dirs)
    chosen = select(inventory, everything=everything, keys=keys or ())
    if not chosen:
        what = "recognised" if everything else "stale"
        stdout.print(f"nothing to clean in {_where(inventory, root)}: no {what} entries")
        return
    _print_tables(stdout, chosen, inventory.parents)
    # What a deletion would free: entries in use (and videos whose tokens are) are kept by `delete`.
    kept = {id(e) for e in kept_in_use(chosen)}
    free = [e for e in chosen if id(e) not in kept]
    busy = len(kept)
    # Entries in use are said once here; each one still in use when deleting is named with its fix below.
    stdout.print(f"{_count(len(chosen), 'entry')}, {_count(sum(e.files for e in free), 'file')}: {format_bytes(_bytes(free))} to free"
                 + (f" ({busy} in use by running s5 jobs, kept)" if busy else ""))
    if dry_run:
        stdout.print("dry run: nothing deleted")
        return
    if not yes:
        if not _interactive():
            raise UserError("stdin is not a terminal, so s5 cannot ask: pass --yes to delete these entries")
        question = "Delete this entry?" if len(chosen) == 1 else f"Delete these {len(chosen)} entries?"
        if not typer.confirm(question, default=False):
            stderr.print("nothing deleted")
            raise typer.Exit(code=1)
    removed, failures = delete(inventory, chosen)
    # Entries that failed part-way (a folder whose files went but which could not be removed itself) freed
    # what they lost: "freed 0 B" said nothing was gone when all their files were.
    gone = {id(entry) for entry in removed}
    freed = _bytes(removed) + sum(max(0, entry.bytes - bytes_left(entry)) for entry in chosen if id(entry) not in gone)
    stdout.print(f"deleted {_count(len(removed), 'entry')}, freed {format_bytes(freed)}")
    for failure in failures:
        print_warning(f"could not delete {failure}")
    if failures:
        raise RunFailure(f"{len(failures)} of {_count(len(chosen), 'entry')} could not be deleted (see above)")


app.command("ls", cls=PlainFlagCommand, help=command_help(list_caches.__doc__))(list_caches)
app.command("clean", cls=PlainFlagCommand, help=command_help(clean_caches.__doc__))(clean_caches)


def _interactive() -> bool:
    """Whether a question can be asked (a module function, so tests can pretend to be a terminal)."""
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, OSError):  # a closed stdin
        return False


def _scan(root: Path | None, cache_dirs: list[Path] | None) -> Inventory:
    from s5cli.cli.console import print_warning
    from s5cli.data.cache_inventory import scan

    inventory = scan(root, cache_dirs or ())
    for note in inventory.notes:
        print_warning(note)
    return inventory


def _print_tables(console: Console, entries: list[CacheEntry], parents: list[Path]) -> None:
    """The entries as one table, or one table per cache folder under an `in FOLDER:` line where the folder
    says something the kind does not.

    Why not an "in" column: the other columns already fill 80, so the table grew to 92 columns and the
    folder broke mid-word (`.s5cache/syntheti` / `c`); for `.s5cache` alone it only repeated the kind.
    """
    from rich.markup import escape

    from s5cli.data.cache_inventory import scanned_parent

    # By the scanned folder, not the entry's own parent: a leftover temporary file inside a token folder
    # lies in the token folder's cache dir.
    groups: dict[Path, list[CacheEntry]] = {}
    for entry in entries:
        groups.setdefault(scanned_parent(entry, parents), []).append(entry)
    # soft_wrap=False: a table is no one-line message, and soft wrapping made it a column wider than asked.
    if not _folders_matter(list(groups)):
        console.print(_table(console, entries), soft_wrap=False)
        return
    for folder in sorted(groups, key=lambda f: parents.index(f) if f in parents else len(parents)):
        console.print(f"in [bold]{escape(_shown_folder(folder))}[/]:")
        console.print(_table(console, groups[folder]), soft_wrap=False)


def _folders_matter(folders: list[Path]) -> bool:
    """Whether entries come from several cache folders (--root and --cache-dir, or two cache dirs), where
    one key may be in each; a root's own features/ and synthetic/ need no saying (the kind says which)."""
    if len(folders) < 2:
        return False
    one_root = len({os.path.abspath(folder.parent) for folder in folders}) == 1
    return not (one_root and {folder.name for folder in folders} <= {"features", "synthetic"})


def _shown_folder(folder: Path) -> str:
    """`folder` relative to the working folder when inside it (short, and what `--key PARENT/KEY` takes)."""
    absolute = Path(os.path.abspath(folder))
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:  # elsewhere: as given
        return str(folder)


def _table(console: Console, entries: list[CacheEntry]) -> Table:
    """One table of `entries`: it fits 80 columns, kind and date breaking at their space and settings
    wrapping; keys and sizes never break."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    # Narrow, kind, key and date get fixed widths (a word, a 12-character key, a date over its time) and
    # settings alone shrinks to fit: Rich shrank them all, and at 80 columns cut the date to `2026-12-0`.
    narrow = console.width < 120
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    table.add_column("kind", min_width=9, width=9 if narrow else None)
    table.add_column("key", overflow="fold", min_width=12, width=12 if narrow else None)
    table.add_column("status", no_wrap=True)
    table.add_column("settings", ratio=1, overflow="fold")
    table.add_column("files", justify="right", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("modified", min_width=10, width=10 if narrow else None)
    for entry in entries:
        # A folder a running job uses is one this version reads: "in use" says more than "current".
        status = "[bold cyan]in use[/]" if entry.in_use else f"[{STATUS_STYLE.get(entry.status, '')}]{entry.status}[/]"
        row = [entry.kind, escape(entry.key), status, escape(entry.settings), str(entry.files)]
        table.add_row(*row, format_bytes(entry.bytes), _time(entry.modified))
    return table


def _notes(console: Console, entries: list[CacheEntry]) -> None:
    from s5cli.data.cache_inventory import RECENT, TEMP_GRACE_SECONDS, UNKNOWN

    busy = sum(e.in_use for e in entries)
    if busy:
        console.print(f"{_count(busy, 'entry')} {'is' if busy == 1 else 'are'} in use by running s5 jobs; "
                      f"`clean` skips {'it' if busy == 1 else 'them'} until those end")
    recent = sum(e.status == RECENT for e in entries)
    if recent:
        minutes = TEMP_GRACE_SECONDS // 60
        console.print(f"{_count(recent, 'temporary file')} {'is' if recent == 1 else 'are'} under {minutes} min old: "
                      f"a job may still be writing {'it' if recent == 1 else 'them'}")
    if any(e.status == UNKNOWN for e in entries):
        note = "unknown folders have no marker s5cli can read: they go only with `s5 cache clean --key KEY`"
        console.print(note)


def _where(inventory: Inventory, root: Path | None) -> str:
    from rich.markup import escape

    from s5cli.data.cache_inventory import DEFAULT_ROOT

    return escape(", ".join(str(p) for p in inventory.parents) or str(root or DEFAULT_ROOT))


def _count(n: int, noun: str) -> str:
    """'1 entry', '2 entries', '0 files': the noun in the plural unless there is exactly one."""
    if n == 1:
        return f"1 {noun}"
    return f"{n} {noun[:-1]}ies" if noun.endswith("y") else f"{n} {noun}s"


def _bytes(entries: list[CacheEntry]) -> int:
    return sum(entry.bytes for entry in entries)


def _time(stamp: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M")
