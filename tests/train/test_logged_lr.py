"""The learning rate logged for a step (metrics.jsonl, TensorBoard, progress) is the one that step used."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from s5cli.cli.app import app
from s5cli.train import progress as progress_module
from s5cli.train import step as train_step
from tests.train.test_finetune_e2e import RECIPE, tiny


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def test_each_step_logs_the_rate_it_was_taken_at(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Warmup + cosine over 6 steps: the rate changes every step. Before, the rate read after the schedule
    had advanced was logged, the next step's (step 1 showed warmup's second rate, the last step 0)."""
    real_step, used = train_step.optimizer_step, []

    def stepping(scaler, optimizer):
        used.append(optimizer.param_groups[0]["lr"])
        return real_step(scaler, optimizer)

    shown: list[float] = []
    real_update = progress_module.TrainingProgress.update
    monkeypatch.setattr(train_step, "optimizer_step", stepping)
    monkeypatch.setattr(progress_module.TrainingProgress, "update",
                        lambda self, step, epoch, loss, lr, speed: shown.append(lr)
                        or real_update(self, step, epoch, loss, lr, speed))
    args = tiny(tmp_path, **{"optim.schedule": "cosine", "optim.warmup_steps": 2, "optim.lr": 1e-3})
    result = CliRunner().invoke(app, ["finetune", RECIPE, *args, "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [r["lr"] for r in records if "loss" in r]
    assert len(used) == 6 and len(set(used)) == 6
    assert logged == pytest.approx(used) and shown == pytest.approx(used)
    assert logged[0] == pytest.approx(1e-3 / 3)  # warmup's first rate: (0 + 1) / (2 + 1)
