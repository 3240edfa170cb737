"""Extraction review fixes: a read-only cache fails before any work, shares from the environment name the
variables, a damaged settings note is repaired, a full disk says how to go on."""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

import s5cli.data.extract as extract
from s5cli.data.cache import FeatureCache
from s5cli.data.cache_inventory import scan
from s5cli.data.encode import settings_from_data
from s5cli.data.extract import extract_records, resolve_shard
from s5cli.errors import UserError
from tests.data.test_extract import REPO_ROOT, data_section, make_records


@pytest.fixture
def setup(tmp_path):
    settings = settings_from_data(data_section(tmp_path))
    return None, settings, FeatureCache(tmp_path / "cache", settings)


def _never(what: str):
    def called(*args, **kwargs):
        raise AssertionError(f"{what} was called")

    return called


@pytest.fixture
def read_only(monkeypatch):
    """Makes a folder take no new file: chmod, and for root (whom chmod does not stop) a refusing probe."""
    modes: list[tuple[Path, int]] = []
    real_mkstemp = tempfile.mkstemp

    def make(folder: Path) -> None:
        modes.append((folder, stat.S_IMODE(folder.stat().st_mode)))
        folder.chmod(0o555)

        def mkstemp(*args, **kwargs):
            if Path(kwargs.get("dir") or ".").resolve() == folder.resolve():
                raise PermissionError(errno.EACCES, "Permission denied", str(folder))
            return real_mkstemp(*args, **kwargs)

        if os.geteuid() == 0:
            monkeypatch.setattr(tempfile, "mkstemp", mkstemp)

    yield make
    for folder, mode in modes:
        folder.chmod(mode)


def test_a_partly_extracted_read_only_cache_fails_before_the_backbone_loads(tmp_path, setup, read_only,
                                                                             monkeypatch):
    """It failed only when the first video's tokens were saved, after decoding and encoding it (an hour of
    ViT-L on a CPU); now it fails before any of that, naming data.cache_dir and the fix."""
    _, settings, cache = setup
    records = make_records(tmp_path / "videos", 2)
    extract_records(records[:1], settings, cache, decode_threads=1, show_progress=False)
    read_only(cache.folder)
    monkeypatch.setattr(extract, "load_backbone", _never("the backbone loader"))
    monkeypatch.setattr(extract, "open_for_backbone", _never("the decoder"))
    with pytest.raises(UserError) as caught:
        extract_records(records, settings, cache, decode_threads=1, show_progress=False)
    message = str(caught.value)
    assert "data.cache_dir" in message and str(cache.folder) in message
    assert "make it writable" in message and "\n" not in message


def test_a_complete_read_only_cache_is_still_read_and_the_probe_leaves_nothing(tmp_path, setup, read_only,
                                                                               monkeypatch):
    _, settings, cache = setup
    records = make_records(tmp_path / "videos", 2)
    extract_records(records, settings, cache, decode_threads=1, show_progress=False)
    assert not [p for p in cache.folder.iterdir() if p.name.startswith(".s5-write-check")]
    read_only(cache.folder)
    monkeypatch.setattr(extract, "load_backbone", _never("the backbone loader"))
    os.truncate(cache.folder / "settings.json", 3)  # damaged: not repaired, and no error either
    report = extract_records(records, settings, cache, decode_threads=1, show_progress=False)
    assert (report.extracted, report.reused) == (0, 2)


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_rank_past_the_world_size_from_the_environment_names_the_variables(clean_env):
    """`WORLD_SIZE=2 RANK=5 s5 extract` said "shard 5/2 is invalid: use i/n" although no --shard was given."""
    clean_env.setenv("WORLD_SIZE", "2")
    clean_env.setenv("RANK", "5")
    with pytest.raises(UserError, match=r"^RANK=5 is not below WORLD_SIZE=2: ") as caught:
        resolve_shard(None)
    assert "shard" not in str(caught.value)
    with pytest.raises(UserError, match=r"^shard 3/3 is invalid"):  # a given share is still named as given
        resolve_shard((3, 3))


def test_extract_checks_the_share_from_the_environment_before_listing_videos(clean_env, tmp_path):
    import s5cli.data.datasets as datasets
    from s5cli.cli.app import app

    clean_env.setenv("WORLD_SIZE", "2")
    clean_env.setenv("RANK", "5")
    clean_env.setattr(datasets, "list_records", _never("listing the videos"))
    result = CliRunner().invoke(app, ["extract", str(REPO_ROOT / "recipes" / "synthetic.yaml"), "--quiet",
                                      f"data.cache_dir={tmp_path / 'cache'}"])
    assert result.exit_code == 2, result.output
    assert " ".join(result.output.split()).startswith("error: RANK=5 is not below WORLD_SIZE=2: ")


def test_a_damaged_settings_note_is_rewritten(tmp_path, setup):
    """A settings.json that does not parse was never repaired, so `s5 cache ls` kept calling a folder that
    is extracted into "unknown"; a readable one is left as it is."""
    _, settings, cache = setup
    records = make_records(tmp_path / "videos", 2)
    extract_records(records[:1], settings, cache, decode_threads=1, show_progress=False)
    note = cache.folder / "settings.json"
    note.write_text('{"format": "s5cli-tok')
    assert [entry.status for entry in scan(cache_dirs=[cache.root]).entries] == ["unknown"]
    extract_records(records, settings, cache, decode_threads=1, show_progress=False)
    assert json.loads(note.read_text()) == settings.metadata()
    assert [entry.status for entry in scan(cache_dirs=[cache.root]).entries] == ["current"]
    assert not [p for p in cache.folder.iterdir() if p.name.startswith(".settings")]  # no temporary left
    note.write_text("")  # all extracted: a run with nothing to do repairs it too, if it can write
    report = extract_records(records, settings, cache, decode_threads=1, show_progress=False)
    assert report.reused == 2 and json.loads(note.read_text()) == settings.metadata()
    kept = {**settings.metadata(), "note": "mine"}
    note.write_text(json.dumps(kept))
    cache.create_folder()
    assert json.loads(note.read_text()) == kept


@pytest.mark.parametrize(("changed", "words"), [(1, "1 video changed since its tokens were cached"),
                                                 (2, "2 videos changed since their tokens were cached")])
def test_the_changed_videos_warning_agrees_in_number(tmp_path, setup, capsys, changed, words):
    from tests.data.video_files import write_video

    _, settings, cache = setup
    records = make_records(tmp_path / "videos", 2)
    extract_records(records, settings, cache, decode_threads=1, show_progress=False)
    for record in records[:changed]:
        write_video(record.path, frames=9, size=80)
    capsys.readouterr()
    extract_records(records, settings, cache, decode_threads=1, show_progress=False)
    assert words in " ".join(capsys.readouterr().err.split())


def test_a_full_disk_during_extract_says_how_to_go_on(tmp_path, monkeypatch):
    """"error: …/x.safetensors: No space left on device" gave no way forward, though nothing is lost."""
    import safetensors.torch

    import s5cli.data.datasets as datasets
    from s5cli.cli.app import app
    from s5cli.data.datasets.base import RecordList

    records = make_records(tmp_path / "videos", 3)
    monkeypatch.setattr(datasets, "list_records", lambda data, split, show_progress=True: RecordList(records))
    real_save = safetensors.torch.save_file
    saved: list[str] = []

    def fills_up(tensors, path, metadata=None):
        if saved:
            raise OSError(errno.ENOSPC, "No space left on device", path)
        saved.append(path)
        real_save(tensors, path, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", fills_up)
    command = ["extract", str(REPO_ROOT / "recipes" / "synthetic.yaml"), f"data.cache_dir={tmp_path / 'cache'}",
               "data.frames=4", "--split", "train", "--quiet", "--json"]
    full = CliRunner().invoke(app, command)
    assert full.exit_code == 1, full.output
    line = " ".join(full.output.split())
    assert line.startswith("error: ") and line.endswith(
        ".safetensors: No space left on device (free space or choose another data.cache_dir, then run the same "
        "command again: finished videos are kept)")
    monkeypatch.setattr(safetensors.torch, "save_file", real_save)
    again = CliRunner().invoke(app, command)
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout[again.stdout.index("{"):])
    assert (summary["extracted"], summary["reused"]) == (2, 1)
