"""Decode the sampled frames of a video: plan them, hand them over chunk by chunk, get past damage.

Every failure to read a video (missing, empty, not a video, truncated) becomes a `VideoDecodeError`: a
`UserError` whose one-line message names the file, so a dataset run can report it, skip it and go on. A file
decord refuses, or fails on before any frame is handed over, is read with PyAV up to its damage instead.
The decoders themselves are read in `decord_reading` and `pyav_reading`.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from s5cli.data.decord_reading import VideoInfo, open_video, read_frames, rows_padded, video_info
from s5cli.data.frame_transform import decoded_size
from s5cli.data.probe import VideoDecodeError, check_file, probe_video, reencode_hint
from s5cli.data.pyav_reading import PyAVFrameReader, decodable_frame_starts
from s5cli.data.sampling import (
    MAX_FPS_PLAN_FRAMES,
    FramePlan,
    Timeline,
    fps_count,
    fps_plan,
    timeline_if_variable,
    uniform_plan,
)
from s5cli.errors import UserError

if TYPE_CHECKING:
    import numpy as np

DECODER_SCALE_RATIO = 1.5  # scale while decoding when the shorter side is at least this many times the target
# Frames decoded (and transformed) per step by `OpenedClip.chunks`: intermediates then exist for one chunk,
# not for the whole video (at 1 fps a film has thousands of frames).
DECODE_CHUNK_FRAMES = 64
# Extra decoding (a fraction of what the next chunk decodes anyway) worth paying to empty decord's queue
# of frames decoded ahead between two chunks (`OpenedClip._drop_read_ahead`).
READ_AHEAD_RESET_COST = 0.25
# Decodable frames below this share of the container's claim are reported as a truncated file (stated counts
# of intact files are exact or off by a frame or two).
TRUNCATED_FRACTION = 0.9
# Why PyAV decodes a file, in the warning that says so (`OpenedClip.decoder_note`).
DECORD_REFUSED = "decord cannot open it (damaged or cut short?)"
DECORD_UNSUPPORTED = "decord cannot open it (a format or codec it does not read)"  # intact, by PyAV's count
DECORD_FAILED = "decord failed partway through it (damaged?)"


@dataclass
class DecodedClip:
    """Sampled frames `(T, H, W, 3)` uint8 at the reader's size, the plan that chose them, the video's info."""

    frames: np.ndarray
    plan: FramePlan
    info: VideoInfo


def plan_frames(info: VideoInfo, frames: int | None, fps: float | None, min_frames: int = 1) -> FramePlan:
    """Uniform T frames (`frames`), or every frame at `fps` over the whole video (`fps` wins when both are set);
    both by time on a variable-frame-rate video's timeline (`uniform_plan`, `fps_indices`)."""
    if fps is not None:
        try:
            return fps_plan(info.num_frames, info.fps, fps, min_frames=min_frames, timeline=info.timeline)
        except ValueError as error:  # a plan past MAX_FPS_PLAN_FRAMES (a mistyped data.fps)
            raise UserError(f"data.fps {fps:g}: {error}") from None
    if frames is not None:
        return uniform_plan(info.num_frames, frames, info.timeline)
    raise UserError("set data.frames (T uniform frames per video) or data.fps (frames per second)")


@dataclass
class OpenedClip:
    """A video opened for sampling: the plan and the video's info now, the frames when asked for (the first
    chunk of them already decoded by `open_clip`, which may re-plan a damaged file then).

    Why separate from decoding: a film at 1 fps is thousands of frames. `chunks` hands them over
    `DECODE_CHUNK_FRAMES` at a time, so a caller that passes each chunk on (to the backbone) never holds
    more than a chunk of decoded frames.
    """

    path: Path
    plan: FramePlan
    info: VideoInfo  # with `shorter_side`, the video's own size although the reader scales
    reader: Any
    scaled: bool  # whether the reader scales while decoding (it falls back to full size where decord fails)
    num_threads: int
    keyframes: list[int] | None = None  # the reader's keyframe indices, read when first needed
    sampling_fps: float | None = None  # the rate the plan samples at (None: frames spread uniformly)
    pyav: bool = False  # decord cannot hand over this video's frames: PyAV decodes them (`read`)
    rotation: int = 0  # display rotation in degrees (decord applies it; the PyAV path turns its frames too)
    decoder_note: str | None = None  # why PyAV decodes this file, for the warnings (decord refused or failed)
    stated_frames: int = 0  # frames the container claims (0: it does not say; see `truncation_warning`)
    stated_seconds: float = 0.0  # the duration behind an estimated `stated_frames` (`VideoProbe`)
    planner: Callable[[VideoInfo], FramePlan] | None = None  # how `plan` was made, to re-plan (`_recover`)
    held: np.ndarray | None = field(default=None, repr=False, compare=False)  # first chunk (`open_clip`)
    pyav_reader: PyAVFrameReader | None = field(default=None, repr=False, compare=False)  # made when first used

    def read(self, indices: list[int] | tuple[int, ...], first: bool = True) -> np.ndarray:
        """Frames at `indices` (`read_frames`). decord fails for some frame widths (48 or 72 px: "from_size
        == to_size", its rows are padded), and only when frames are read: a scaled reader is then reopened
        at full size, and a video whose own width fails is read with PyAV from then on (`PyAVFrameReader`).
        The later resize (`resized_crops`) then does the scaling: the same size, not the same pixels (torch's
        antialiased bilinear differs from FFmpeg's scaler by ~1 grey level on average), so only a first read
        reopens, before any frame of the clip was handed over."""
        if self.pyav:
            return self._read_pyav(indices)
        try:
            return read_frames(self.reader, indices, self.path)
        except VideoDecodeError as error:
            if not rows_padded(error):
                raise  # a damaged video: reopening at full size only decoded up to a chunk of 4K frames again
            if self.scaled and first:
                self.reader, self.scaled, self.keyframes = open_video(self.path, self.num_threads), False, None
                return self.read(indices, first)
        self.pyav = True
        return self._read_pyav(indices)

    def _read_pyav(self, indices: list[int] | tuple[int, ...]) -> np.ndarray:
        """Frames at `indices` from PyAV, whose decoder stays open from one chunk to the next."""
        if self.pyav_reader is None:
            self.pyav_reader = PyAVFrameReader(self.path, self.rotation)
        return self.pyav_reader.read(indices)

    def chunks(self, transform: Callable[[np.ndarray], Any] | None = None) -> Iterator[Any]:
        """The planned frames, `DECODE_CHUNK_FRAMES` at a time, each chunk through `transform` if given
        (a per-frame map such as `resized_crops`, so the chunking does not change the numbers). The first
        chunk is the one `open_clip` decoded already (`held`)."""
        held, self.held = self.held, None
        step = DECODE_CHUNK_FRAMES
        for start in range(0, len(self.plan.indices), step):
            frames = held if start == 0 and held is not None else self._read_span(start, start + step)
            held = None
            yield frames if transform is None else transform(frames)

    def _decode_first_chunk(self) -> None:
        """Decode the first chunk now (kept in `held` for `chunks`), while the plan may still change.

        Why at once: callers take the plan (its length, the cache's metadata, the warnings) as soon as the
        clip is open, and decord fails on a damaged file only when it reads frames (`_recover`)."""
        if self.pyav or not self.plan.indices:
            return
        self.held = self._read_span(0, DECODE_CHUNK_FRAMES)

    def _read_span(self, start: int, stop: int | None) -> np.ndarray:
        """The plan's frames `[start:stop]` (`read`, `_recover` where that fails); then decord's read-ahead is
        dropped when the next chunk pays little for it (`_drop_read_ahead`)."""
        part = self.plan.indices[start:stop]
        try:
            frames = self.read(part, first=start == 0)
        except VideoDecodeError as error:
            return self._recover(error, start, stop)
        upcoming = self.plan.indices[stop : stop + DECODE_CHUNK_FRAMES] if stop is not None else ()
        if upcoming and not self.pyav:
            self._drop_read_ahead(max(part) + 1, upcoming)
        return frames

    def _recover(self, error: VideoDecodeError, start: int, stop: int | None) -> np.ndarray:
        """The plan's frames `[start:stop]` of a video whose read failed, with the same outcome however decord
        failed.

        Why PyAV's count decides: decord decodes ahead of the frames asked for, so damage shortly past them
        fails a read by timing. PyAV counts the frames before the damage (one pass, for damaged files only;
        `_pyav_starts`) and reads from then on: frames all before it are the same pictures decord gives. A
        plan needing frames past it is re-planned over those frames while none were handed over (`start`
        0: the first chunk, or a whole clip), and fails saying how far it got otherwise: the plan the
        caller holds cannot shrink then. `error` again where PyAV decodes no frame, or failed itself on a
        clip it reads already.

        PyAV decodes at full size (`PyAVFrameReader`): where a scaled decord reader handed over the first
        chunks, the clip's later frames are scaled by `resized_crops` instead of FFmpeg's scaler, ~1 grey
        level apart on average (`read`), so their tokens differ that little from what decord would give."""
        part = self.plan.indices[start:stop]
        found: int | None = None
        if not self.pyav:
            found = len(_pyav_starts(self.path, self.info.fps, error))
            self.decoder_note = _pyav_note(self.path, DECORD_FAILED, found, self.stated_frames)
            self.reader, self.keyframes, self.scaled, self.pyav = None, None, False, True
            if max(part) < found:
                return self._read_pyav(part)
        if start:
            raise self._failed_after(max(self.plan.indices[:start]) + 1) from None
        if found is None or self.planner is None:
            raise error
        self.info = replace(self.info, num_frames=found, timeline=_first_frames(self.info.timeline, found))
        self.plan = self.planner(self.info)
        return self._read_pyav(self.plan.indices[start:stop])

    def _failed_after(self, decoded: int) -> VideoDecodeError:
        """The error of a video whose frames up to frame `decoded` (counted from 1) were handed over. No
        decoder's detail: which decoder met the damage first (`_recover`) is a matter of timing."""
        return VideoDecodeError(self.path, f"decoding failed after frame {decoded} of {self.info.num_frames} "
                                f"(damaged from there?): {reencode_hint(self.path)}")

    def _drop_read_ahead(self, position: int, upcoming: tuple[int, ...] | list[int]) -> None:
        """Empty decord's queue of frames decoded ahead, when the next read pays little for it.

        Why: while reading, decord hands packets to its decoder thread faster than frames come back and
        never takes the surplus back; once its reader pauses (the backbone is busy with the chunk just
        read), that thread decodes the surplus into full frames and keeps them. On a 20-minute H.264
        film at 1 fps behind a slow backbone that surplus reached ~300 MiB. A seek empties the queue, and the next
        read then decodes from the keyframe before its first frame: extra work of `position - keyframe`
        frames, taken only when it is at most `READ_AHEAD_RESET_COST` of what the next chunk decodes
        anyway (sparse sampling, or short keyframe intervals). The frames read are the same either way.
        """
        first = min(upcoming)
        if first < position:  # decord seeks back for this read anyway
            return
        try:
            if self.keyframes is None:
                self.keyframes = list(self.reader.get_key_indices())
            at = bisect.bisect_right(self.keyframes, first) - 1
            keyframe = self.keyframes[at] if at >= 0 else 0
            extra = max(0, position - keyframe)
            if extra <= READ_AHEAD_RESET_COST * (max(upcoming) + 1 - position):
                self.reader.seek(0)
        except Exception:  # only memory is at stake; a reader that is really broken fails the next read
            return

    def padding_warning(self) -> str | None:
        """The one-line warning for a video too short for its plan (its last frame repeated), else None."""
        if not self.plan.padded:
            return None
        real, padded = self.plan.real_frames, self.plan.padded
        return (
            f"{self.path}: only {real} frame{'' if real == 1 else 's'} to sample, asked for "
            f"{len(self.plan)}; repeating the last frame {padded} time{'' if padded == 1 else 's'}"
        )

    def truncation_warning(self) -> str | None:
        """A warning when the decoder finds clearly fewer frames than the container claims, else None.

        Why: a download or copy cut short still opens, and its tokens then covered part of the film
        without a word (a 100-frame file cut at 50 % decoded 45 frames, cached as if complete).
        """
        found, stated = self.info.num_frames, self.stated_frames
        if self.decoder_note:  # the note says it
            return None
        if self.stated_seconds > 0:  # a duration, not a count: compare times (an intact variable-rate
            # Matroska file was warned about, its count estimated at the nominal rate)
            shown = self.info.duration
            if shown >= TRUNCATED_FRACTION * self.stated_seconds:
                return None
            return (f"{self.path}: the container claims {self.stated_seconds:.1f} s but only {found} frames "
                    f"({shown:.1f} s) decode (a file cut short?); using those")
        if stated <= 0 or found >= TRUNCATED_FRACTION * stated:
            return None
        return (f"{self.path}: the container claims {stated} frames but only {found} decode (a file cut "
                "short?); using those")

    def warnings(self, padding: bool = True) -> list[str]:
        """Every warning this clip has (decoder, truncation and, if `padding`, padding), for callers that
        report them later."""
        found = (self.decoder_note, self.truncation_warning(), self.padding_warning() if padding else None)
        return [w for w in found if w]

    @property
    def repeats_frames(self) -> bool:
        """Whether the plan samples faster than the video's own rate, so some source frames come twice."""
        return self.sampling_fps is not None and self.sampling_fps > self.info.fps

    def print_warnings(self, padding: bool = True) -> None:
        """Print `warnings` (without the padding one if `padding` is False: a caller that words it itself);
        for callers that print at once (extraction reports them with the video)."""
        from s5cli.cli.console import print_warning

        for warning in self.warnings(padding):
            print_warning(warning)


def open_clip(
    path: str | os.PathLike[str],
    frames: int | None,
    fps: float | None,
    num_threads: int = 2,
    min_frames: int = 1,
    shorter_side: int | None = None,
    planner: Callable[[VideoInfo], FramePlan] | None = None,
    resize: str = "crop",
) -> OpenedClip:
    """Open `path`, plan the frames to sample and decode the first chunk of them (`_decode_first_chunk`: a
    file decord fails on there is re-planned over the frames PyAV decodes, before the caller sees the plan).

    With `shorter_side`, much larger videos are scaled down while decoding (by FFmpeg, in decord's threads): a
    long 720p video then never sits in memory at full size, and the later resize has nothing left to do
    (`resize`: to the size `decoded_size` gives, so "squash" frames arrive already square).
    `planner` chooses the frames from the video's info (default: `plan_frames` with `frames`, `fps` and
    `min_frames`); `fps` is still the rate the plan samples at (`OpenedClip.sampling_fps`).
    """
    clip = _planned_clip(path, frames, fps, num_threads, min_frames, shorter_side, planner, resize)
    clip._decode_first_chunk()
    return clip


def _planned_clip(
    path: str | os.PathLike[str],
    frames: int | None,
    fps: float | None,
    num_threads: int,
    min_frames: int,
    shorter_side: int | None,
    planner: Callable[[VideoInfo], FramePlan] | None,
    resize: str = "crop",
) -> OpenedClip:
    """`open_clip` without decoding any frame."""
    # One read of the container header gives the true size, and proves there is a video stream: decord logs
    # a failed open straight to stderr (C++ logging its log level does not silence), so a file that is no
    # video at all is turned away here and the user sees one line.
    path = check_file(path)
    probe = probe_video(path)  # why a file is no video, in one line; the size decord hands frames over at
    original = (probe.height, probe.width)
    size = None
    # Scaling inside the decoder pays off for large reductions (720p -> 224: 1.7x faster decode in
    # benchmarks/extract.py) but costs more than it saves for small ones (272p -> 224: 1.6x slower), where the
    # uint8 resize in `frame_transform.resized_crops` is cheaper.
    if shorter_side and min(original) >= DECODER_SCALE_RATIO * shorter_side:
        size = decoded_size(*original, shorter_side, resize)
    reader = None
    try:
        try:
            reader = open_video(path, num_threads, size)
        except VideoDecodeError:
            if size is None:
                raise
            reader, size = open_video(path, num_threads), None
        info, note = video_info(reader, path), None
    except VideoDecodeError as failed:  # decord refused the file, or failed on its first frame
        why = DECORD_REFUSED if reader is None else DECORD_FAILED
        reader, (info, note) = None, _pyav_info(path, probe, failed, why)
    else:
        if shorter_side:  # the reader's frames may be scaled: report the video's own size
            info = replace(info, height=original[0], width=original[1])
    if planner is None:
        planner = partial(plan_frames, frames=frames, fps=fps, min_frames=min_frames)
    try:
        plan = planner(info)
    except UserError:
        if _timestamps_broken(info, fps):
            # The video's fault, not data.fps's: a VideoDecodeError is reported and skipped, where the
            # plan's own error stopped a whole extraction at one damaged file (and blamed the setting).
            raise VideoDecodeError(path, f"its timestamps run to {info.timeline.duration:,.0f} s over "
                                   f"{info.num_frames} frames (~{info.num_frames / info.fps:.1f} s at its average "
                                   "rate): damaged timestamps; re-encode it, e.g. ffmpeg -i IN -c:v libx264 OUT.mp4"
                                   ) from None
        raise
    return OpenedClip(path, plan, info, reader, reader is not None and size is not None, num_threads,
                      sampling_fps=fps, pyav=reader is None, stated_frames=probe.stated_frames,
                      stated_seconds=probe.stated_seconds,
                      rotation=probe.rotation, decoder_note=note, planner=planner)


def _timestamps_broken(info: VideoInfo, fps: float | None) -> bool:
    """Whether sampling at `fps` is refused only for the video's own timeline: its timestamps span more
    than the plan limit allows while its frames at their average rate would not (one frame stamped at
    1,100,000 s in a 0.8 s video)."""
    if fps is None or info.timeline is None or not info.fps > 0:
        return False
    by_rate = fps_count(info.num_frames, info.fps, fps)
    return by_rate <= MAX_FPS_PLAN_FRAMES < info.timeline.duration * fps


def _pyav_info(path: Path, probe, failed: VideoDecodeError, why: str) -> tuple[VideoInfo, str]:
    """The info of a file decord refused or failed on (`why`), from the frames PyAV decodes (a cut
    faststart MP4 still holds ~40 %), and the warning saying so; `failed` again when PyAV decodes none."""
    starts = _pyav_starts(path, probe.fps, failed)
    if why == DECORD_REFUSED and _intact(probe, len(starts)):
        why = DECORD_UNSUPPORTED
    return VideoInfo(num_frames=len(starts), fps=probe.fps, height=probe.height, width=probe.width,
                     timeline=_pyav_timeline(starts, probe.fps)), _pyav_note(path, why, len(starts),
                                                                             probe.stated_frames)


def _intact(probe, found: int) -> bool:
    """Whether a file decord refused looks whole: PyAV decodes every frame its container states, or it is a
    picture format that states none (a PNG). Why: a valid GIF was called "damaged or cut short?"."""
    return found >= probe.stated_frames > 0 or (probe.stated_frames == 0 and probe.image)


def _pyav_timeline(starts: list[float | None], fps: float) -> Timeline | None:
    """The decodable frames' own timeline where their times stray from the average rate, as decord's
    timestamps give one (`decord_reading`). Why: a cut variable-frame-rate file (a phone clip) that decord
    refused was spaced by the average rate, and 1 fps sampling took most of its frames from the first
    1.5 s of 10. None without a time for every frame, or with times that do not increase."""
    if len(starts) < 2 or not fps > 0 or any(t is None for t in starts):
        return None
    times = [float(t) for t in starts if t is not None]
    return timeline_if_variable(times, times[-1] + 1 / fps, fps)


def _pyav_starts(path: Path, fps: float, failed: VideoDecodeError) -> list[float | None]:
    """The start times of the frames PyAV decodes of a file decord failed on (those before the damage);
    `failed` again when PyAV decodes no frame."""
    starts = decodable_frame_starts(path)
    if not starts or not fps > 0:
        raise failed
    return starts


def _pyav_note(path: Path, why: str, found: int, stated: int) -> str:
    """The warning that PyAV decodes the file, saying `why` and how many of its frames are used."""
    claimed = f" of the {stated} its container claims" if stated > found else ""
    frames = f"{found} frame{'s' if found != 1 else ''}{claimed}"
    return f"{path}: {why}; PyAV decodes {frames}, using those"


def _first_frames(timeline: Timeline | None, frames: int) -> Timeline | None:
    """The timeline of a video's first `frames` frames (the last one runs until the next would start);
    None when there is none, or it ends before them (the average rate is all there is then)."""
    if timeline is None or frames >= len(timeline.starts):
        return None
    return Timeline(timeline.starts[:frames], timeline.starts[frames])


def decode_clip(
    path: str | os.PathLike[str],
    frames: int | None,
    fps: float | None,
    num_threads: int = 2,
    min_frames: int = 1,
    warn: bool = True,
    shorter_side: int | None = None,
    resize: str = "crop",
) -> DecodedClip:
    """Open, plan and decode one video in one read (`shorter_side` as in `open_clip`); warns once when it
    is too short and its last frame is repeated. For long videos, `open_clip(...).chunks` instead.

    No frame is handed over before the read ends, so wherever decord fails on a damaged file, the clip can be
    re-planned over the frames PyAV decodes (`OpenedClip._recover`)."""
    clip = _planned_clip(path, frames, fps, num_threads, min_frames, shorter_side, None, resize)
    array = clip._read_span(0, None)
    if warn:
        clip.print_warnings()
    return DecodedClip(frames=array, plan=clip.plan, info=clip.info)
