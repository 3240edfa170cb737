"""Feature extraction: decode videos, run the frozen backbone, cache the tokens; resumable and shardable.

`extract_records` is the loop behind `s5 extract` and behind training on a dataset that is not cached yet.
Finished videos are skipped (the cache is the progress record), a video that cannot be decoded is reported,
counted and skipped, and each torchrun rank (or `--shard i/n`) takes every n-th record. Two extractions of
one cache at once share its videos: each claims a video before decoding it (`cache_lock.Claims`), leaves
the ones the other holds for last, then waits for those and reuses their tokens. How a video becomes
tokens (the backbone pass that `eval --video` and `visualize-mask` share) is `s5cli.data.encode`.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from s5cli import torchrun_env
from s5cli.data.cache import SOURCE_BYTES, FeatureCache
from s5cli.data.cache_lock import Claims
from s5cli.data.cache_settings import ExtractionSettings
from s5cli.data.decode import OpenedClip, VideoDecodeError
from s5cli.data.encode import (
    BACKBONE_BATCH_FRAMES,
    backbone_crops,
    data_setting,
    encode_frame_chunks,
    fps_above_warning,
    load_backbone,
    open_for_backbone,
    settings_from_data,
)
from s5cli.data.extract_progress import video_frames_bar, videos_progress
from s5cli.data.prefetch import running_ahead
from s5cli.errors import RunFailure, UserError

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass
class ExtractReport:
    """What an extraction run did: new files, files already cached, and videos that failed (id, reason)."""

    extracted: int = 0
    reused: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0
    missing: int = 0  # annotated videos not on disk (set by ensure_cached; extract_records never sees them)
    missing_videos: list[str] = field(default_factory=list)  # their ids, sorted (ensure_cached)
    skipped_splits: list[str] = field(default_factory=list)  # splits with no video on disk (ensure_cached)
    # (video id, its own fps) of the videos whose frame rate is below data.fps: their cached frames repeat
    fps_above: list[tuple[str, float]] = field(default_factory=list)
    padded: list[str] = field(default_factory=list)  # videos shorter than their plan: last frame repeated

    @property
    def total(self) -> int:
        """Videos this run was responsible for."""
        return self.extracted + self.reused + len(self.failed)


def merge_shard_reports(reports: Sequence[ExtractReport]) -> ExtractReport:
    """One report for a dataset extracted in shares (torchrun ranks), from each share's report in rank order.

    Counts and lists of videos add up, since each share did its own videos; the time is the slowest
    share's, as they ran side by side. What every share found alike (the annotated videos not on disk, the
    splits without videos: `ensure_cached` lists the whole dataset on each) is taken once, from the first.
    """
    first = reports[0]
    return ExtractReport(
        extracted=sum(r.extracted for r in reports),
        reused=sum(r.reused for r in reports),
        failed=[item for r in reports for item in r.failed],
        frames=sum(r.frames for r in reports),
        seconds=max(r.seconds for r in reports),
        missing=first.missing,
        missing_videos=list(first.missing_videos),
        skipped_splits=list(first.skipped_splits),
        fps_above=[item for r in reports for item in r.fps_above],
        padded=[video for r in reports for video in r.padded],
    )


def resolve_shard(shard: tuple[int, int] | None) -> tuple[int, int]:
    """The (index, count) share of this process: given, or torchrun's RANK/WORLD_SIZE, or (0, 1).

    Shares from the environment are checked as the variables they came from (`torchrun_env.rank_and_world`):
    "shard 5/2 is invalid: use i/n" asked for an --shard the user never gave.
    """
    if shard is None:
        return torchrun_env.rank_and_world()
    index, count = int(shard[0]), int(shard[1])
    if count < 1 or not 0 <= index < count:
        raise UserError(f"shard {index}/{count} is invalid: use i/n with 0 <= i < n")
    return index, count


PADDING_WARNINGS_SHOWN = 3  # videos whose padding is named one by one before the rest are only counted


@dataclass
class _VideoHeader:
    """A video opened for the backbone: its crops follow in the stream, `frames` rows in all."""

    record: Any
    frames: int
    metadata: dict[str, str]
    warnings: list[str]  # decoder and truncation (`OpenedClip.warnings`)
    video_fps: float
    repeats_frames: bool  # sampled above the video's own rate (`OpenedClip.repeats_frames`)
    padding: str | None = None  # `OpenedClip.padding_warning`: reported a few times, then counted


@dataclass
class _VideoFailed:
    """A video that could not be decoded (when opened, or part-way through its frames)."""

    record: Any
    error: VideoDecodeError


@dataclass
class _VideoReused:
    """A video whose tokens another extraction of the cache saved after this run listed its to-do."""

    record: Any


@dataclass
class _VideoDeferred:
    """A video another extraction of the cache holds (`Claims`): this run comes back to it at the end."""

    record: Any


def _cache_metadata(clip: OpenedClip) -> dict[str, str]:
    metadata = {
        "source": clip.path.name,
        "video_frames": str(clip.info.num_frames),
        "video_fps": f"{clip.info.fps:.6g}",
        "padded": str(clip.plan.padded),
        "frame_indices": json.dumps(list(clip.plan.indices)),
    }
    with contextlib.suppress(OSError):  # what `FeatureCache.changed_source` compares on later runs
        metadata[SOURCE_BYTES] = str(os.stat(clip.path).st_size)
    return metadata


def _still_to_do(cache: FeatureCache, record: Any) -> bool:
    """Whether a video's tokens are missing or older than its file (`extract_records` lists its to-do so)."""
    return not cache.has(record.video_id) or cache.changed_source(record.video_id, record.path) is not None


def _decoded_videos(
    records: Sequence[Any], settings: ExtractionSettings, threads: int, cache: FeatureCache, claims: Claims
) -> Iterator[_VideoHeader | _VideoFailed | _VideoReused | _VideoDeferred | torch.Tensor]:
    """For each record: its header then its crop chunks, or a `_VideoFailed` (possibly after some chunks).
    One flat stream, so that a background thread can decode it a few chunks ahead of the backbone.

    Each video is claimed first, without waiting: one another extraction holds is `_VideoDeferred`, and
    one it finished since the to-do was listed is `_VideoReused` (checked once claimed, so never twice).
    """
    for record in records:
        if not claims.take(record.video_id, wait=False):
            yield _VideoDeferred(record)
            continue
        if not _still_to_do(cache, record):
            claims.release(record.video_id)
            yield _VideoReused(record)
            continue
        try:
            clip = open_for_backbone(Path(record.path), settings, threads)
            yield _VideoHeader(record, len(clip.plan), _cache_metadata(clip), clip.warnings(padding=False),
                               clip.info.fps, clip.repeats_frames, clip.padding_warning())
            yield from backbone_crops(clip, settings.image_size, settings.resize)
        except VideoDecodeError as error:
            yield _VideoFailed(record, error)


def _frames_of(stream: Iterator[Any], frames: int) -> Iterator[torch.Tensor]:
    """The next `frames` rows of crop chunks from the stream; raises the error of a video failing part-way."""
    seen = 0
    while seen < frames:
        item = next(stream)
        if isinstance(item, _VideoFailed):
            raise item.error
        seen += item.shape[0]
        yield item


def _check_tokens_writable(cache: FeatureCache, cached: int) -> None:
    """UserError unless the token folder takes new files, before the backbone loads or a video is decoded.

    Why here and not in `ensure_cached`: a read-only cache that is complete is fine to read from, so only a
    run with videos to do needs to write; without this check, a read-only folder was found only when the
    first video's tokens were saved, after decoding and encoding it (an hour of ViT-L on a CPU).
    """
    from s5cli.io import folder_problem

    problem = folder_problem(cache.folder)
    if problem is None:
        return
    videos = "1 video" if cached == 1 else f"{cached} videos"
    kept = f" and copy {cache.folder} into it to keep the {videos} cached so far" if cached else ""
    raise UserError(f"data.cache_dir {cache.root} takes no new tokens ({problem}): make it writable, or set "
                    f"data.cache_dir to a writable folder{kept}")


def extract_records(
    records: Sequence[Any],
    settings: ExtractionSettings,
    cache: FeatureCache,
    *,
    decode_threads: int = 2,
    shard: tuple[int, int] | None = None,
    show_progress: bool = True,
    device: str | torch.device = "cpu",
    batch_size: int = BACKBONE_BATCH_FRAMES,
    backbone: nn.Module | None = None,
) -> ExtractReport:
    """Cache tokens for this shard's records; skips cached ids, reports and skips videos that fail to decode."""
    from s5cli.cli.console import print_warning

    index, count = resolve_shard(shard)
    mine = list(records)[index::count]
    started = time.perf_counter()
    report = ExtractReport()
    todo, changed, changed_ids = [], [], set()
    for record in mine:
        if not cache.has(record.video_id):
            todo.append(record)
        elif (reason := cache.changed_source(record.video_id, record.path)) is not None:
            changed.append(f"{record.video_id} ({reason})")
            changed_ids.add(record.video_id)
            todo.append(record)
        else:
            report.reused += 1
    if changed:
        videos = "1 video changed since its" if len(changed) == 1 else f"{len(changed)} videos changed since their"
        print_warning(f"{videos} tokens were cached, extracting again: "
                      f"{', '.join(changed[:3])}{' ...' if len(changed) > 3 else ''}")
    if not todo:
        cache.repair_settings_file()  # else only an extraction into the folder repairs it
        report.seconds = time.perf_counter() - started
        return report
    _check_tokens_writable(cache, len(mine) - len(todo))
    if backbone is None:
        backbone = load_backbone(settings, device)
    cache.create_folder()  # the claims live in it
    description = f"extract {index}/{count}" if count > 1 else "extract"
    progress = videos_progress(len(todo), description) if show_progress else None
    # In a log the bars are off (`videos_progress`): a plain line every ~5 % of the videos shows the job is alive.
    lines = None
    if progress is not None and progress.disable:
        from s5cli.cli.console import PeriodicLines

        lines = PeriodicLines(len(todo))
    run = _Extraction(settings, cache, Claims(cache.folder), backbone, batch_size, report, changed_ids,
                      progress, lines, description, len(todo))
    try:
        if progress is not None:
            progress.start()
        deferred = run.videos(todo, decode_threads)
        if deferred and progress is not None:
            progress.console.print(f"{description}: waiting for another extraction into {cache.folder} to "
                                   f"finish {len(deferred)} video{'s' * (len(deferred) > 1)}")
        for record in deferred:  # blocks until that extraction is done with it, then reuses (or extracts) it
            run.claims.take(record.video_id, wait=True)
            run.videos([record], decode_threads)
    finally:
        run.claims.release_all()
        if progress is not None:
            progress.stop()
    if report.fps_above:
        print_warning(fps_above_warning(settings.fps, report.fps_above))
    if len(report.padded) > PADDING_WARNINGS_SHOWN:
        # One line per video drowned the run in warnings (400 with the bundled recipe at data.frames=64).
        print_warning(f"{len(report.padded)} videos in all had fewer frames than sampling asked for and repeat "
                      f"their last frame (the first {PADDING_WARNINGS_SHOWN} named above; e.g. also "
                      f"{', '.join(report.padded[PADDING_WARNINGS_SHOWN:PADDING_WARNINGS_SHOWN + 3])}): check "
                      "data.frames and data.fps if that was not meant")
    report.seconds = time.perf_counter() - started
    return report


@dataclass
class _Extraction:
    """One `extract_records` run over its to-do videos: where their tokens go, its report, its progress."""

    settings: ExtractionSettings
    cache: FeatureCache
    claims: Claims
    backbone: Any
    batch_size: int
    report: ExtractReport
    changed_ids: set[str]  # videos whose cached tokens are older than their file
    progress: Any  # `extract_progress.videos_progress`, or None
    lines: Any  # `PeriodicLines` in a log, or None
    description: str
    total: int
    done: int = 0

    def videos(self, records: Sequence[Any], decode_threads: int) -> list[Any]:
        """Extract `records` but those another extraction holds; returns those, to come back to."""
        deferred = []
        decoded = _decoded_videos(records, self.settings, decode_threads, self.cache, self.claims)
        with running_ahead(decoded, name="s5-decode") as stream:
            for item in stream:
                if isinstance(item, _VideoDeferred):
                    deferred.append(item.record)
                    continue
                if isinstance(item, _VideoReused):
                    self.report.reused += 1
                else:
                    self._extract(item, stream)
                self.claims.release(item.record.video_id)  # saved (or failed): a waiting extraction goes on
                self._advance()
        return deferred

    def _extract(self, item: _VideoHeader | _VideoFailed, stream: Iterator[Any]) -> None:
        """Encode and save the video `item` opens, or report it as failed."""
        from s5cli.cli.console import print_warning

        report = self.report
        if isinstance(item, _VideoHeader):
            for warning in item.warnings:
                print_warning(warning)
            if item.padding is not None:
                report.padded.append(item.record.video_id)
                if len(report.padded) <= PADDING_WARNINGS_SHOWN:
                    print_warning(item.padding)
            if item.repeats_frames:
                report.fps_above.append((item.record.video_id, item.video_fps))
            on_batch = video_frames_bar(self.progress, item.frames, item.record.video_id, self.batch_size)
            try:
                tokens = encode_frame_chunks(self.backbone, _frames_of(stream, item.frames), item.frames,
                                             self.batch_size, self.settings.torch_dtype, on_batch)
            except VideoDecodeError as error:
                item = _VideoFailed(item.record, error)
            else:
                self.cache.save(item.record.video_id, tokens, item.metadata)
                report.extracted += 1
                report.frames += tokens.shape[0]
                return
        report.failed.append((item.record.video_id, str(item.error)))
        gone = ""
        if item.record.video_id in self.changed_ids:
            # The tokens of the file before it changed: kept, training read them as this
            # video's although the run said it skipped it.
            self.cache.discard(item.record.video_id)
            gone = " (its tokens from before the file changed are deleted)"
        print_warning(f"skipping video {item.record.video_id}: {item.error}{gone}")

    def _advance(self) -> None:
        """One more video done (extracted, failed, or reused from another extraction): the bar, or a line."""
        self.done += 1
        if self.progress is None:
            return
        self.progress.advance(self.progress.task_ids[0])
        if self.lines is not None and self.lines.due(self.done):
            elapsed, rate, eta = self.lines.timing(self.done)
            self.progress.console.print(f"{self.description} {self.done}/{self.total} videos {rate:.2f} videos/s "
                                        f"elapsed {elapsed:.0f}s ETA {eta:.0f}s")


def unique_records(groups: Sequence[Sequence[Any]]) -> list[Any]:
    """Records of several splits with each video id once (LVU tasks and splits share videos)."""
    seen: set[str] = set()
    out = []
    for group in groups:
        for record in group:
            if record.video_id not in seen:
                seen.add(record.video_id)
                out.append(record)
    return out


def ensure_cached(
    data: Any,
    splits: Sequence[str] = ("train", "val", "test"),
    *,
    shard: tuple[int, int] | None = None,
    show_progress: bool = True,
    device: str | torch.device = "cpu",
    fail_if_none: bool = True,
    skip_empty_splits: bool = False,
) -> ExtractReport:
    """Extract whatever the recipe's splits still miss in the cache; RunFailure if every video failed.

    With `skip_empty_splits` (`s5 extract`), a split with no video on disk is skipped with a warning
    rather than stopping the run, so a user who has downloaded only some splits can still extract them;
    its videos count as missing (`NoVideosError.missing`), as a split's few missing ones do.
    """
    from s5cli.cli.console import print_warning
    from s5cli.data.datasets import list_records
    from s5cli.data.datasets.base import NoVideosError
    from s5cli.io import check_writable_folder

    cache_dir = data_setting(data, "cache_dir")
    if not cache_dir:
        raise UserError("data.cache_dir is not set: name a folder for the token cache")
    check_writable_folder(cache_dir, "data.cache_dir", "set data.cache_dir to a folder", need_write=False)
    groups, missing, skipped = [], set(), []
    for split in splits:
        try:
            group = list_records(data, split, show_progress=show_progress)
        except NoVideosError as error:
            if not skip_empty_splits:
                raise
            print_warning(f"split {split} skipped: {error}")
            skipped.append(split)
            missing.update(error.missing)  # not on disk, as much as a split's missing few: --strict fails
            continue
        groups.append(group)
        missing.update(getattr(group, "missing", ()))
    if not groups:
        raise UserError(f"no video of the splits {', '.join(splits)} is on disk: check data.root")
    records = unique_records(groups)
    settings = settings_from_data(data)
    cache = FeatureCache(Path(cache_dir), settings)
    report = extract_records(
        records,
        settings,
        cache,
        decode_threads=int(data_setting(data, "decode_threads", 2)),
        shard=shard,
        show_progress=show_progress,
        device=device,
    )
    report.missing, report.missing_videos, report.skipped_splits = len(missing), sorted(missing), skipped
    if fail_if_none and report.failed and report.extracted + report.reused == 0:
        raise RunFailure(
            f"none of {len(report.failed)} videos could be decoded (first: {report.failed[0][1]})"
        )
    return report


