"""Every finished epoch is a step checkpoint, validated or not: a kill loses at most the epoch in hand.

Why: a finetune run wrote one only when it validated, so with `train.eval_every: 10` (the LVU recipes) an
OOM kill lost up to ten epochs, and a run whose val split was empty kept nothing until its last epoch.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from s5cli.cli.app import app
from s5cli.train import step as train_step
from s5cli.train.checkpoint_paths import checkpoint_dir
from tests.train.test_finetune_e2e import RECIPE, tiny


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


class Killed(BaseException):
    """Stands for `kill -9`: nothing in the trainer catches it, so nothing is saved on the way out."""


def kill_at_step(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """The trainer dies as it starts its `n`-th step (of this command)."""
    real, calls = train_step.backward_batch, {"n": 0}

    def backward_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(train_step, "backward_batch", backward_batch)


def finetune(*args: str) -> None:
    result = CliRunner().invoke(app, ["finetune", RECIPE, *args, "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output


def records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "samples_per_s"} for line in lines if line.strip()]


def same_weights(a: Path, b: Path) -> bool:
    left, right = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


@pytest.mark.parametrize(("settings", "killed_at", "kept"), [
    # Validates after epochs 2 and 4 only: killed in epoch 4, the run keeps epoch 3 (step 9), not epoch 2.
    ({"train.eval_every": 2, "train.epochs": 4}, 11, 9),
    # No val clips, so no validation at all: killed in epoch 3, the run keeps epoch 2 (it kept nothing).
    ({"data.synthetic.num_val": 0, "train.epochs": 3}, 8, 6),
], ids=["eval_every=2", "empty-val-split"])
def test_a_kill_after_an_epoch_without_validation_resumes_from_that_epoch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: dict, killed_at: int, kept: int) -> None:
    shared = tmp_path / "shared"
    extra = {"model.dropout": 0.1, **settings}  # dropout: the model's RNG is in play on resume
    finetune(*tiny(shared, **extra, **{"train.out_dir": tmp_path / "full"}))
    cut = tiny(shared, **extra, **{"train.out_dir": tmp_path / "cut"})
    with monkeypatch.context() as patch:
        kill_at_step(patch, killed_at)
        with pytest.raises(Killed):
            CliRunner().invoke(app, ["finetune", RECIPE, *cut, "--quiet", "--device", "cpu"])
    assert checkpoint_dir(tmp_path / "cut").name == f"step-{kept:07d}"
    finetune(*cut, "--resume")
    full, resumed = tmp_path / "full", tmp_path / "cut"
    assert records(resumed) == records(full)
    assert same_weights(checkpoint_dir(resumed), checkpoint_dir(full))
    assert (resumed / "best").exists() == (full / "best").exists()
    if (full / "best").exists():
        assert same_weights(resumed / "best", full / "best")
    assert sorted(p.name for p in (resumed / "checkpoints").iterdir()) == sorted(
        p.name for p in (full / "checkpoints").iterdir())
