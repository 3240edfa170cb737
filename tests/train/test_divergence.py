"""A finite loss with a non-finite gradient stops the run before the optimiser step (no NaN model is
validated or checkpointed), and `--resume` goes back past a checkpoint whose weights are not finite."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from s5cli.cli.app import app
from s5cli.train import step as train_step
from tests.train.test_finetune_e2e import RECIPE, _losses, tiny


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def _poison_gradient_at(monkeypatch: pytest.MonkeyPatch, at_step: int, value: float) -> None:
    """After backward of step `at_step`, one gradient entry becomes `value`; the loss stays finite."""
    real, calls = train_step.backward_batch, []

    def backward(setup, module, scaler, clips, micro):
        loss = real(setup, module, scaler, clips, micro)
        calls.append(1)
        if len(calls) == at_step:
            next(p for p in module.parameters() if p.grad is not None).grad.view(-1)[0] = value
        return loss

    monkeypatch.setattr(train_step, "backward_batch", backward)


def _all_finite(checkpoint: Path) -> bool:
    return all(torch.isfinite(t).all() for t in load_file(str(checkpoint / "model.safetensors")).values()
               if t.is_floating_point())


@pytest.mark.parametrize(("grad_clip", "value", "norm"), [(1.0, "nan", "nan"), (0.0, "nan", "nan"),
                                                         (1.0, "inf", "inf"), (0.0, "inf", "inf")])
def test_a_non_finite_gradient_stops_before_the_step_and_names_a_finite_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, grad_clip: float, value: str, norm: str) -> None:
    """Step 5 of 6 (epoch 2): the epoch-1 checkpoint is the last good one, and it is finite; nothing later
    is written. Before, AdamW stepped on the NaN, and the NaN model was validated and checkpointed."""
    _poison_gradient_at(monkeypatch, 5, float(value))
    result = CliRunner().invoke(app, ["finetune", RECIPE, *tiny(tmp_path, **{"optim.grad_clip": grad_clip}),
                                      "--quiet", "--device", "cpu"])
    run = tmp_path / "run"
    said = " ".join(result.output.split())
    assert result.exit_code == 1, result.output
    assert (f"the gradient norm became {norm} at step 5 (epoch 2); "
            f"stopped, the last good checkpoint is {run / 'checkpoints' / 'step-0000003'}") in said
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000003"]
    assert _all_finite(run / "checkpoints" / "step-0000003") and _all_finite(run / "best")
    assert len(_losses(run)) == 4  # steps 1-4 logged, step 5 not taken


def _make_weights_nan(checkpoint: Path) -> None:
    """What a checkpoint of a model that had already diverged holds (written by builds before the check)."""
    file = checkpoint / "model.safetensors"
    with safe_open(str(file), framework="pt") as handle:
        meta = handle.metadata()
    weights = load_file(str(file))
    weights = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in weights.items()}
    save_file(weights, str(file), metadata=meta)


def test_resume_falls_back_past_a_checkpoint_with_non_finite_weights(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before, the NaN checkpoint was picked as the newest readable one and then refused by `load_into`,
    with no fallback: the run could not be resumed at all."""
    from s5cli.train.resume_point import find_resume_point

    runner = CliRunner()
    result = runner.invoke(app, ["finetune", RECIPE, *tiny(tmp_path), "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    losses = _losses(run)
    latest = run / (run / "latest").read_text().strip()
    _make_weights_nan(latest)
    capsys.readouterr()
    point = find_resume_point(run)
    assert point is not None and point.directory == run / "checkpoints" / "step-0000003"
    said = " ".join(capsys.readouterr().err.split())
    assert "holds non-finite (NaN/inf) weights" in said and "trying an older checkpoint" in said
    result = runner.invoke(app, ["finetune", RECIPE, *tiny(tmp_path), "--quiet", "--device", "cpu", "--resume"])
    assert result.exit_code == 0, result.output
    assert _losses(run) == losses  # epoch 2 redone from the epoch-1 checkpoint, exactly
    assert _all_finite(run / (run / "latest").read_text().strip())
