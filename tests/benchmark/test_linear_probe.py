"""benchmarks/linear_probe.py: the probe separates what is separable, and the script reports one row of JSON."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.benchmark.scripts import REPO, load_script, run_script


def _module():
    return load_script("linear_probe")


def test_probe_fits_linearly_separable_features_and_not_shuffled_labels() -> None:
    torch.manual_seed(0)
    labels = torch.arange(60) % 3
    features = torch.randn(60, 8) + 4.0 * torch.nn.functional.one_hot(labels, 8).float()
    head = _module().fit_probe(features, labels, 3, l2=1e-3)
    assert (head(features).argmax(1) == labels).all()
    shuffled = labels[torch.randperm(60)]
    held_out = torch.randn(30, 8) + 4.0 * torch.nn.functional.one_hot(labels[:30], 8).float()
    noisy = _module().fit_probe(features, shuffled, 3, l2=1e-3)
    assert (noisy(held_out).argmax(1) == labels[:30]).float().mean() < 0.8


def test_random_weights_probe_on_a_tiny_synthetic_task(tmp_path: Path) -> None:
    overrides = [
        f"data.root={tmp_path / 'videos'}", f"data.cache_dir={tmp_path / 'cache'}",
        "data.synthetic.num_train=18", "data.synthetic.num_val=9", "data.synthetic.num_test=9",
        "model.d_model=32", "model.n_blocks=2", "model.d_state=8", "model.guide_channels=8",
    ]
    out = tmp_path / "probe.json"
    proc = run_script("linear_probe", "--random", str(REPO / "recipes" / "synthetic.yaml"), *overrides,
                      "--split", "test", "--json", str(out), timeout=600)
    result = json.loads(out.read_text())
    assert result == json.loads(proc.stdout.strip().splitlines()[-1])
    assert (result["train_videos"], result["eval_videos"], result["split"]) == (18, 9, "test")
    assert result["feature_dim"] == 32 // 2**2 and 0.0 <= result["probe_top1"] <= 1.0
