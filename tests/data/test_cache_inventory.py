"""Cache inventory: markers tell current from stale, sizes add up, and deletion keeps what it must keep.

The trees come from `tests/data/cache_trees.py` (the real writers), shared with `tests/cli/test_cache_cli.py`.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from s5cli.data import cache_inventory as inv
from s5cli.data.cache_settings import CACHE_FORMAT
from s5cli.data.synthetic_video import FORMAT, video_id
from s5cli.errors import UserError
from tests.data.cache_trees import (
    OLD_SPEC,
    OLD_SYNTHETIC,
    SETTINGS,
    SPEC,
    build_tree,
    files_under,
    leftover,
    write_tokens,
    write_videos,
)


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    return build_tree(tmp_path / ".s5cache")


def by_key(inventory: inv.Inventory) -> dict[tuple[str, str], inv.CacheEntry]:
    return {(entry.kind, entry.key): entry for entry in inventory.entries}


def test_markers_tell_current_from_stale_with_the_real_format_constants(tree, tmp_path):
    entries = by_key(inv.scan(tmp_path / ".s5cache"))
    assert entries[inv.SYNTHETIC, SPEC.key()].status == inv.CURRENT
    assert entries[inv.SYNTHETIC, SPEC.key()].format == FORMAT
    assert entries[inv.SYNTHETIC, OLD_SPEC.key()].status == inv.STALE
    assert entries[inv.SYNTHETIC, OLD_SPEC.key()].format == OLD_SYNTHETIC
    assert entries[inv.TOKENS, SETTINGS.key()].status == inv.CURRENT
    assert entries[inv.TOKENS, SETTINGS.key()].format == CACHE_FORMAT
    assert entries[inv.TOKENS, "0123456789ab"].status == inv.STALE
    assert entries[inv.UNKNOWN_KIND, "my-notes"].status == inv.UNKNOWN
    assert entries[inv.TOKENS, SETTINGS.key()].settings == "patch_pool, 16 frames, 64 px, float32"
    assert entries[inv.SYNTHETIC, SPEC.key()].settings == "16 frames, 64 px, 2/1/1 videos"
    # Imported, not copied: the next format bump makes today's folders stale by itself.
    assert inv.MARKERS[inv.SYNTHETIC][1] is FORMAT and inv.MARKERS[inv.TOKENS][1] is CACHE_FORMAT


def test_a_format_bump_makes_current_folders_stale(tree, tmp_path, monkeypatch):
    monkeypatch.setitem(inv.MARKERS, inv.SYNTHETIC, ("synthetic.json", "s5cli-synthetic/3"))
    assert by_key(inv.scan(tmp_path / ".s5cache"))[inv.SYNTHETIC, SPEC.key()].status == inv.STALE


def test_file_counts_and_sizes_add_up(tree, tmp_path):
    inventory = inv.scan(tmp_path / ".s5cache")
    entries = by_key(inventory)
    current = entries[inv.SYNTHETIC, SPEC.key()]
    marker = (tree["current"] / "synthetic.json").stat().st_size
    assert (current.files, current.bytes) == (1 + 2 * 4, marker + 4 * (100 + 2))
    assert current.modified == max(p.stat().st_mtime for p in files_under(tree["current"]))
    # Every byte under the root is in exactly one entry.
    assert sum(e.bytes for e in inventory.entries) == sum(p.stat().st_size for p in files_under(tmp_path))
    assert sum(e.files for e in inventory.entries) == len(files_under(tmp_path))


def test_tokens_of_stale_videos_are_their_own_stale_entry(tree, tmp_path):
    entries = inv.scan(tmp_path / ".s5cache").entries
    orphans = [e for e in entries if e.kind == inv.TOKENS and e.key == OLD_SPEC.key()]
    assert len(orphans) == 1 and orphans[0].status == inv.STALE and orphans[0].files == 4
    assert {p.name for p in orphans[0].members} == {
        f"{video_id(OLD_SPEC, s, i)}.safetensors" for s, n in (("train", 2), ("val", 1), ("test", 1)) for i in range(n)
    }
    folder = next(e for e in entries if e.key == SETTINGS.key())
    assert folder.files == 1 + 4  # settings.json and the current videos' tokens


def test_leftover_temporary_files_are_found_and_recent_ones_spared(tree, tmp_path):
    recent = leftover(tree["current"] / "train" / "late.mp4")
    os.utime(recent)  # just now: its writer may still be running
    temps = {e.path: e for e in inv.scan(tmp_path / ".s5cache").entries if e.kind == inv.TEMPORARY}
    assert set(temps) == {tree["temp"], recent}
    assert temps[tree["temp"]].status == inv.STALE and temps[recent].status == inv.RECENT
    assert temps[tree["temp"]].settings.startswith("unfinished extra.safetensors")
    chosen = inv.select(inv.scan(tmp_path / ".s5cache"))
    assert any(e.path == tree["temp"] for e in chosen) and not any(e.path == recent for e in chosen)


def test_temporary_names_match_only_atomic_write_leftovers():
    assert inv.temp_target(".train_00001-ab12cd34.k2_9xq0m.tmp.mp4") == "train_00001-ab12cd34.mp4"
    assert inv.temp_target(".settings.abcdefgh.tmp.json") == "settings.json"
    for name in ("settings.json", ".hidden", "train_00001.mp4", ".x.tmp.json", ".a.short.tmp.mp4"):
        assert inv.temp_target(name) is None, name


def test_clean_by_default_removes_only_stale_entries(tree, tmp_path):
    root = tmp_path / ".s5cache"
    inventory = inv.scan(root)
    removed, failures = inv.delete(inventory, inv.select(inventory))
    assert not failures
    assert not tree["old"].exists() and not tree["stale_tokens"].exists() and not tree["temp"].exists()
    assert tree["current"].is_dir() and tree["unknown"].is_dir() and (tree["unknown"] / "keep.txt").is_file()
    left = {p.stem for p in tree["tokens"].glob("*.safetensors")}
    assert all(name.endswith(SPEC.key()[:8]) for name in left) and len(left) == 4
    assert (root / "features").is_dir() and (root / "synthetic").is_dir()
    assert sum(e.bytes for e in removed) > 0
    assert all(e.status != inv.STALE for e in inv.scan(root).entries)


def test_all_keeps_unknown_folders_and_key_selects_exactly(tree, tmp_path):
    root = tmp_path / ".s5cache"
    inventory = inv.scan(root)
    chosen = inv.select(inventory, everything=True)
    assert {e.status for e in chosen} == {inv.CURRENT, inv.STALE}
    inv.delete(inventory, chosen)
    assert [p.name for p in (root / "features").iterdir()] == ["my-notes"]
    assert list((root / "synthetic").iterdir()) == []
    inventory = inv.scan(root)
    inv.delete(inventory, inv.select(inventory, keys=["my-notes"]))
    assert not tree["unknown"].exists() and root.is_dir()
    with pytest.raises(UserError, match=r"no cache entry with key 'nope'.*s5 cache ls"):
        inv.select(inventory, keys=["nope"])


def test_key_of_stale_videos_takes_their_tokens_and_temp_files_too(tree, tmp_path):
    inventory = inv.scan(tmp_path / ".s5cache")
    chosen = inv.select(inventory, keys=[SETTINGS.key()])
    assert {e.kind for e in chosen} == {inv.TOKENS, inv.TEMPORARY}  # the leftover lives in that folder
    chosen = inv.select(inventory, keys=[OLD_SPEC.key()])
    assert {e.kind for e in chosen} == {inv.SYNTHETIC, inv.TOKENS}
    inv.delete(inventory, chosen)
    assert not tree["old"].exists() and len(list(tree["tokens"].glob("[!.]*.safetensors"))) == 4
    assert tree["temp"].is_file()  # not part of those videos


def test_symlinks_are_listed_never_followed_and_only_unlinked(tmp_path):
    outside = tmp_path / "elsewhere"
    write_videos(outside / "videos", OLD_SPEC, OLD_SYNTHETIC)
    root = tmp_path / ".s5cache"
    (root / "synthetic").mkdir(parents=True)
    (root / "synthetic" / "linked").symlink_to(outside / "videos")
    inventory = inv.scan(root)
    [entry] = inventory.entries
    assert (entry.kind, entry.status, entry.files) == (inv.UNKNOWN_KIND, inv.UNKNOWN, 0)
    assert inv.select(inventory, everything=True) == []
    inv.delete(inventory, inv.select(inventory, keys=["linked"]))
    assert not (root / "synthetic" / "linked").is_symlink()
    assert (outside / "videos" / "synthetic.json").is_file()  # the target is untouched


def test_symlinked_cache_folder_under_the_root_is_not_followed(tmp_path):
    write_tokens(tmp_path / "big-disk", ["a"])
    root = tmp_path / ".s5cache"
    root.mkdir()
    (root / "features").symlink_to(tmp_path / "big-disk")
    inventory = inv.scan(root)
    assert inventory.entries == [] and "symlink" in inventory.notes[0]
    # Named explicitly, it is the user's folder to scan.
    assert len(inv.scan(root, [root / "features"]).entries) == 1


def test_deletion_refuses_paths_outside_the_scanned_folders(tree, tmp_path):
    inventory = inv.scan(tmp_path / ".s5cache")
    stray = inv.CacheEntry(inv.TOKENS, "x", tmp_path / ".s5cache", None, inv.STALE, "", 0, 0, 0.0)
    removed, failures = inv.delete(inventory, [stray])
    assert removed == [] and "refusing" in failures[0] and (tmp_path / ".s5cache").is_dir()


def test_roots_and_cache_dirs_are_checked(tmp_path, monkeypatch):
    with pytest.raises(UserError, match=r"cache root .*missing does not exist.*--root"):
        inv.scan(tmp_path / "missing")
    monkeypatch.chdir(tmp_path)  # no ./.s5cache here
    with pytest.raises(UserError, match=r"cache root \.s5cache does not exist"):
        inv.scan()
    folder = write_tokens(tmp_path / "tokens", ["a", "b"])
    [entry] = inv.scan(None, [tmp_path / "tokens"]).entries  # a recipe's data.cache_dir elsewhere
    assert (entry.key, entry.files, entry.status) == (SETTINGS.key(), 3, inv.CURRENT)
    with pytest.raises(UserError, match="is one cache entry"):
        inv.scan(None, [folder])
    with pytest.raises(UserError, match="is not a folder"):
        inv.scan(None, [tmp_path / "nope"])


def test_a_cache_dir_given_as_the_root_is_named_with_the_flag_that_scans_it(tmp_path, monkeypatch):
    """`--root .s5cache/features` said "nothing cached" although it held entries: it is a cache dir (a
    recipe's data.cache_dir), so the error says to pass it as --cache-dir, which lists them."""
    from typer.testing import CliRunner

    from s5cli.cli.app import app

    folder = write_tokens(tmp_path / "tokens", ["a"])
    with pytest.raises(UserError, match=r"tokens is a cache dir, not a cache root") as error:
        inv.scan(tmp_path / "tokens")
    assert error.value.hint == f"use --cache-dir {tmp_path / 'tokens'}"
    with pytest.raises(UserError, match=r"is one cache entry, not a cache root"):
        inv.scan(folder)
    assert [e.path for e in inv.scan(tmp_path / "tokens", [tmp_path / "tokens"]).entries] == [folder]
    for command in ("ls", "clean"):
        result = CliRunner().invoke(app, ["cache", command, "--root", str(tmp_path / "tokens")])
        assert result.exit_code == 2 and "nothing" not in result.output
        assert f"--cache-dir {tmp_path / 'tokens'}" in " ".join(result.output.split())
    # The default root holding entries itself (data.cache_dir=.s5cache): named so, and listed with the flag.
    monkeypatch.chdir(tmp_path)
    here = write_tokens(tmp_path / ".s5cache", ["b"])
    with pytest.raises(UserError, match=r"\.s5cache is a cache dir"):
        inv.scan()
    assert [e.path for e in inv.scan(None, [Path(".s5cache")]).entries] == [Path(".s5cache") / here.name]


def test_a_project_folder_with_another_tools_settings_json_is_no_cache_dir(tmp_path):
    """Only an s5cli marker makes a folder a cache entry: `--root proj` with `.vscode/settings.json` in it
    was called a cache dir (and `--root app` with its own settings.json a cache entry)."""
    project = tmp_path / "proj"
    (project / ".vscode").mkdir(parents=True)
    (project / ".vscode" / "settings.json").write_text('{"editor.tabSize": 4}')
    app = tmp_path / "app"
    app.mkdir()
    (app / "settings.json").write_text('{"format": "theme/1"}')
    for root in (project, app):
        assert inv.scan(root).entries == []


def test_a_leftover_inside_a_token_folder_adds_no_where_column_to_one_cache_dir(tmp_path):
    """The "in" column names the cache folder of each entry when several are listed; a temporary file left
    inside a token folder (another parent than the folder's own) added it when only one was."""
    from typer.testing import CliRunner

    from s5cli.cli.app import app

    folder = write_tokens(tmp_path / "tokens", ["a"])
    leftover(folder / "b.safetensors")
    command = ["cache", "ls", "--cache-dir", str(tmp_path / "tokens")]
    result = CliRunner().invoke(app, command, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "temporary file" in result.stdout
    assert result.stdout.splitlines()[0].split()[-1] == "modified", result.stdout


# What a marker may hold that identifies nothing: bytes that are not UTF-8, JSON cut short, JSON that is no
# object, an object without the "format" every s5cli marker has had.
UNPARSABLE = {
    "not-utf8": b"\xff\xfe\x00garbage",
    "truncated": b'{"format": "s5cli-synthetic/2", "fra',
    "not-an-object": b'["s5cli-synthetic/2"]',
    "no-format": b'{"frames": 16}',
    "another-tools-format": b'{"format": "other-tool/1"}',  # its folder is not ours to delete
}
MARKER_OF = {"old": "synthetic.json", "stale_tokens": "settings.json"}


def assert_unidentified_and_kept(root: Path, folder: Path, reason: str) -> None:
    """Listed as unknown with `reason`; neither a plain clean nor --all touches a file inside it."""
    inventory = inv.scan(root)
    entry = by_key(inventory)[inv.UNKNOWN_KIND, folder.name]
    assert (entry.status, entry.format, entry.path) == (inv.UNKNOWN, None, folder)
    assert entry.settings.startswith(reason), entry.settings
    assert entry.files == len(files_under(folder))  # its leftover temporary files are its own, not entries
    assert not any(folder in e.path.parents for e in inventory.entries)
    before = files_under(folder)
    for everything in (False, True):
        inventory = inv.scan(root)
        chosen = inv.select(inventory, everything=everything)
        assert not any(t == folder or folder in t.parents for e in chosen for t in e.targets)
        inv.delete(inventory, chosen)
        assert files_under(folder) == before


@pytest.mark.parametrize("content", UNPARSABLE.values(), ids=list(UNPARSABLE))
@pytest.mark.parametrize("folder", list(MARKER_OF))
def test_an_unparsable_marker_leaves_its_folder_unidentified_and_kept(tree, tmp_path, folder, content):
    """Stale would let a plain `clean` delete a folder nobody can identify: only `--key` may do that."""
    name = MARKER_OF[folder]
    (tree[folder] / name).write_bytes(content)
    leftover(tree[folder] / "late.json")
    assert_unidentified_and_kept(tmp_path / ".s5cache", tree[folder], "")
    assert name in by_key(inv.scan(tmp_path / ".s5cache"))[inv.UNKNOWN_KIND, tree[folder].name].settings


def test_unidentified_markers_say_why(tree, tmp_path):
    (tree["old"] / "synthetic.json").write_text("{oops")
    (tree["stale_tokens"] / "settings.json").write_text("[]")
    entries = by_key(inv.scan(tmp_path / ".s5cache"))
    reasons = {key: entry.settings for (kind, key), entry in entries.items() if kind == inv.UNKNOWN_KIND}
    assert reasons[OLD_SPEC.key()].startswith("cannot parse synthetic.json: Expecting")
    assert reasons["0123456789ab"] == "settings.json holds no format: not an s5cli marker"
    assert reasons["my-notes"] == "no synthetic.json or settings.json"
    (tree["stale_tokens"] / "settings.json").write_text('{"format": "s5cli-synthetic/2"}')  # the other kind's
    reasons = {key: entry.settings for (kind, key), entry in by_key(inv.scan(tmp_path / ".s5cache")).items()
               if kind == inv.UNKNOWN_KIND}
    assert reasons["0123456789ab"] == ("settings.json has format 's5cli-synthetic/2', not s5cli-tokens/...: "
                                       "not an s5cli marker")


@pytest.mark.parametrize("folder", list(MARKER_OF))
def test_an_unreadable_marker_leaves_its_folder_unidentified_and_kept(tree, tmp_path, monkeypatch, folder):
    """The tests run as root, for whom chmod 000 does not stop a read: the read itself is made to fail."""
    marker = tree[folder] / MARKER_OF[folder]
    read_text = Path.read_text

    def denied(self: Path, *args, **kwargs) -> str:
        if self == marker:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", denied)
    reason = f"cannot read {marker.name}: Permission denied"
    assert_unidentified_and_kept(tmp_path / ".s5cache", tree[folder], reason)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads a chmod 000 file")
def test_a_marker_without_read_permission_leaves_its_folder_unidentified_and_kept(tree, tmp_path):
    marker = tree["old"] / "synthetic.json"
    marker.chmod(0)
    try:
        reason = "cannot read synthetic.json: Permission denied"
        assert_unidentified_and_kept(tmp_path / ".s5cache", tree["old"], reason)
    finally:
        marker.chmod(0o644)


def test_squashed_tokens_say_so_in_the_listing(tmp_path):
    import dataclasses

    squashed = dataclasses.replace(SETTINGS, resize="squash")
    write_tokens(tmp_path / ".s5cache" / "features", ["a"], squashed)
    entries = by_key(inv.scan(tmp_path / ".s5cache"))
    assert entries[inv.TOKENS, squashed.key()].settings == "patch_pool, 16 frames, 64 px squashed, float32"


def test_a_key_in_several_cache_folders_is_refused_until_one_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    here = write_tokens(tmp_path / ".s5cache" / "features", ["clip"])
    there = write_tokens(tmp_path / "scratch", ["clip"])
    inventory = inv.scan(tmp_path / ".s5cache", [tmp_path / "scratch"])
    with pytest.raises(UserError, match=r"key '\w+' names entries in 2 cache folders .*scratch") as error:
        inv.select(inventory, keys=[SETTINGS.key()])
    assert f"--key PARENT/{SETTINGS.key()}" in error.value.hint
    [chosen] = inv.select(inventory, keys=[f"{tmp_path / 'scratch'}/{SETTINGS.key()}"])
    assert chosen.path == there
    [chosen] = inv.select(inventory, keys=[f".s5cache/features/{SETTINGS.key()}"])  # relative works too
    assert chosen.path == here
    with pytest.raises(UserError, match=r"no cache entry with key '\w+' in elsewhere"):
        inv.select(inventory, keys=[f"elsewhere/{SETTINGS.key()}"])


def test_cache_dirs_alone_are_scanned_without_the_default_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    here = write_tokens(tmp_path / ".s5cache" / "features", ["clip"])
    there = write_tokens(tmp_path / "scratch", ["clip"])
    assert [e.path for e in inv.scan(None, [tmp_path / "scratch"]).entries] == [there]
    both = inv.scan(Path(".s5cache"), [tmp_path / "scratch"])
    assert {e.path for e in both.entries} == {Path(".s5cache/features") / here.name, there}
    # The default root given as a cache dir is scanned as a root (its features/, not features/ as an entry).
    assert [e.path for e in inv.scan(None, [Path(".s5cache")]).entries] == [Path(".s5cache/features") / here.name]
