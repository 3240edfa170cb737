"""`data.frame_pool`: cache a pool of uniform frames per video, train on `data.frames` of them drawn at
random and sorted each epoch (ViS4mer's temporal augmentation on Breakfast/COIN), evaluate on uniformly
spaced ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from s5cli.cli.app import app
from s5cli.data.cache import FeatureCache
from s5cli.data.cache_settings import ExtractionSettings
from s5cli.data.datasets.base import VideoRecord
from s5cli.data.datasets.token_dataset import TokenDataset, spread_rows
from s5cli.data.encode import settings_from_data
from s5cli.data.sampling import uniform_plan
from s5cli.errors import UserError
from tests.data.test_extract import data_section
from tests.train.test_finetune_e2e import RECIPE, tiny


def _cache_with(tmp_path: Path, lengths: dict[str, int]) -> FeatureCache:
    """A real feature cache whose video `v` holds frames whose every token is the frame's index."""
    cache = FeatureCache(tmp_path / "cache", ExtractionSettings("patch_pool", None, 16, None, 64, dtype="float32"))
    for video_id, length in lengths.items():
        cache.save(video_id, torch.arange(length, dtype=torch.float32).view(-1, 1, 1).expand(-1, 17, 96).clone())
    return cache


def test_rows_are_read_alone_in_the_order_asked_with_repeats(tmp_path) -> None:
    cache = _cache_with(tmp_path, {"v": 20})
    for rows in ([0, 1, 2, 7, 8, 19], [3], [5, 6, 6, 6], list(range(20))):
        assert cache.load_rows("v", rows)[:, 0, 0].tolist() == rows


def test_training_clips_are_sorted_draws_without_repeats_new_each_epoch(tmp_path) -> None:
    cache = _cache_with(tmp_path, {"long": 32, "short": 5})
    records = [VideoRecord("long", Path("long.mp4"), 0), VideoRecord("short", Path("short.mp4"), 1)]
    train = TokenDataset(records, cache, frames=8, training=True, spread=True)
    clips = [train.training_clip(0, seed=3, epoch=epoch).tokens[:, 0, 0].long().tolist() for epoch in range(4)]
    for rows in clips:
        assert len(rows) == 8 and rows == sorted(set(rows)) and rows[0] >= 0 and rows[-1] < 32
    assert len({tuple(rows) for rows in clips}) == 4  # another draw every epoch
    assert train.training_clip(0, seed=3, epoch=2).tokens[:, 0, 0].long().tolist() == clips[2]  # and reproducible
    assert train.training_clip(0, seed=4, epoch=2).tokens[:, 0, 0].long().tolist() != clips[2]
    # Draws cover the whole pool, not one stretch of it.
    seen = {row for epoch in range(20) for row in train.training_clip(0, seed=0, epoch=epoch).tokens[:, 0, 0].tolist()}
    assert len(seen) == 32
    # A video with fewer frames than a clip: all of them, the last one repeated.
    assert train.training_clip(1, seed=3, epoch=0).tokens[:, 0, 0].long().tolist() == [0, 1, 2, 3, 4, 4, 4, 4]
    assert spread_rows(32, 8, np.random.default_rng(0)) == spread_rows(32, 8, np.random.default_rng(0))


def test_evaluation_reads_uniformly_spaced_frames_once_per_video(tmp_path) -> None:
    cache = _cache_with(tmp_path, {"long": 32, "short": 5})
    records = [VideoRecord("long", Path("long.mp4"), 0), VideoRecord("short", Path("short.mp4"), 1)]
    evaluation = TokenDataset(records, cache, frames=8, training=False, spread=True)
    assert len(evaluation) == 2
    assert evaluation[0].tokens[:, 0, 0].long().tolist() == list(uniform_plan(32, 8).indices) == [2, 6, 10, 14, 18,
                                                                                                   22, 26, 30]
    assert evaluation[1].tokens[:, 0, 0].long().tolist() == [0, 1, 2, 3, 4, 4, 4, 4]
    # Without a pool the same cache is cut into consecutive windows.
    assert len(TokenDataset(records, cache, frames=8, training=False)) == 4 + 1


def test_a_video_shorter_than_the_pool_is_drawn_from_its_real_frames(tmp_path) -> None:
    """Extraction pads such a video with copies of its last frame (metadata "padded"): drawing over those
    gave one frame many rows of a clip."""
    cache = FeatureCache(tmp_path / "cache", ExtractionSettings("patch_pool", None, 16, None, 64, dtype="float32"))
    tokens = torch.arange(16, dtype=torch.float32).view(-1, 1, 1).expand(-1, 17, 96).clone()
    tokens[10:] = 9.0  # 10 real frames, then 6 copies of the last one
    cache.save("short", tokens, {"padded": "6"})
    assert cache.padded_frames("short") == 6
    records = [VideoRecord("short", Path("short.mp4"), 0)]
    train = TokenDataset(records, cache, frames=8, training=True, spread=True)
    for epoch in range(10):
        rows = train.training_clip(0, seed=0, epoch=epoch).tokens[:, 0, 0].long().tolist()
        assert len(set(rows)) == 8 and rows == sorted(rows)  # never two copies of the last frame
    evaluation = TokenDataset(records, cache, frames=8, training=False, spread=True)
    assert evaluation[0].tokens[:, 0, 0].long().tolist() == list(uniform_plan(10, 8).indices)


def test_the_cache_holds_the_pool_and_a_raw_video_the_clip(tmp_path) -> None:
    assert settings_from_data(data_section(tmp_path, frames=8, frame_pool=32)).frames == 32
    assert settings_from_data(data_section(tmp_path, frames=8, frame_pool=32), pool=False).frames == 8
    assert settings_from_data(data_section(tmp_path, frames=8, frame_pool=None)).frames == 8


@pytest.mark.parametrize(("overrides", "message"), [
    (["data.frame_pool=4", "data.frames=8"], r"data\.frame_pool=4 is fewer frames than a clip of data\.frames=8"),
    (["data.frame_pool=64", "data.fps=1.0"], r"data\.frame_pool=64 draws from uniform frames over a whole video"),
    (["data.frame_pool=0"], r"data\.frame_pool"),
])
def test_pools_that_cannot_work_are_refused(overrides, message) -> None:
    from s5cli.recipe import load_recipe_spec

    with pytest.raises(UserError, match=message):
        load_recipe_spec("synthetic", overrides)


def test_finetune_and_eval_with_a_frame_pool(tmp_path) -> None:
    """End to end: the cache holds 16 frames per video, training and evaluation read 8 of them."""
    runner = CliRunner()
    overrides = tiny(tmp_path, **{"data.synthetic.frames": 16, "data.frames": 8, "data.frame_pool": 16})
    result = runner.invoke(app, ["finetune", RECIPE, *overrides, "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    folders = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    assert len(folders) == 1
    assert json.loads((folders[0] / "settings.json").read_text())["frames"] == "16"
    tokens = next(folders[0].glob("*.safetensors"))
    from safetensors import safe_open

    with safe_open(str(tokens), framework="pt") as handle:
        assert handle.get_slice("tokens").get_shape()[0] == 16
    out = tmp_path / "metrics.json"
    result = runner.invoke(app, ["eval", "--checkpoint", str(tmp_path / "run"), "--json", str(out), "--quiet",
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert metrics["count"] == 8 and metrics["windows"] == 8  # one clip of uniformly spaced frames per video
    # A raw video is sampled at the clip's 8 uniform frames (not the pool's 16), read as one window.
    video = next((tmp_path / "videos").rglob("*.mp4"))
    result = runner.invoke(app, ["eval", "--checkpoint", str(tmp_path / "run"), "--video", str(video), "--json", "-",
                                 "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    predicted = json.loads(result.stdout)
    assert (predicted["windows"], predicted["window_frames"], predicted["frames"]) == (1, 8, 8)
