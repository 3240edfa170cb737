"""`s5 eval` of an LVU regression model on a tiny tree of real (generated) videos: the MSE is on the target's
own scale whichever train.csv the eval recipe sees, broken videos are counted apart from missing ones, and
the refusal of another task speaks of a regression model's outputs, not its classes."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from s5cli.cli.app import app
from tests.data.video_files import write_video

IDS = [f"vid{i:08d}" for i in range(6)]  # 11 characters, as YouTube ids
HEADER = "like_count dislike_count youtube_id imdb_id\n"
# (likes, dislikes) of the train, val and test videos: like ratios x10 of 7.7 .. 6.7, 9.1, and 6.7 / 9.7.
TRAIN = [(10, 3), (15, 4), (20, 5), (25, 6)]
VAL = [(50, 5)]
TEST = [(40, 20), (30, 1)]


def _rows(counts: list[tuple[int, int]], ids: list[str]) -> str:
    return HEADER + "".join(f"{likes} {dislikes} {vid} tt{vid[-2:]}\n" for (likes, dislikes), vid in zip(
        counts, ids, strict=True))


def _annotations(folder: Path, train: list[tuple[int, int]], test: str | None = None) -> Path:
    """An lvu_1.0-like folder with like_ratio/{train,val,test}.csv: the fixture's videos, `train`'s counts."""
    task = folder / "like_ratio"
    task.mkdir(parents=True)
    (task / "train.csv").write_text(_rows(train, IDS[:4]))
    (task / "val.csv").write_text(_rows(VAL, IDS[4:5]))
    (task / "test.csv").write_text(test if test is not None else _rows(TEST, IDS[4:6]))
    return folder


def _ratio(likes: int, dislikes: int) -> float:
    return likes / (likes + dislikes) * 10


def _settings(home: Path) -> list[str]:
    """The tiny data settings of the tree (4 uniform 32 px frames per video, patch tokens, float32 cache)."""
    return [f"data.root={home / 'videos'}", f"data.cache_dir={home / 'cache'}", "data.backbone=patch_pool",
            "data.backbone_weights=null", "data.image_size=32", "data.frames=4", "data.fps=null",
            "data.window_seconds=null", "data.cache_dtype=float32", "data.num_workers=0", "data.decode_threads=1"]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six tiny videos, the split files (`ann`) and a like_ratio model trained one epoch on them (`run`)."""
    home = tmp_path_factory.mktemp("lvu_regression")
    for i, vid in enumerate(IDS):
        write_video(home / "videos" / f"{vid}.mp4", frames=4 + i, size=32)
    _annotations(home / "ann", TRAIN)
    model = ["model.d_input=96", "model.d_model=32", "model.n_blocks=1", "model.d_state=8", "model.guide_channels=8",
             "model.mg_hidden=8", "train.epochs=1", "train.batch_size=4", "train.eval_every=1", "train.amp=false",
             f"train.out_dir={home / 'run'}", "eval.batch_size=8"]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(home)
        result = CliRunner().invoke(app, ["finetune", "lvu/like_ratio", *_settings(home), f"data.annotations={home / 'ann'}",
                                          *model, "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return home


@pytest.fixture(autouse=True)
def _work_in_home(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(home)


def _eval(checkpoint: Path, annotations: Path, *extra: str) -> tuple[dict, str]:
    """(the --json metrics, the printed output) of `s5 eval -c CHECKPOINT data.annotations=ANNOTATIONS`."""
    out = annotations.parent / f"{annotations.name}-{checkpoint.name}.json"
    result = CliRunner().invoke(app, ["eval", f"data.annotations={annotations}", *extra, "-c", str(checkpoint),
                                      "--json", str(out), "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text()), result.output


def _video_predictions(home: Path, ids: list[str]) -> list[float]:
    """The checkpoint's predictions for these videos on the target's own scale (`s5 eval --video`, which
    adds the checkpoint's stored offset)."""
    out = home / "videos.json"
    videos = [arg for vid in ids for arg in ("--video", str(home / "videos" / f"{vid}.mp4"))]
    result = CliRunner().invoke(app, ["eval", "-c", str(home / "run"), *videos, "--json",
                                      str(out), "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return [entry["prediction"] for entry in json.loads(out.read_text())["videos"]]


def test_the_split_mse_does_not_depend_on_the_eval_recipes_train_split(home: Path, tmp_path: Path) -> None:
    """The labels were centred by the recipe's train.csv mean and the outputs compared with them as they
    were: a copy of the split files whose train.csv differs (its mean 4 lower) changed the test MSE of the
    same checkpoint on the same videos and targets. It is the MSE of predictions + the checkpoint's
    stored offset against the raw targets."""
    other = _annotations(tmp_path / "other", [(3, 7), (5, 5), (4, 6), (6, 4)])
    own, _ = _eval(home / "run", home / "ann")
    moved, _ = _eval(home / "run", other)
    assert own["count"] == moved["count"] == 2
    assert moved["mse"] == pytest.approx(own["mse"], rel=1e-5)
    predictions = _video_predictions(home, IDS[4:6])
    expected = sum((p - _ratio(*t)) ** 2 for p, t in zip(predictions, TEST, strict=True)) / len(TEST)
    assert own["mse"] == pytest.approx(expected, rel=1e-4)


def _drop_stored_offset(checkpoint: Path) -> None:
    """Make `checkpoint` one from before target offsets were stored (its task entry lacks the field)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    file = str(checkpoint / "model.safetensors")
    with safe_open(file, framework="pt") as handle:
        meta = dict(handle.metadata())
    task = json.loads(meta["task"])
    del task["target_offset"]
    meta["task"] = json.dumps(task)
    save_file(load_file(file), file, metadata=meta)


def test_a_checkpoint_without_a_stored_offset_is_scored_with_the_recipes(home: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(home / "run" / "best", old)
    _drop_stored_offset(old)
    assert _eval(old, home / "ann")[0]["mse"] == pytest.approx(_eval(home / "run", home / "ann")[0]["mse"], rel=1e-5)


def test_broken_videos_are_counted_apart_from_missing_ones(home: Path, tmp_path: Path) -> None:
    """`missing` counted the videos data.root lacks and those that could not be decoded as one number; a
    script could not tell a download to finish from a file to replace."""
    (home / "videos" / "vidbroken00.mp4").write_bytes(b"not a video at all")
    test = _rows(TEST, IDS[4:6]) + "10 1 vidbroken00 tt90\n10 1 vidabsent00 tt91\n"
    metrics, printed = _eval(home / "run", _annotations(tmp_path / "ann", TRAIN, test))
    assert (metrics["count"], metrics["missing"], metrics["broken"]) == (2, 1, 1)
    assert "broken" in printed


def test_a_regression_model_on_another_task_is_refused_naming_its_outputs(home: Path) -> None:
    result = CliRunner().invoke(app, ["eval", "data.task=view_count", "-c", str(home / "run"), "--quiet",
                                      "--device", "cpu"])
    said = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "was trained on data.task=like_ratio, whose target its output predicts" in said
    assert "classes" not in said


def test_a_video_prediction_says_what_the_value_is(home: Path) -> None:
    out = home / "one.json"
    result = CliRunner().invoke(app, ["eval", "-c", str(home / "run"), "--video",
                                      str(home / "videos" / f"{IDS[0]}.mp4"), "--json", str(out), "--quiet",
                                      "--device", "cpu"], terminal_width=200)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["target"] == "like ratio x10" and math.isfinite(report["prediction"])
    assert f"{IDS[0]}.mp4: predicted like ratio x10 {report['prediction']:.4f}; mean of 1 window" in result.output
