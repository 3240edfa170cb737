"""Extraction: cache per video, skip finished ones, survive bad videos and a SIGKILL, shard over ranks."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from s5cli.data.cache import FeatureCache
from s5cli.data.datasets.base import VideoRecord
from s5cli.data.encode import load_video_tokens, settings_from_data
from s5cli.data.extract import ensure_cached, extract_records, resolve_shard
from s5cli.errors import RunFailure, Terminated, UserError
from tests.data.video_files import write_video
from tests.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]


def data_section(tmp_path: Path, **changes) -> SimpleNamespace:
    values = {
        "dataset": "synthetic",
        "backbone": "patch_pool",
        "backbone_weights": None,
        "frames": 4,
        "fps": None,
        "image_size": 64,
        "cache_dtype": "float16",
        "decode_threads": 1,
        "cache_dir": str(tmp_path / "cache"),
        "window_seconds": None,
    }
    values.update(changes)
    return SimpleNamespace(**values)


def make_records(folder: Path, count: int, frames: int = 4) -> list[VideoRecord]:
    return [
        VideoRecord(f"-vid{i:02d}", write_video(folder / f"-vid{i:02d}.mp4", frames=frames), label=i % 3)
        for i in range(count)
    ]


@pytest.fixture
def setup(tmp_path):
    data = data_section(tmp_path)
    settings = settings_from_data(data)
    return data, settings, FeatureCache(data.cache_dir, settings)



def test_extracts_every_video_with_metadata(tmp_path, setup):
    _, settings, cache = setup
    records = make_records(tmp_path / "videos", 3)
    report = extract_records(records, settings, cache, decode_threads=1, show_progress=False)
    assert (report.extracted, report.reused, report.failed) == (3, 0, [])
    tokens, meta = cache.load("-vid01")
    assert tokens.shape == (4, 1 + 16, 96) and tokens.dtype == torch.float16
    assert meta["frame_indices"] == "[0, 1, 2, 3]" and meta["video_frames"] == "4"
    assert meta["backbone"] == "patch_pool" and meta["source"] == "-vid01.mp4"
    # A flat grey frame gives identical patch tokens, except the corner patch with the white square.
    assert torch.allclose(tokens[0, 2].float(), tokens[0, 10].float(), atol=2e-2)
    assert not torch.allclose(tokens[0, 1].float(), tokens[0, 10].float(), atol=0.1)


def test_bad_videos_are_reported_counted_and_skipped(tmp_path, setup, capsys):
    _, settings, cache = setup
    records = make_records(tmp_path / "videos", 2)
    text = tmp_path / "videos" / "text.mp4"
    text.write_text("not a video")
    records[1:1] = [
        VideoRecord("text", text, 0),
        VideoRecord("gone", tmp_path / "videos" / "gone.mp4", 0),
    ]
    report = extract_records(records, settings, cache, decode_threads=1, show_progress=False)
    assert report.extracted == 2
    assert [vid for vid, _ in report.failed] == ["text", "gone"]
    assert "text.mp4" in report.failed[0][1] and "not found" in report.failed[1][1]
    assert cache.has("-vid00") and cache.has("-vid01") and not cache.has("text")
    assert capsys.readouterr().err.count("skipping video") == 2


def test_a_video_with_a_broken_timestamp_is_skipped_not_the_whole_run(tmp_path, capsys):
    """One frame stamped at 1,100,000 s in a 0.8 s video: at data.fps 1 its timeline asks for more frames than
    a plan may hold. The video's fault: reported and skipped, where it stopped the run blaming data.fps."""
    from tests.data.video_files import write_variable_rate_video

    data = data_section(tmp_path, frames=None, fps=1.0)
    settings = settings_from_data(data)
    cache = FeatureCache(data.cache_dir, settings)
    records = make_records(tmp_path / "videos", 2, frames=8)
    broken = write_variable_rate_video(tmp_path / "videos" / "glitch.mkv", [40 * i for i in range(19)] + [1_100_000_000])
    records[1:1] = [VideoRecord("glitch", broken, 0)]
    report = extract_records(records, settings, cache, decode_threads=1, show_progress=False)
    assert report.extracted == 2 and [vid for vid, _ in report.failed] == ["glitch"]
    assert "glitch.mkv: its timestamps run to 1,100,000 s over 20 frames" in report.failed[0][1]


def test_rerun_reuses_finished_videos_and_redoes_corrupt_ones(tmp_path, setup, capsys):
    _, settings, cache = setup
    records = make_records(tmp_path / "videos", 3)
    extract_records(records, settings, cache, decode_threads=1, show_progress=False)
    keep = cache.path("-vid00").stat().st_mtime_ns
    broken = cache.path("-vid02")
    broken.write_bytes(broken.read_bytes()[:100])
    report = extract_records(records, settings, cache, decode_threads=1, show_progress=False)
    assert (report.extracted, report.reused) == (1, 2)
    assert cache.path("-vid00").stat().st_mtime_ns == keep
    assert cache.load("-vid02")[0].shape == (4, 17, 96)
    assert "corrupt cache entry" in capsys.readouterr().err


def test_a_changed_video_that_no_longer_decodes_loses_its_old_tokens(tmp_path, setup, capsys):
    """A download redone that broke: the run says it skips the video, so training must not read the
    tokens of the file it replaced."""
    _, settings, cache = setup
    records = make_records(tmp_path / "videos", 2)
    extract_records(records, settings, cache, decode_threads=1, show_progress=False)
    Path(records[1].path).write_bytes(b"a broken download")
    report = extract_records(records, settings, cache, decode_threads=1, show_progress=False)
    assert [vid for vid, _ in report.failed] == ["-vid01"] and report.reused == 1
    assert not cache.has("-vid01") and cache.has("-vid00")
    assert "its tokens from before the file changed are deleted" in " ".join(capsys.readouterr().err.split())


def test_a_video_replaced_under_its_id_is_extracted_again_and_a_moved_copy_is_not(tmp_path, setup, capsys):
    """Tokens are found by id: a video replaced in data.root kept its old tokens, while `eval --video` on the
    same file decoded the new one."""
    import shutil

    _, settings, cache = setup
    records = make_records(tmp_path / "videos", 2, frames=4)
    extract_records(records, settings, cache, decode_threads=1, show_progress=False)
    old = cache.load("-vid01")[0]
    write_video(records[1].path, frames=9, size=80)  # another download of the same id
    capsys.readouterr()
    report = extract_records(records, settings, cache, decode_threads=1, show_progress=False)
    assert (report.extracted, report.reused) == (1, 1)
    assert "1 video changed since its tokens were cached, extracting again: -vid01 (" in " ".join(capsys.readouterr().err.split())
    new, _ = cache.load("-vid01")
    reference = FeatureCache(tmp_path / "reference", settings)
    extract_records(records[1:], settings, reference, decode_threads=1, show_progress=False)
    assert torch.equal(new, reference.load("-vid01")[0]) and not torch.equal(new, old)
    # The same files copied to another folder (new times, same names and sizes): nothing to extract.
    shutil.copytree(tmp_path / "videos", tmp_path / "moved")
    moved = [VideoRecord(r.video_id, tmp_path / "moved" / r.path.name, r.label) for r in records]
    report = extract_records(moved, settings, cache, decode_threads=1, show_progress=False)
    assert (report.extracted, report.reused) == (0, 2)


def test_short_video_is_padded_and_warned_once(tmp_path, setup, capsys):
    _, settings, cache = setup
    records = [VideoRecord("short", write_video(tmp_path / "short.mp4", frames=2), 0)]
    extract_records(records, settings, cache, decode_threads=1, show_progress=False)
    tokens, meta = cache.load("short")
    assert tokens.shape[0] == 4 and meta["padded"] == "2"
    assert torch.equal(tokens[3], tokens[1])
    assert capsys.readouterr().err.count("repeating the last frame") == 1


def test_many_short_videos_are_named_a_few_times_then_counted(tmp_path, setup, capsys):
    """One warning line per padded video drowned a run in them (400 with the bundled recipe at 64 frames)."""
    _, settings, cache = setup
    records = [VideoRecord(f"short{i}", write_video(tmp_path / f"short{i}.mp4", frames=2), 0) for i in range(5)]
    report = extract_records(records, settings, cache, decode_threads=1, show_progress=False)
    assert report.padded == [f"short{i}" for i in range(5)] and report.extracted == 5
    err = " ".join(capsys.readouterr().err.split())
    assert err.count("repeating the last frame") == 3
    assert ("5 videos in all had fewer frames than sampling asked for and repeat their last frame (the first 3 "
            "named above; e.g. also short3, short4)") in err


def test_fps_above_a_videos_rate_is_warned_once_per_run(tmp_path, capsys):
    # 8-fps videos sampled at 16 fps: every source frame is cached twice, and the user hears it once.
    data = data_section(tmp_path, fps=16.0, frames=None)
    settings = settings_from_data(data)
    cache = FeatureCache(data.cache_dir, settings)
    records = make_records(tmp_path / "videos", 2, frames=4)
    report = extract_records(records, settings, cache, decode_threads=1, show_progress=False)
    tokens, _ = cache.load(records[0].video_id)
    assert tokens.shape[0] == 8 and torch.equal(tokens[0], tokens[1])
    assert report.fps_above == [(r.video_id, 8.0) for r in records]
    err = " ".join(capsys.readouterr().err.split())
    assert err.count("data.fps 16 is above the frame rate of 2 videos") == 1
    assert "set data.fps to 8 or less" in err
    # At the video's own rate nothing repeats and nothing is said.
    own_rate = settings_from_data(data_section(tmp_path, fps=8.0, frames=None))
    rerun = extract_records(make_records(tmp_path / "more", 1, frames=4), own_rate,
                            FeatureCache(tmp_path / "c8", own_rate), decode_threads=1, show_progress=False)
    assert rerun.fps_above == [] and "data.fps" not in capsys.readouterr().err
    # One raw video (`s5 eval --video`) says the same about itself.
    load_video_tokens(records[0].path, data)
    assert "data.fps 16 is above the frame rate of 1 video (e.g. -vid00.mp4: 8 fps)" in " ".join(
        capsys.readouterr().err.split())


def test_shards_split_the_records_by_stride(tmp_path, setup, monkeypatch):
    _, settings, cache = setup
    records = make_records(tmp_path / "videos", 6)
    report = extract_records(records, settings, cache, shard=(1, 3), decode_threads=1, show_progress=False)
    assert report.extracted == 2
    assert {vid for vid in cache.cached_ids()} == {"-vid01", "-vid04"}
    # Under torchrun each rank takes its share from RANK / WORLD_SIZE.
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert resolve_shard(None) == (2, 3)
    extract_records(records, settings, cache, decode_threads=1, show_progress=False)
    assert cache.cached_ids() == {"-vid01", "-vid04", "-vid02", "-vid05"}
    with pytest.raises(UserError):
        resolve_shard((3, 3))


class SlowBackbone(torch.nn.Module):
    """The real test backbone, with a pass that takes a while, as a ViT-L's does (`fail_on`: calls that raise)."""

    def __init__(self, settings, seconds: float = 0.3, fail_on: int | None = None) -> None:
        super().__init__()
        from s5cli.data.encode import load_backbone

        self.inner = load_backbone(settings)
        self.mean, self.std = self.inner.mean, self.inner.std
        self.seconds, self.fail_on, self.calls = seconds, fail_on, 0

    def forward(self, images):
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("CUDA out of memory")
        time.sleep(self.seconds)
        return self.inner(images)


def test_two_extractions_of_one_cache_at_once_share_the_videos(tmp_path, setup):
    """Two runs started together (a finetune of S5 and one of S4 on one data.cache_dir) each extracted every
    video, twice the backbone compute: now each video is extracted once, and each run counts what the
    other extracted as reused, so both reports (and bars) cover every video."""
    import threading

    _, settings, _ = setup
    records = make_records(tmp_path / "videos", 6)
    reports = []

    def run():
        cache = FeatureCache(tmp_path / "cache", settings)
        reports.append(extract_records(records, settings, cache, decode_threads=1, show_progress=False,
                                       backbone=SlowBackbone(settings)))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(reports) == 2, "an extraction did not finish"
    assert sum(r.extracted for r in reports) == len(records), [(r.extracted, r.reused) for r in reports]
    assert all(r.extracted + r.reused == len(records) and r.failed == [] for r in reports)
    folder = FeatureCache(tmp_path / "cache", settings).folder
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == [".in-use.lock"]  # no claims


@pytest.mark.parametrize("holder_saves", [True, False])
def test_a_video_another_extraction_holds_is_waited_for_then_reused_or_extracted(tmp_path, setup, holder_saves):
    """Deferred to the end, then waited for (no spinning, no second extraction): reused when the holder
    saved it, extracted when the holder gave up (a decode failure, a crash)."""
    import threading

    from s5cli.data.cache_lock import claim

    _, settings, cache = setup
    records = make_records(tmp_path / "videos", 3)
    cache.create_folder()
    held = claim(cache.folder, "-vid00", wait=False)  # another extraction is busy with the first video
    reports = []
    worker = threading.Thread(target=lambda: reports.append(
        extract_records(records, settings, FeatureCache(tmp_path / "cache", settings), decode_threads=1,
                        show_progress=False)))
    worker.start()
    assert wait_until(lambda: cache.cached_ids() == {"-vid01", "-vid02"}, timeout=60)
    time.sleep(0.2)
    assert worker.is_alive() and "-vid00" not in cache.cached_ids()  # waiting for the holder
    if holder_saves:
        cache.save("-vid00", torch.zeros(4, 17, 96), {"source": "-vid00.mp4"})
    held.release()
    worker.join(timeout=60)
    [report] = reports
    assert (report.extracted, report.reused) == ((2, 1) if holder_saves else (3, 0))


def test_an_extraction_that_fails_leaves_no_video_claimed(tmp_path, setup):
    """A run ended by an error (out of memory) gave up its claims: a later run in the same process, which a
    claim left held would block forever, extracts the rest."""
    import threading

    _, settings, cache = setup
    records = make_records(tmp_path / "videos", 3)
    with pytest.raises(RuntimeError, match="out of memory"):
        extract_records(records, settings, cache, decode_threads=1, show_progress=False,
                        backbone=SlowBackbone(settings, seconds=0, fail_on=2))
    reports = []
    worker = threading.Thread(target=lambda: reports.append(
        extract_records(records, settings, cache, decode_threads=1, show_progress=False)), daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert reports and (reports[0].extracted, reports[0].reused) == (2, 1)


def _terminal_stderr(monkeypatch) -> io.StringIO:
    """stderr as a 120-column terminal, so the live bars are drawn (into the returned buffer)."""
    from s5cli.cli import console

    out = io.StringIO()
    monkeypatch.setattr(console, "stderr", console.LogFriendlyConsole(file=out, force_terminal=True, width=120))
    return out


def test_progress_bar_shows_rate_and_eta_on_a_terminal(tmp_path, setup, monkeypatch, capsys):
    _, settings, cache = setup
    err = _terminal_stderr(monkeypatch)
    extract_records(make_records(tmp_path / "videos", 2), settings, cache, decode_threads=1, show_progress=True)
    assert "videos/s" in err.getvalue() and "ETA" in err.getvalue() and "━" in err.getvalue()
    assert "videos/s" not in capsys.readouterr().out


def test_a_log_gets_a_plain_line_every_few_videos_instead_of_the_bar(tmp_path, setup, capsys):
    _, settings, cache = setup
    records = make_records(tmp_path / "videos", 3)
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video")
    records.insert(1, VideoRecord("broken", broken, 0))
    extract_records(records, settings, cache, decode_threads=1, show_progress=True)
    lines = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("warning:")]
    # Four videos: one line each (every 5 % rounds up to one video), the failed one counted too.
    assert [line.split(" videos ")[0] for line in lines] == [f"extract {n}/4" for n in range(1, 5)]
    assert all(" videos/s elapsed " in line and " ETA " in line for line in lines)
    assert not any("━" in line for line in lines)


def test_a_long_video_gets_a_frames_bar_under_the_videos_bar(tmp_path, monkeypatch):
    """A film is one step of the videos bar for minutes: from 4 backbone batches up, its frames show too."""
    out = _terminal_stderr(monkeypatch)
    data = data_section(tmp_path, frames=None, fps=8.0)  # every frame of the 8 fps test videos
    settings = settings_from_data(data)
    records = [
        VideoRecord("short", write_video(tmp_path / "short.mp4", frames=6), 0),  # 3 batches of 2: no bar
        VideoRecord("film", write_video(tmp_path / "film.mp4", frames=20), 0),  # 10 batches: a bar
    ]
    report = extract_records(records, settings, FeatureCache(data.cache_dir, settings), decode_threads=1,
                             show_progress=True, batch_size=2)
    assert report.extracted == 2
    err = out.getvalue()
    assert "videos/s" in err and "frames/s" in err
    assert "film" in err and "20/20" in err
    assert "6/6" not in err  # the short video had no frames bar


def test_vit_extraction_uses_the_backbone_dimension(tmp_path):
    data = data_section(tmp_path, backbone="vit_tiny_test", frames=3, cache_dtype="float32")
    settings = settings_from_data(data)
    cache = FeatureCache(data.cache_dir, settings)
    extract_records(make_records(tmp_path / "videos", 1), settings, cache, decode_threads=1, show_progress=False)
    tokens, meta = cache.load("-vid00")
    assert tokens.shape == (3, 17, 32) and tokens.dtype == torch.float32
    assert meta["dtype"] == "float32"


def test_ensure_cached_lists_splits_once_and_fails_only_when_nothing_decodes(tmp_path, monkeypatch):
    import s5cli.data.datasets as datasets

    records = make_records(tmp_path / "videos", 3)
    by_split = {"train": records[:2], "val": records[1:], "test": []}
    monkeypatch.setattr(datasets, "list_records", lambda data, split, show_progress=True: by_split[split])
    data = data_section(tmp_path)
    report = ensure_cached(data, show_progress=False)
    assert (report.extracted, report.reused) == (3, 0)
    assert ensure_cached(data, splits=("val",), show_progress=False).reused == 2
    bad = [VideoRecord("bad", tmp_path / "missing.mp4", 0)]
    monkeypatch.setattr(datasets, "list_records", lambda data, split, show_progress=True: bad)
    with pytest.raises(RunFailure, match=r"missing\.mp4"):
        ensure_cached(data, splits=("train",), show_progress=False)





def test_a_video_failing_part_way_is_skipped_and_the_next_one_is_whole(tmp_path, setup, monkeypatch, capsys):
    from s5cli.data import decode

    _, settings, cache = setup
    records = make_records(tmp_path / "videos", 3)
    reference = FeatureCache(tmp_path / "reference", settings)
    extract_records(records[2:], settings, reference, decode_threads=1, show_progress=False)

    monkeypatch.setattr(decode, "DECODE_CHUNK_FRAMES", 2)  # 4 frames: two chunks per video
    read = decode.OpenedClip.read

    def second_chunk_of_vid01_fails(clip, indices, first=True):
        if clip.path.stem == "-vid01" and not first:
            raise decode.VideoDecodeError(clip.path, "decoding failed (truncated or corrupt video)")
        return read(clip, indices, first)

    monkeypatch.setattr(decode.OpenedClip, "read", second_chunk_of_vid01_fails)
    starts = decode.decodable_frame_starts  # PyAV, asked after a failed read, finds the damage there too
    monkeypatch.setattr(decode, "decodable_frame_starts",
                        lambda path: starts(path)[:2] if path.stem == "-vid01" else starts(path))
    report = extract_records(records, settings, cache, decode_threads=1, show_progress=False)
    assert report.extracted == 2 and [vid for vid, _ in report.failed] == ["-vid01"]
    assert cache.has("-vid00") and not cache.has("-vid01") and cache.has("-vid02")
    assert torch.equal(cache.load("-vid02")[0], reference.load("-vid02")[0])
    assert "skipping video -vid01" in capsys.readouterr().err


def test_a_video_decord_fails_on_is_extracted_from_the_frames_pyav_decodes(tmp_path, setup, capsys):
    """decord opens a file damaged in the middle and fails on its frames: it was skipped, although the
    frames before the damage decode. The plan, and so the cache's metadata, covers those frames."""
    from tests.data.video_files import damage_packets

    _, settings, cache = setup
    source = write_video(tmp_path / "source.mp4", frames=40)
    damaged = damage_packets(source, tmp_path / "videos" / "-vid00.mp4", first=20, count=5)
    report = extract_records([VideoRecord("-vid00", damaged, 0)], settings, cache, decode_threads=1,
                             show_progress=False)
    assert report.extracted == 1 and report.failed == []
    tokens, meta = cache.load("-vid00")
    assert tokens.shape[0] == 4 and meta["video_frames"] == "20" and meta["frame_indices"] == "[2, 7, 12, 17]"
    assert "decord failed partway through it (damaged?); PyAV decodes 20 frames" in capsys.readouterr().err


def test_extraction_holds_a_few_decoded_chunks_not_the_whole_video(tmp_path, monkeypatch):
    """Decoding runs a bounded distance ahead of the backbone: a film's crops never all exist at once."""
    from s5cli.data import decode
    from s5cli.data import extract as extract_module
    from s5cli.models.patch_pool import PatchPool

    data = data_section(tmp_path, frames=40)
    settings = settings_from_data(data)
    monkeypatch.setattr(decode, "DECODE_CHUNK_FRAMES", 2)
    made, encoded, lead = [0], [0], []
    crops = extract_module.backbone_crops

    def counted_crops(*args):
        for chunk in crops(*args):
            made[0] += chunk.shape[0]
            yield chunk

    class CountingPool(PatchPool):
        def forward(self, images):
            # A backbone slower than the decoder, as with a real ViT: it waits until the decoder is a chunk
            # ahead (or done), then a little longer, in which an unbounded decoder would run further.
            done = encoded[0] + images.shape[0]
            assert wait_until(lambda: made[0] >= min(40, done + 2))
            time.sleep(0.002)
            encoded[0] = done
            lead.append(made[0] - encoded[0])
            return super().forward(images)

    monkeypatch.setattr(extract_module, "backbone_crops", counted_crops)
    records = [VideoRecord("long", write_video(tmp_path / "long.mp4", frames=40), 0)]
    report = extract_records(records, settings, FeatureCache(data.cache_dir, settings), decode_threads=1,
                             show_progress=False, batch_size=2, backbone=CountingPool())
    assert report.extracted == 1 and encoded[0] == 40
    # Ahead of the backbone: the queue's two chunks and one being made (2 frames each), never the 40 frames.
    assert max(lead) <= 6
    assert max(lead) >= 2  # the decoder did run ahead


KILLED_SCRIPT = """
import sys, time
from pathlib import Path
from s5cli.data.cache import FeatureCache
from s5cli.data.cache_settings import ExtractionSettings
from s5cli.data.datasets.base import VideoRecord
from s5cli.data.extract import extract_records
from s5cli.models.patch_pool import PatchPool

class SlowPool(PatchPool):
    # Slow enough that the parent can kill the run between two videos or in the middle of a write.
    def forward(self, images):
        time.sleep(0.4)
        return super().forward(images)

videos, cache_dir = Path(sys.argv[1]), Path(sys.argv[2])
settings = ExtractionSettings("patch_pool", None, 4, None, 64, "float16")
records = [VideoRecord(p.stem, p, 0) for p in sorted(videos.glob("*.mp4"))]
extract_records(records, settings, FeatureCache(cache_dir, settings), decode_threads=1,
                show_progress=False, backbone=SlowPool())
"""


def test_extraction_killed_midway_resumes_without_redoing_finished_videos(tmp_path):
    records = make_records(tmp_path / "videos", 12)
    data = data_section(tmp_path)
    settings = settings_from_data(data)
    cache = FeatureCache(data.cache_dir, settings)
    script = tmp_path / "run_extract.py"
    script.write_text(textwrap.dedent(KILLED_SCRIPT))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "videos"), data.cache_dir],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while len(cache.cached_ids()) < 2:
            assert proc.poll() is None, f"extraction ended before it could be killed: {proc.stderr.read()!r}"
            assert time.monotonic() < deadline, "no cache file appeared"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    finished = {vid: cache.path(vid).stat().st_mtime_ns for vid in cache.cached_ids()}
    assert 2 <= len(finished) < 12

    report = extract_records(records, settings, cache, decode_threads=1, show_progress=False)
    assert report.reused == len(finished)
    assert report.extracted == 12 - len(finished)
    assert report.failed == []
    for vid, mtime in finished.items():
        assert cache.path(vid).stat().st_mtime_ns == mtime, f"{vid} was extracted again"
    for record in records:
        tokens, meta = cache.load(record.video_id)
        assert tokens.shape == (4, 17, 96) and meta["video_id"] == record.video_id


def test_cli_extract_prints_a_summary_and_resumes(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from s5cli.cli.app import app

    monkeypatch.chdir(tmp_path)  # the synthetic videos are generated under ./.s5cache
    args = [
        "extract",
        str(REPO_ROOT / "recipes" / "synthetic.yaml"),
        "data.synthetic.num_train=3",
        "data.synthetic.num_val=1",
        "data.synthetic.num_test=1",
        "data.synthetic.frames=12",
        "data.frames=6",
        f"data.cache_dir={tmp_path / 'cache'}",
        "--split",
        "train,val",
        "--quiet",
        "--json",
    ]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert '"extracted": 4' in first.output and '"failed": 0' in first.output
    second = CliRunner().invoke(app, args)
    assert '"extracted": 0' in second.output and '"reused": 4' in second.output
    bad = CliRunner().invoke(app, [*args[:2], "--shard", "2/2"])
    assert bad.exit_code == 2 and "--shard" in bad.output


@pytest.mark.parametrize(("stop", "word", "code"), [(KeyboardInterrupt, "interrupted", 130),
                                                    (Terminated, "terminated", 143)])
def test_a_stopped_extract_says_how_to_go_on(tmp_path, monkeypatch, stop, word, code):
    from typer.testing import CliRunner

    import s5cli.data.extract as extract
    from s5cli.cli.app import app
    from s5cli.train.data import feature_cache

    made: list[str] = []

    def stopped(data, *args, **kwargs):
        cache = feature_cache(data)
        cache.create_folder()  # made before the first video is done, as extraction claims videos in it
        if made:  # some videos were extracted
            cache.save("clip", torch.zeros(1, 17, 96))
        raise stop()

    monkeypatch.setattr(extract, "ensure_cached", stopped)
    monkeypatch.chdir(tmp_path)
    command = ["extract", str(REPO_ROOT / "recipes" / "synthetic.yaml"), "--quiet",
               f"data.cache_dir={tmp_path / 'cache'}"]
    # Stopped before any video (while generating the synthetic ones): no folder to name.
    result = CliRunner().invoke(app, command)
    assert result.exit_code == code
    line = " ".join(result.output.split())
    assert line == f"stopped: {word}; nothing was extracted yet: run the same command again to extract the rest"
    made.append("yes")
    result = CliRunner().invoke(app, command)
    assert result.exit_code == code
    line = " ".join(result.output.split())
    assert line.startswith(f"stopped: {word}; the videos finished so far stay in {tmp_path / 'cache'}")
    assert line.endswith("run the same command again to extract the rest")


def test_cli_extract_strict_fails_on_a_broken_or_missing_video(tmp_path, monkeypatch):
    """--strict: any failed or missing video is exit 1 (the rest still cached); without it, exit 0."""
    from typer.testing import CliRunner

    import s5cli.data.datasets as datasets
    from s5cli.cli.app import app
    from s5cli.data.datasets.base import RecordList

    records = make_records(tmp_path / "videos", 2)
    broken = tmp_path / "videos" / "-broken.mp4"
    broken.write_bytes(b"not a video")
    records.append(VideoRecord("-broken", broken, 0))
    listed = {"train": RecordList(records, missing=[]), "val": RecordList(records[:1], missing=["gone"])}
    monkeypatch.setattr(datasets, "list_records", lambda data, split, show_progress=True: listed[split])
    recipe = str(REPO_ROOT / "recipes" / "synthetic.yaml")
    base = ["extract", recipe, f"data.cache_dir={tmp_path / 'cache'}", "data.frames=4", "--quiet", "--json"]

    strict = CliRunner().invoke(app, [*base, "--split", "train", "--strict"])
    assert strict.exit_code == 1
    assert "--strict: 1 video failed to decode" in strict.output and "-broken" in strict.output
    assert '"extracted": 2' in strict.output  # the good videos are cached all the same
    lenient = CliRunner().invoke(app, [*base, "--split", "train"])
    assert lenient.exit_code == 0, lenient.output
    assert '"reused": 2' in lenient.output and '"failed": 1' in lenient.output
    missing = CliRunner().invoke(app, [*base, "--split", "val", "--strict"])
    assert missing.exit_code == 1 and "1 video of the split files not under data.root" in missing.output
    assert '"missing_videos": [' in missing.output and '"gone"' in missing.output  # which ones, for a script


def test_cli_extract_strict_fails_when_a_whole_split_is_not_on_disk(tmp_path, monkeypatch):
    """A split skipped because none of its videos is on disk counts them all as missing: --strict exits 1
    (it exited 0 with "missing": 0); without --strict the other splits are extracted and the run exits 0."""
    import json

    from typer.testing import CliRunner

    import s5cli.data.datasets as datasets
    from s5cli.cli.app import app
    from s5cli.data.datasets.base import NoVideosError, RecordList

    records = make_records(tmp_path / "videos", 2)

    def list_records(data, split, show_progress=True):
        if split == "test":
            raise NoVideosError("none of the 3 Breakfast test videos is under data.root", missing=["a", "b", "c"])
        return RecordList(records, missing=[])

    monkeypatch.setattr(datasets, "list_records", list_records)
    recipe = str(REPO_ROOT / "recipes" / "synthetic.yaml")
    base = ["extract", recipe, f"data.cache_dir={tmp_path / 'cache'}", "data.frames=4", "--quiet", "--json"]
    strict = CliRunner().invoke(app, [*base, "--strict"])
    assert strict.exit_code == 1, strict.output
    assert "--strict: 3 videos of the split files not under data.root" in strict.output
    lenient = CliRunner().invoke(app, base)
    assert lenient.exit_code == 0, lenient.output
    summary = json.loads(lenient.stdout[lenient.stdout.index("{"):])
    assert (summary["reused"], summary["missing"], summary["missing_videos"]) == (2, 3, ["a", "b", "c"])
    assert summary["skipped_splits"] == ["test"]


def test_extract_skips_a_split_without_videos_and_counts_missing_ones(tmp_path, monkeypatch, capsys):
    """`s5 extract` works on the splits a user has; training still refuses a split without videos."""
    import s5cli.data.datasets as datasets
    from s5cli.data.datasets.base import NoVideosError, RecordList

    records = make_records(tmp_path / "videos", 2)

    def list_records(data, split, show_progress=True):
        if split == "val":
            raise NoVideosError("none of the 3 val videos is under data.root")
        return RecordList(records if split == "train" else [], missing=["gone"])

    monkeypatch.setattr(datasets, "list_records", list_records)
    data = data_section(tmp_path)
    with pytest.raises(NoVideosError):
        ensure_cached(data, show_progress=False)
    report = ensure_cached(data, show_progress=False, skip_empty_splits=True)
    assert (report.extracted, report.missing, report.skipped_splits) == (2, 1, ["val"])
    assert "split val skipped: none of the 3 val videos" in capsys.readouterr().err
    with pytest.raises(UserError, match="no video of the splits val is on disk"):
        ensure_cached(data, splits=("val",), show_progress=False, skip_empty_splits=True)
