"""Selections line up with the synthetic task's ground truth: token s = 1 + row*grid + col of the frame shown."""

from __future__ import annotations

import json

import numpy as np
import pytest

from s5cli.models.backbone import build_backbone
from s5cli.visualize.precision import synthetic_event_precision
from s5cli.visualize.video_encoding import VideoSampling, encode_video

SYNTHETIC = {"seed": 3, "num_train": 1, "num_val": 1, "num_test": 2, "frames": 12, "size": 96, "grid": 6,
             "num_event_types": 2, "events_per_video": 2, "clutter": 0.5, "fps": 8.0}


@pytest.fixture(scope="module")
def synthetic_test_split(tmp_path_factory):
    from s5cli.data.datasets import list_records

    root = tmp_path_factory.mktemp("synthetic")
    data = {"dataset": "synthetic", "root": str(root), "synthetic": SYNTHETIC, "frames": 12, "image_size": 96,
            "backbone": "patch_pool", "cache_dtype": "float32"}
    records = list(list_records(data, "test"))
    return data, records


def test_event_glyph_sits_on_the_ground_truth_token(synthetic_test_split) -> None:
    _, records = synthetic_test_split
    for record in records:
        truth = json.loads(record.path.with_suffix(".json").read_text())
        decoded = encode_video(record.path, build_backbone("patch_pool", None, 96),
                               VideoSampling(truth["frames"], None, 96))
        assert decoded.source_frames == list(range(truth["frames"]))
        for event in truth["events"]:
            frame = decoded.pixels[(event["start"] + event["end"]) // 2].astype(float)
            saturation = (frame.max(-1) - frame.min(-1)).reshape(6, 16, 6, 16).mean(axis=(1, 3))
            assert int(np.argmax(saturation)) == event["row"] * 6 + event["col"]


def test_synthetic_event_precision_of_a_checkpoint(synthetic_test_split, tmp_path) -> None:
    import torch

    from s5cli.models.registry import build_model
    from s5cli.train.checkpoint import save_checkpoint

    data, records = synthetic_test_split
    config = dict(d_input=96, d_model=16, n_blocks=1, d_state=8, guide_channels=8, mg_hidden=8, keep_ratio=0.5)
    torch.manual_seed(0)
    model = build_model("s5", config, 4)
    recipe = {"data": data, "model": {"name": "s5", **config}}
    path = save_checkpoint(tmp_path / "ckpt", model, {"model_name": "s5", "num_outputs": "4",
                                                      "recipe": json.dumps(recipe)})
    result = synthetic_event_precision(path, split="test", keep_ratio=0.25)
    assert result["videos"] == len(records) == 2
    assert result["frames"] == 2 * 12 and result["patches"] == 2 * 12 * 36
    event_frames = sum(
        e["end"] - e["start"] for r in records for e in json.loads(r.path.with_suffix(".json").read_text())["events"]
    )
    assert result["event_cells"] == event_frames
    # round(0.25 * 37) = 9 tokens per frame, of which CLS may be one
    assert 8 * 24 <= result["kept_patches"] <= 9 * 24
    assert result["coverage_chance"] == pytest.approx(result["kept_patches"] / result["patches"])
    assert result["coverage"] == pytest.approx(result["kept_on_event"] / result["event_cells"])
    assert 0 <= result["kept_on_event"] <= min(result["event_cells"], result["kept_patches"])


def test_mask_precision_script_prints_precision_coverage_and_chance(synthetic_test_split, tmp_path, capsys) -> None:
    import importlib.util
    from pathlib import Path

    import torch

    from s5cli.models.registry import build_model
    from s5cli.train.checkpoint import save_checkpoint

    data, _ = synthetic_test_split
    config = dict(d_input=96, d_model=16, n_blocks=1, d_state=8, guide_channels=8, mg_hidden=8, keep_ratio=0.5)
    torch.manual_seed(0)
    recipe = {"data": data, "model": {"name": "s5", **config}}
    path = save_checkpoint(tmp_path / "ckpt", build_model("s5", config, 4),
                           {"model_name": "s5", "num_outputs": "4", "recipe": json.dumps(recipe)})
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "mask_precision.py"
    spec = importlib.util.spec_from_file_location("mask_precision", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "precision.json"
    assert module.main([str(path), "--keep-ratio", "0.25", "1.0", "--json", str(out), "--reference"]) == 0
    printed = capsys.readouterr().out
    assert "| selector | keep ratio | precision | chance |" in printed
    assert "| learned | 0.25 |" in printed and "| deviation | 1.00 |" in printed
    rows = json.loads(out.read_text())["results"]
    assert [(r["selector"], r["keep_ratio"]) for r in rows] == [
        ("learned", 0.25), ("deviation", 0.25), ("learned", 1.0), ("deviation", 1.0)]
    # keeping every token covers every event cell, and its precision is exactly the chance level
    assert rows[2]["coverage"] == 1.0 and rows[2]["precision"] == pytest.approx(rows[2]["precision_chance"])
    assert rows[0]["coverage_chance"] < 0.3
    # the glyphs are the most saturated patches: the deviation rule finds (almost) all of them at 25%
    assert rows[1]["coverage"] > 0.9 and rows[1]["kept_patches"] == 24 * round(0.25 * 37)
    assert module.main([str(tmp_path / "missing")]) == 2
