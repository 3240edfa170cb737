"""`s5 cache ls|clean` through the real CLI: tables and JSON, what `clean` deletes, and when it refuses."""

from __future__ import annotations

import errno
import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from s5cli.cli import cache as cache_cli
from s5cli.cli.app import app
from tests.data.cache_trees import OLD_SPEC, SETTINGS, SPEC, build_tree, files_under, write_tokens

WIDE = {"COLUMNS": "200"}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    build_tree(tmp_path / ".s5cache")
    return tmp_path / ".s5cache"


def invoke(runner: CliRunner, *args: str, **kwargs):
    return runner.invoke(app, ["cache", *args], env=WIDE, **kwargs)


def test_ls_shows_every_entry_with_its_status_and_a_clean_hint(runner, root):
    result = invoke(runner, "ls", "--root", str(root))
    assert result.exit_code == 0, result.output
    for text in (SPEC.key(), OLD_SPEC.key(), SETTINGS.key(), "0123456789ab", "my-notes", "temporary file"):
        assert text in result.stdout, text
    assert {"current", "stale", "unknown"} <= set(result.stdout.split())
    assert "patch_pool, 16 frames, 64 px, float32" in result.stdout
    assert "7 entries" in result.stdout and "stale:" in result.stdout
    assert "s5 cache clean" in result.stderr


def test_ls_json_schema(runner, root):
    result = invoke(runner, "ls", "--root", str(root), "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert set(document) == {"parents", "entries", "total"}
    fields = {"kind", "key", "path", "format", "status", "in_use", "settings", "files", "bytes", "modified"}
    assert all(set(entry) == fields for entry in document["entries"])
    assert not any(entry["in_use"] for entry in document["entries"])
    statuses = {(e["kind"], e["key"]): e["status"] for e in document["entries"]}
    assert statuses["synthetic videos", OLD_SPEC.key()] == "stale"
    assert statuses["synthetic videos", SPEC.key()] == "current"
    assert statuses["backbone tokens", OLD_SPEC.key()] == "stale"  # tokens of the stale videos
    assert statuses["unknown", "my-notes"] == "unknown"
    total = document["total"]
    assert total["bytes"] == sum(e["bytes"] for e in document["entries"])
    assert total["bytes"] == sum(p.stat().st_size for p in files_under(root))
    assert total["files"] == len(files_under(root)) and total["entries"] == 7
    assert total["stale_entries"] == 4 and 0 < total["stale_bytes"] < total["bytes"]
    assert document["entries"][0]["modified"].endswith("+00:00")


def test_clean_yes_removes_only_stale_entries(runner, root):
    result = invoke(runner, "clean", "--root", str(root), "--yes")
    assert result.exit_code == 0, result.output
    assert "deleted 4 entries, freed" in result.stdout
    names = {p.name for p in (root / "synthetic").iterdir()} | {p.name for p in (root / "features").iterdir()}
    assert names == {SPEC.key(), SETTINGS.key(), "my-notes"}
    again = invoke(runner, "clean", "--root", str(root), "--yes")
    assert again.exit_code == 0 and "nothing to clean" in again.stdout


def test_an_entry_deleted_part_way_counts_the_bytes_it_freed(runner, root, monkeypatch):
    """A folder whose files were deleted but which could not be removed itself (a read-only parent) said
    "freed 0 B" beside the error: its files were gone all the same."""
    from s5cli.data import cache_inventory

    def files_only(entry, parents):
        for target in entry.targets:
            for path in (target.rglob("*") if target.is_dir() else [target]):
                if path.is_file():
                    path.unlink()
        raise PermissionError(errno.EACCES, "Permission denied", str(entry.path))

    monkeypatch.setattr(cache_inventory, "_remove", files_only)
    result = invoke(runner, "clean", "--root", str(root), "--yes")
    assert result.exit_code == 1
    assert "deleted 0 entries, freed" in result.stdout and "freed 0 B" not in result.stdout
    assert "could not be deleted" in result.output


@pytest.mark.parametrize(
    "args",
    [["--dry-run"], ["--dry-run", "--all"], [], ["--all"], ["--key", "my-notes"]],
    ids=["dry-run", "dry-run-all", "no-yes", "no-yes-all", "no-yes-key"],
)
def test_dry_run_and_missing_yes_without_a_terminal_delete_nothing(runner, root, args):
    before = files_under(root)
    result = invoke(runner, "clean", "--root", str(root), *args)
    assert files_under(root) == before
    if "--dry-run" in args:
        assert result.exit_code == 0 and "dry run: nothing deleted" in result.stdout
    else:
        assert result.exit_code == 2
        [line] = result.stderr.strip().splitlines()  # one red line
        assert "--yes" in line


def test_asks_on_a_terminal_and_no_keeps_everything(runner, root, monkeypatch):
    monkeypatch.setattr(cache_cli, "_interactive", lambda: True)
    before = files_under(root)
    result = invoke(runner, "clean", "--root", str(root), input="n\n")
    assert result.exit_code == 1 and files_under(root) == before
    result = invoke(runner, "clean", "--root", str(root), input="y\n")
    assert result.exit_code == 0, result.output
    assert not (root / "synthetic" / OLD_SPEC.key()).exists()


def test_all_keeps_unknown_folders_and_the_root(runner, root):
    result = invoke(runner, "clean", "--root", str(root), "--all", "-y")
    assert result.exit_code == 0, result.output
    assert [p.name for p in (root / "features").iterdir()] == ["my-notes"]
    assert list((root / "synthetic").iterdir()) == []


def test_key_deletes_just_that_entry_and_unknown_keys_are_errors(runner, root):
    result = invoke(runner, "clean", "--root", str(root), "--key", "my-notes", "--yes")
    assert result.exit_code == 0, result.output
    assert not (root / "features" / "my-notes").exists()
    assert (root / "features" / "0123456789ab").is_dir()  # stale, but not named
    result = invoke(runner, "clean", "--root", str(root), "--key", "nope", "--yes")
    assert result.exit_code == 2
    assert "'nope'" in result.stderr and "s5 cache ls" in result.stderr
    result = invoke(runner, "clean", "--root", str(root), "--key", "my-notes", "--all")
    assert result.exit_code == 2 and "cannot be combined" in result.stderr


def test_missing_root_is_one_line_naming_it_and_the_fix(runner, tmp_path):
    for command in ("ls", "clean"):
        result = invoke(runner, command, "--root", str(tmp_path / "nowhere"))
        assert result.exit_code == 2
        [line] = result.stderr.strip().splitlines()
        assert str(tmp_path / "nowhere") in line and "--root" in line


def test_a_cache_dir_elsewhere_without_a_default_root(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no .s5cache here
    write_tokens(tmp_path / "tokens", ["clip"])
    result = invoke(runner, "ls", "--cache-dir", str(tmp_path / "tokens"), "--json")
    assert result.exit_code == 0, result.output
    [entry] = json.loads(result.stdout)["entries"]
    assert (entry["key"], entry["status"], entry["files"]) == (SETTINGS.key(), "current", 2)
    result = invoke(runner, "clean", "--cache-dir", str(tmp_path / "tokens"))
    assert result.exit_code == 0 and "nothing to clean" in result.stdout


def test_help_reads_well_at_80_columns(runner):
    width = 80
    for args in (["--help"], ["cache", "--help"], ["cache", "ls", "--help"], ["cache", "clean", "--help"]):
        result = runner.invoke(app, args, env={"COLUMNS": str(width), "NO_COLOR": "1"})
        assert result.exit_code == 0, result.output
        assert all(len(line) <= width for line in result.output.splitlines())
        assert "cache" in result.output
    lines = [line.strip() for line in result.output.splitlines()]
    for example in ("s5 cache clean --dry-run", "s5 cache clean --all --yes"):
        assert any(line.startswith(example) for line in lines), example  # examples are never wrapped
    description = lines[: next(i for i, line in enumerate(lines) if line.startswith("╭"))]
    for line, following in itertools.pairwise(description):
        if line and following and not line.startswith("s5 "):  # prose breaks only where the line is full
            assert len(line) + 1 + len(following.split()[0]) > width - 4, line


def test_cache_commands_do_not_import_torch(tmp_path):
    code = (
        "import sys; from s5cli.cli.app import app\n"
        f"app(['cache', 'ls', '--root', {str(tmp_path)!r}], prog_name='s5', standalone_mode=False)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr


def test_entries_of_several_cache_folders_say_where_they_are(runner, tmp_path, monkeypatch):
    """The same settings in two cache folders give two entries with one key: a table per folder, under a
    line naming it (relative to the working folder when inside it, else as given)."""
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    write_tokens(tmp_path / "work" / "a", ["clip"])
    write_tokens(tmp_path / "b", ["clip"])
    result = invoke(runner, "ls", "--cache-dir", str(tmp_path / "work" / "a"), "--cache-dir", str(tmp_path / "b"))
    assert result.exit_code == 0, result.output
    assert result.stdout.count(SETTINGS.key()) == 2
    lines = result.stdout.splitlines()
    assert lines[0] == "in a:" and f"in {tmp_path / 'b'}:" in lines
    assert [line.split()[-1] for line in lines if line.startswith("kind")] == ["modified", "modified"]
    one = invoke(runner, "ls", "--cache-dir", "a")
    assert one.stdout.splitlines()[0].split()[-1] == "modified"  # one folder: no line naming it


def _ls_lines(runner: CliRunner, root: Path, width: int) -> list[str]:
    result = runner.invoke(app, ["cache", "ls", "--root", str(root)], env={"COLUMNS": str(width), "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


@pytest.mark.parametrize("width", [80, 100, 120])
def test_ls_fits_the_terminal_and_keeps_keys_and_dates_whole(runner, root, width):
    """At 80 columns the table was 92 wide, with an "in" column that broke `.s5cache/syntheti` / `c` and
    only repeated the kind; squeezed, the date was cut to `2026-12-0`."""
    lines = _ls_lines(runner, root, width)
    table = lines[: next(i for i, line in enumerate(lines) if "entries," in line)]
    assert max(len(line) for line in table) <= width
    assert table[0].split() == ["kind", "key", "status", "settings", "files", "size", "modified"]
    text = "\n".join(table)
    for key in (SPEC.key(), OLD_SPEC.key(), SETTINGS.key(), "0123456789ab"):
        assert re.search(rf"\s{key}\s", text), key  # whole, on one line
    assert len(re.findall(r"\b\d{4}-\d\d-\d\d\b", text)) == 7  # one whole date per entry
    assert not any(line.startswith("in ") for line in lines)  # .s5cache's features/ and synthetic/: kind says


def test_folders_whose_marker_cannot_be_read_are_unknown_and_never_cleaned(runner, root, monkeypatch):
    """A corrupt or unreadable marker identifies nothing: `ls` says why, and `clean` needs --key for them."""
    videos, tokens = root / "synthetic" / OLD_SPEC.key(), root / "features" / "0123456789ab"
    (videos / "synthetic.json").write_bytes(b"\x00garbage")
    read_text = Path.read_text

    def denied(self: Path, *args, **kwargs) -> str:  # root reads a chmod 000 file: fail the read itself
        if self == tokens / "settings.json":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", denied)
    before = files_under(videos) | files_under(tokens)
    result = invoke(runner, "ls", "--root", str(root))
    assert result.exit_code == 0, result.output
    rows = {line.split()[1]: line for line in result.stdout.splitlines() if line.startswith("unknown")}
    assert "cannot parse synthetic.json: Expecting value" in rows[OLD_SPEC.key()]
    assert "cannot read settings.json: Permission denied" in rows["0123456789ab"]
    assert "no marker s5cli can read" in result.stderr
    dry = invoke(runner, "clean", "--root", str(root), "--dry-run")
    assert dry.exit_code == 0 and OLD_SPEC.key() not in dry.stdout and "0123456789ab" not in dry.stdout
    for args in ([], ["--all"]):
        result = invoke(runner, "clean", "--root", str(root), "--yes", *args)
        assert result.exit_code == 0, result.output
        assert before <= files_under(root)
    result = invoke(runner, "clean", "--root", str(root), "--yes", "--key", OLD_SPEC.key())
    assert result.exit_code == 0 and not videos.exists()  # named, it goes


def test_clean_of_one_cache_dir_leaves_the_default_root_alone(runner, tmp_path, monkeypatch):
    """`--cache-dir scratch` is what is cleaned: `.s5cache` here is neither listed nor touched."""
    monkeypatch.chdir(tmp_path)
    here = write_tokens(tmp_path / ".s5cache" / "features", ["clip"])
    there = write_tokens(tmp_path / "scratch", ["clip"])
    result = invoke(runner, "clean", "--cache-dir", "scratch", "--key", SETTINGS.key(), "--yes")
    assert result.exit_code == 0, result.output
    assert not there.exists() and (here / "clip.safetensors").is_file()
    there = write_tokens(tmp_path / "scratch", ["clip"])
    result = invoke(runner, "clean", "--root", ".s5cache", "--cache-dir", "scratch", "--key", SETTINGS.key(), "-y")
    assert result.exit_code == 2 and there.is_dir() and here.is_dir()
    [line] = result.stderr.strip().splitlines()
    assert "2 cache folders" in line and "--key PARENT/" in line
    result = invoke(runner, "clean", "--all", "--cache-dir", "scratch", "--yes")
    assert result.exit_code == 0 and not there.exists() and (here / "clip.safetensors").is_file()
