"""What an LVU regression prediction is on its own scale, written in one place (`lvu.REGRESSION_TARGETS`) and
shown by `s5 eval --video`: "predicted value 12.0093" did not say that it was ln(views)."""

from __future__ import annotations

import io
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from s5cli.cli import eval_video
from s5cli.data.datasets import lvu


@pytest.mark.parametrize(
    ("task", "value", "text"),
    [
        ("like_ratio", 9.34, "like ratio x10 9.3400"),
        ("view_count", 12.0093, "ln(view count) 12.0093 (~164,000 views)"),  # e^12.0093 = 164,275
        ("view_count", 2.0, "ln(view count) 2.0000 (~7 views)"),
        ("view_count", 1e4, "ln(view count) 10000.0000"),  # a diverged model: e^value overflows, no count
    ],
)
def test_a_regression_value_is_described_on_its_own_scale(task: str, value: float, text: str) -> None:
    assert lvu.target_scale({"task": task}).describe(value) == text


def test_every_regression_task_has_a_scale_and_classification_none() -> None:
    assert set(lvu.REGRESSION_TARGETS) == set(lvu.REGRESSION_TASKS)
    assert all(lvu.target_scale({"task": task}) is None for task in lvu.CLASSIFICATION_TASKS)


def _printed(data: SimpleNamespace, prediction: float) -> str:
    result = {"video": "m.mp4", "frames": 90, "padded_frames": 0, "window_frames": 60, "windows": 31,
              "prediction": prediction}
    out = io.StringIO()
    eval_video._print_video(Console(file=out, width=200), Path("m.mp4"), result, eval_video.target_scale(data))
    return out.getvalue()


def test_eval_video_prints_what_an_lvu_value_is_and_other_values_bare() -> None:
    views = SimpleNamespace(dataset="lvu", task="view_count")
    assert _printed(views, math.log(164_174)) == ("m.mp4: predicted ln(view count) 12.0087 (~164,000 views); mean "
                                                  "of 31 windows of 60 frames (90 sampled)\n")
    synthetic = SimpleNamespace(dataset="synthetic", task=None)  # no scale: the value as it is
    assert _printed(synthetic, 1.5) == "m.mp4: predicted value 1.5000; mean of 31 windows of 60 frames (90 sampled)\n"
