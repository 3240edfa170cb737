"""In-use marks: `s5 cache clean` never deletes a folder a running job uses, and forgets jobs that ended."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from s5cli.cli.app import app
from s5cli.data import cache_inventory as inv
from s5cli.data.cache import FeatureCache
from s5cli.data.cache_lock import LOCK_NAME, exclusive, in_use, mark_in_use, release_all
from tests.data.cache_trees import SETTINGS

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="in-use marks need fcntl (POSIX)")

# A training job in miniature: it reads (here: writes) one token folder, says so, then keeps running.
JOB = textwrap.dedent(
    """
    import sys, torch
    from s5cli.data.cache import FeatureCache
    from s5cli.data.cache_settings import ExtractionSettings
    cache = FeatureCache(sys.argv[1], ExtractionSettings("patch_pool", None, 16, None, 64, "float32"))
    cache.save("clip", torch.zeros(2, 3, 4))
    print("ready", flush=True)
    sys.stdin.read()
    """
)


def _clean_all(root: Path):
    return CliRunner().invoke(app, ["cache", "clean", "--root", str(root), "--all", "--yes"])


def test_clean_skips_the_folder_of_a_running_job_and_takes_it_once_the_job_is_killed(tmp_path):
    features = tmp_path / ".s5cache" / "features"
    job = subprocess.Popen(
        [sys.executable, "-c", JOB, str(features)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    try:
        assert job.stdout.readline().strip() == "ready"
        folder = features / SETTINGS.key()
        [entry] = inv.scan(tmp_path / ".s5cache").entries
        assert entry.path == folder and entry.in_use and entry.files == 2  # the tokens and settings.json
        listed = CliRunner().invoke(app, ["cache", "ls", "--root", str(tmp_path / ".s5cache")])
        assert "in use" in listed.output
        result = _clean_all(tmp_path / ".s5cache")
        assert result.exit_code != 0
        assert "in use by a running s5 job" in result.output
        assert (folder / "clip.safetensors").is_file()
    finally:
        job.kill()  # no clean exit: the kernel drops a dead process's locks
        job.wait()
    assert not in_use(folder)
    result = _clean_all(tmp_path / ".s5cache")
    assert result.exit_code == 0, result.output
    assert not folder.exists()


def test_marks_of_this_process_count_until_released(tmp_path):
    cache = FeatureCache(tmp_path, SETTINGS)
    assert not cache.has("clip") and not cache.folder.exists()  # reading a missing folder creates nothing
    cache.save("clip", torch.zeros(1, 2, 3))
    assert in_use(cache.folder)
    release_all()
    assert not in_use(cache.folder)
    FeatureCache(tmp_path, SETTINGS).load("clip")  # a reader marks the folder too
    assert in_use(cache.folder)


def test_a_folder_without_a_mark_is_free(tmp_path):
    assert not in_use(tmp_path / "never-used")
    (tmp_path / "plain").mkdir()
    with exclusive(tmp_path / "plain") as free:
        assert free


def test_a_job_that_waited_for_a_clean_marks_the_folder_it_recreates(tmp_path):
    folder = tmp_path / "tokens"
    folder.mkdir()
    (folder / LOCK_NAME).touch()
    with exclusive(folder) as free:  # a clean is deleting the folder...
        assert free
        marker = threading.Thread(target=mark_in_use, args=(folder,))
        marker.start()  # ...while a job starts and waits for it
        time.sleep(0.2)
        assert marker.is_alive()  # it is blocked on the lock, so the race below is really exercised
        shutil.rmtree(folder)
    marker.join(timeout=10)
    assert not marker.is_alive()
    assert folder.is_dir() and in_use(folder)  # the mark is on the new folder's lock file, not the deleted one


def test_an_unwritable_folder_is_used_without_a_mark(tmp_path, monkeypatch):
    import errno

    from s5cli.data import cache_lock

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    folder = tmp_path / "shared-tokens"
    folder.mkdir()
    monkeypatch.setattr(cache_lock.os, "open", read_only)
    mark_in_use(folder)  # no error: a cache on a read-only mount is still usable (and nobody can clean it)
    monkeypatch.undo()
    assert not (folder / LOCK_NAME).exists() and not in_use(folder)


def test_what_clean_reports_deleted_is_gone_and_what_it_skipped_is_intact(tmp_path):
    from tests.data.cache_trees import build_tree

    tree = build_tree(tmp_path)
    mark_in_use(tree["tokens"])  # a job reads the current token folder
    inventory = inv.scan(tmp_path)
    removed, failures = inv.delete(inventory, inv.select(inventory, everything=True))
    assert all(not target.exists() for entry in removed for target in entry.targets)
    skipped = {line.split(": ")[0] for line in failures}
    assert str(tree["tokens"]) in skipped and tree["tokens"].is_dir()
    assert len(list(tree["tokens"].glob("*.safetensors"))) > 0  # nothing of the used folder went
    assert tree["temp"].exists()  # not even an old leftover inside it: the job holding it may be its writer
    # The stale videos whose tokens are in that folder stay with them: without the videos, a later clean
    # could no longer tell that those tokens are stale.
    assert str(tree["old"]) in skipped and tree["old"].is_dir()
    assert not tree["current"].exists()  # folders nobody uses went


def test_a_dry_run_counts_only_what_a_clean_would_free(tmp_path):
    """Entries in use are skipped by a clean, so the dry run's "to free" leaves them out."""
    from typer.testing import CliRunner

    from s5cli.benchmark.measure import format_bytes
    from s5cli.cli.app import app
    from tests.data.cache_trees import build_tree

    tree = build_tree(tmp_path)
    mark_in_use(tree["tokens"])
    inventory = inv.scan(tmp_path)
    chosen = inv.select(inventory, everything=True)
    # Kept: the folder in use, what lies in it (the old videos' tokens, a leftover), and those old videos.
    kept = [e for e in chosen if tree["tokens"] in (e.path, *e.path.parents) or e.path == tree["old"]]
    assert {e.kind for e in kept} == {inv.TOKENS, inv.TEMPORARY, inv.SYNTHETIC} and len(kept) == 4
    free = [entry for entry in chosen if entry not in kept]
    assert free
    result = CliRunner().invoke(app, ["cache", "clean", "--all", "--dry-run", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    freed = format_bytes(sum(entry.bytes for entry in free))
    line = next(line for line in result.output.splitlines() if "to free" in line)
    assert f"{sum(e.files for e in free)} files: {freed} to free (4 in use by running s5 jobs, kept)" in line, line


def test_clean_all_spares_the_file_a_running_job_is_writing(tmp_path):
    """A job's unfinished write (a temporary file in the folder it has marked) survives `clean --all`, and
    the job's final rename then succeeds; a recent leftover outside any cache folder is not picked either."""
    from s5cli.io import atomic_write_path

    cache = FeatureCache(tmp_path / "scratch", SETTINGS)
    cache.save("vidA", torch.zeros(2, 3, 4))  # marks the folder in use, as a running extraction does
    loose = tmp_path / "scratch" / ".notes.abcd1234.tmp.json"
    loose.write_text("{}")  # recent, directly in the cache dir: no folder lock guards it
    with atomic_write_path(cache.path("vidE")) as tmp:
        tmp.write_bytes(b"x" * 1000)
        entries = {e.path: e for e in inv.select(inv.scan(None, [tmp_path / "scratch"]), everything=True)}
        assert loose not in entries and entries[tmp].in_use
        result = CliRunner().invoke(app, ["cache", "clean", "--cache-dir", str(tmp_path / "scratch"), "--all",
                                          "--yes"])
        assert result.exit_code != 0 and "in use by a running s5 job" in result.output
        assert tmp.is_file() and loose.is_file()
    assert cache.path("vidE").read_bytes() == b"x" * 1000  # the writer's rename found its file


def test_an_old_leftover_in_a_folder_in_use_waits_for_the_job(tmp_path):
    from tests.data.cache_trees import leftover

    cache = FeatureCache(tmp_path / "scratch", SETTINGS)
    cache.save("vidA", torch.zeros(2, 3, 4))
    old = leftover(cache.path("vidB"))  # 2 hours old: stale, but the folder's job may still own it
    inventory = inv.scan(None, [tmp_path / "scratch"])
    [entry] = [e for e in inventory.entries if e.kind == inv.TEMPORARY]
    assert entry.status == inv.STALE and entry.in_use
    removed, failures = inv.delete(inventory, inv.select(inventory))
    assert removed == [] and old.is_file() and "in use" in failures[0]
    release_all()
    inventory = inv.scan(None, [tmp_path / "scratch"])
    removed, failures = inv.delete(inventory, inv.select(inventory))
    assert failures == [] and not old.exists()


def test_stale_videos_stay_while_their_tokens_are_in_use_so_a_later_clean_still_finds_them(tmp_path):
    """Deleting the videos first left their tokens in a folder in use, unrecognisable once the job ended."""
    from tests.data.cache_trees import OLD_SPEC, OLD_SYNTHETIC, write_tokens, write_videos

    root = tmp_path / ".s5cache"
    videos = root / "synthetic" / OLD_SPEC.key()
    ids = write_videos(videos, OLD_SPEC, OLD_SYNTHETIC)
    tokens = write_tokens(root / "features", [*ids[:2], "own-clip"])
    mark_in_use(tokens)  # a training job reads the token folder
    inventory = inv.scan(root)
    chosen = inv.select(inventory)  # the stale videos and their tokens
    orphan = next(e for e in chosen if e.kind == inv.TOKENS)
    assert orphan.owner == videos and orphan.in_use
    assert {e.path for e in inv.kept_in_use(chosen)} == {videos, tokens}
    dry = CliRunner().invoke(app, ["cache", "clean", "--root", str(root), "--dry-run"])
    assert "0 files: 0 B to free (2 in use by running s5 jobs, kept)" in dry.output, dry.output
    removed, failures = inv.delete(inventory, chosen)
    assert removed == [] and len(failures) == 2 and videos.is_dir()
    assert "in use" in failures[0] and failures[1].startswith(f"{videos}: kept until the tokens")
    release_all()  # the job ended: the next clean still knows those tokens are stale, and takes both
    inventory = inv.scan(root)
    removed, failures = inv.delete(inventory, inv.select(inventory))
    assert failures == [] and not videos.exists()
    assert {p.stem for p in tokens.glob("*.safetensors")} == {"own-clip"}


def test_a_claimed_video_is_refused_to_others_until_released_and_leaves_no_file(tmp_path):
    """Two extractions of one cache share its videos: a claim held is refused without waiting, and the
    holder's release deletes the claim file (no file per video piles up in the token folder)."""
    from s5cli.data.cache_lock import CLAIM_SUFFIX, claim

    held = claim(tmp_path, "-vid00", wait=False)
    assert held is not None and (tmp_path / f".-vid00{CLAIM_SUFFIX}").is_file()
    assert claim(tmp_path, "-vid00", wait=False) is None  # another open file: refused, in the same process too
    other = claim(tmp_path, "-vid01", wait=False)
    assert other is not None  # one claim per video
    held.release()
    other.release()
    assert list(tmp_path.iterdir()) == []
    again = claim(tmp_path, "-vid00", wait=False)
    assert again is not None
    again.release()


def test_a_waiter_takes_the_claim_once_its_holder_releases_it(tmp_path):
    """The holder deletes the claim file before unlocking: the waiter, locked on the deleted file, takes the
    claim again on the file now at the path, so a third extraction cannot take it at the same time."""
    from s5cli.data.cache_lock import claim

    held = claim(tmp_path, "clip", wait=False)
    got = []
    waiter = threading.Thread(target=lambda: got.append(claim(tmp_path, "clip", wait=True)))
    waiter.start()
    time.sleep(0.2)
    assert waiter.is_alive() and not got  # blocked, not spinning through
    held.release()
    waiter.join(timeout=10)
    assert got and got[0] is not None
    assert claim(tmp_path, "clip", wait=False) is None  # the waiter's claim is on the file at the path
    got[0].release()


def test_without_fcntl_or_a_writable_folder_a_claim_guards_nothing(tmp_path, monkeypatch):
    """Windows has no flock, and a read-only cache cannot hold a claim file: extraction goes on unguarded."""
    from s5cli.data import cache_lock

    readonly = tmp_path / "absent"  # cannot create the claim file in it
    assert cache_lock.claim(readonly, "clip", wait=False) is not None
    monkeypatch.setattr(cache_lock, "fcntl", None)
    first, second = (cache_lock.claim(tmp_path, "clip", wait=False) for _ in range(2))
    assert first is not None and second is not None
    first.release()
    assert list(tmp_path.iterdir()) == []


def test_a_claim_file_is_neither_counted_by_ls_nor_hides_the_in_use_mark(tmp_path):
    """A video being extracted (or a claim left by a killed extraction) adds no file to `s5 cache ls`'s
    counts, and the folder still shows as in use; `clean` takes a leftover claim with its folder."""
    from s5cli.data.cache_lock import claim

    cache = FeatureCache(tmp_path / "scratch", SETTINGS)
    cache.save("vidA", torch.zeros(2, 3, 4))
    held = claim(cache.folder, "vidB", wait=False)
    [entry] = inv.scan(None, [tmp_path / "scratch"]).entries
    assert entry.files == 2 and entry.in_use  # the tokens and settings.json
    release_all()
    held.release()
    claim(cache.folder, "vidC", wait=False)  # left behind: its process was killed
    [entry] = inv.scan(None, [tmp_path / "scratch"]).entries
    assert entry.files == 2 and not entry.in_use
    result = CliRunner().invoke(app, ["cache", "clean", "--cache-dir", str(tmp_path / "scratch"), "--all", "--yes"])
    assert result.exit_code == 0, result.output
    assert not cache.folder.exists()
