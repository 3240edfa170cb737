"""`s5 eval --video`'s report: tied probabilities ranked as `s5 eval` ranks them, non-finite outputs that
predict nothing, and a short video's padding counted apart from its sampled frames."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from rich.console import Console
from torch import nn

from s5cli.cli import eval_video
from s5cli.data.datasets.base import TaskInfo
from s5cli.recipe import load_recipe
from tests.data.video_files import write_video
from tests.train.test_eval_video import loaded

RECIPE = str(Path(__file__).resolve().parents[2] / "recipes" / "synthetic.yaml")


class Constant(nn.Module):
    """(B, T, S, D) -> (B, C) outputs all equal to `value`: a collapsed head (every class tied), or NaN."""

    def __init__(self, outputs: int, value: float = 0.0):
        super().__init__()
        self.outputs, self.value = outputs, value

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.full((tokens.shape[0], self.outputs), self.value)


def predict(monkeypatch, model: nn.Module, task: TaskInfo, top: int = 5) -> dict:
    """`predict_video` over 10 frames of random tokens in windows of 4 (starting at 0, 4 and 6)."""
    tokens = torch.randn(10, 3, 6)
    monkeypatch.setattr("s5cli.data.encode.load_video_tokens_with_plan", loaded(tokens))
    rec = load_recipe(RECIPE, ["data.frames=4"])
    return eval_video.predict_video(model, rec, task, Path("movie.mp4"), torch.device("cpu"), top=top, quiet=True)


def test_tied_probabilities_rank_the_lower_class_first_as_the_prediction_does(monkeypatch) -> None:
    """`topk` listed one of 9 equal probabilities at random first (class 7 on CPU) while the window
    predictions and `s5 eval`'s confusion matrix said class 0."""
    result = predict(monkeypatch, Constant(9), TaskInfo("classification", 9, [f"c{i}" for i in range(9)]))
    assert [row["class"] for row in result["top"]] == [0, 1, 2, 3, 4]
    assert [row["name"] for row in result["top"]] == ["c0", "c1", "c2", "c3", "c4"]
    assert {w["class"] for w in result["window_predictions"]} == {result["top"][0]["class"]}
    assert eval_video.ranked_classes(torch.tensor([0.2, 0.4, 0.4])) == [(1, pytest.approx(0.4)), (2, pytest.approx(0.4)),
                                                                        (0, pytest.approx(0.2))]


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_non_finite_outputs_predict_nothing_and_stay_valid_json(monkeypatch, kind: str) -> None:
    """NaN outputs (float16 overflow, a diverged model): no top list ranked over NaN, no NaN in the JSON
    (strict readers refuse it), and a count of the windows, as `s5 eval` counts `nonfinite` rows."""
    outputs = 4 if kind == "classification" else 1
    result = predict(monkeypatch, Constant(outputs, float("nan")), TaskInfo(kind, outputs))
    json.dumps(result, allow_nan=False)
    assert result["nonfinite"] == result["windows"] == 3
    if kind == "classification":
        assert result["top"] == []
        assert {w["class"] for w in result["window_predictions"]} == {None}
    else:
        assert result["prediction"] is None and {w["prediction"] for w in result["window_predictions"]} == {None}
    printed = io.StringIO()
    eval_video._print_video(Console(file=printed, width=200), Path("movie.mp4"), result)
    assert printed.getvalue() == ("movie.mp4: 3 of 3 windows of 4 frames (10 sampled) gave non-finite outputs "
                                  "(NaN/inf): no prediction\n")
    finite = predict(monkeypatch, Constant(outputs), TaskInfo(kind, outputs))
    assert "nonfinite" not in finite


@pytest.mark.parametrize(
    ("overrides", "frames", "padded"),
    [
        (["data.frames=16"], 2, 14),  # uniform frames: the plan repeats the last frame
        (["data.frames=8", "data.frame_pool=16"], 2, 6),  # the pool's rows: padded while sampled as well
        (["data.frames=null", "data.fps=8", "data.window_seconds=1"], 2, 6),  # at a rate: the window is padded
        (["data.frames=2"], 2, 0),
    ],
)
def test_a_short_videos_padding_is_not_counted_as_sampled_frames(tmp_path, overrides, frames, padded) -> None:
    """A 2-frame video read "1 window of 16 frames (16 sampled)" and "frames": 16 in the JSON: "frames" now
    counts the video's own frames, "padded_frames" the copies of its last one that fill the window."""
    video = write_video(tmp_path / "short.mp4", frames=2, size=32)
    rec = load_recipe(RECIPE, [*overrides, "data.image_size=32"])
    task = TaskInfo("classification", 3)
    result = eval_video.predict_video(Constant(3), rec, task, video, torch.device("cpu"), top=3, quiet=True)
    assert result["frames"] == frames
    assert (result["padded_frames"], result["windows"]) == (padded, 1)
    assert result["window_frames"] == frames + padded
    copies = f", padded with {padded} copies of the last" if padded else ""
    assert eval_video._windows_text(result) == f"1 window of {frames + padded} frames ({frames} sampled{copies})"


def test_a_video_is_opened_once(tmp_path, monkeypatch) -> None:
    """The real frames come from the plan the tokens were sampled by: planning the video again from its
    header to count them opened every video a second time."""
    from s5cli.data import decode

    video = write_video(tmp_path / "short.mp4", frames=2, size=32)
    opened: list[Path] = []
    plan_clip = decode._planned_clip
    monkeypatch.setattr(decode, "_planned_clip", lambda path, *args, **kwargs: opened.append(path) or plan_clip(
        path, *args, **kwargs))
    rec = load_recipe(RECIPE, ["data.frames=16", "data.image_size=32"])
    result = eval_video.predict_video(Constant(3), rec, TaskInfo("classification", 3), video, torch.device("cpu"),
                                      top=3, quiet=True)
    assert (result["frames"], result["padded_frames"]) == (2, 14)
    assert opened == [video]
