"""train.early_stop_patience: training ends after that many validations without a better metric, resumably."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from s5cli.cli.app import app
from tests.train.test_finetune_e2e import RECIPE, tiny


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _validation_scores(monkeypatch, scores: list[float]) -> list[int]:
    """Validation returns these top-1 values in turn; returns the list of epochs it was asked at."""
    from s5cli.train import loop

    asked: list[int] = []

    def validate(setup, module, epoch, **_):
        asked.append(epoch + 1)
        value = scores[min(len(asked), len(scores)) - 1]
        return {"top1": value, "top5": 1.0, "count": 8, "windows": 8}

    monkeypatch.setattr(loop, "_validate", validate)
    return asked


def test_stops_after_patience_validations_without_improvement_and_resume_stays_stopped(tmp_path, monkeypatch):
    # Better at epochs 1 and 2, then flat: with patience 2 training ends after epoch 4 of 10.
    asked = _validation_scores(monkeypatch, [0.2, 0.5, 0.5, 0.4])
    args = tiny(tmp_path, **{"train.epochs": 10, "train.early_stop_patience": 2})
    result = CliRunner().invoke(app, ["finetune", RECIPE, *args, "--quiet"])
    assert result.exit_code == 0, result.output
    assert asked == [1, 2, 3, 4]
    # Said under --quiet too: it hides progress bars, not why a run ended.
    assert "early stop after epoch 4: val top1 not better than 0.5000 (step 6) for 2 validations" in " ".join(
        result.output.split())
    run = tmp_path / "run"
    stop = [r for r in _records(run) if r.get("early_stop")]
    assert len(stop) == 1 and stop[0]["epoch"] == 4 and stop[0]["best_step"] == 2 * 3  # 3 steps per epoch
    assert json.loads((run / "best" / "metrics.json").read_text())["top1"] == 0.5
    last_step = max(r["step"] for r in _records(run))
    # Resuming a run that stopped early trains nothing more, and finds so before any data work.
    import s5cli.train.data

    monkeypatch.setattr(s5cli.train.data, "prepare_splits", lambda *a, **k: pytest.fail("data work for nothing"))
    result = CliRunner().invoke(app, ["finetune", RECIPE, *args, "--resume", "--quiet"])
    assert result.exit_code == 0, result.output
    assert asked == [1, 2, 3, 4]
    assert max(r["step"] for r in _records(run)) == last_step
    assert f"nothing left to train: {run} stopped early after epoch 4" in " ".join(result.output.split())
    assert [r for r in _records(run) if r.get("early_stop")] == stop  # the resume kept the log's record
    # The summary shows the last validation (epoch 4's 0.4), beside the best checkpoint's 0.5.
    assert re.search(r"│ top1 +│ +0\.4000 │ +0\.5000 │", result.output), result.output


def test_without_patience_every_epoch_is_trained(tmp_path, monkeypatch):
    asked = _validation_scores(monkeypatch, [0.5])
    result = CliRunner().invoke(app, ["finetune", RECIPE, *tiny(tmp_path, **{"train.epochs": 4}), "--quiet"])
    assert result.exit_code == 0, result.output
    assert asked == [1, 2, 3, 4]
    result = CliRunner().invoke(app, ["finetune", RECIPE, *tiny(tmp_path, **{"train.epochs": 4}), "--quiet",
                                      "--resume"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "had finished its 4 epochs; raise train.epochs to go on" in said and "stopped early" not in said


def test_patience_needs_validation_metrics(tmp_path):
    from s5cli.errors import UserError
    from s5cli.recipe import load_recipe

    with pytest.raises(UserError, match=r"train\.early_stop_patience .* LSMCL"):  # a pretraining recipe
        load_recipe(RECIPE, ["train.objective=lsmcl", "train.early_stop_patience=3"])
    # A supervised run without a validation split says so instead of silently never stopping.
    args = tiny(tmp_path, **{"train.early_stop_patience": 3, "data.synthetic.num_val": 0, "train.epochs": 1})
    result = CliRunner().invoke(app, ["finetune", RECIPE, *args, "--quiet"])
    assert result.exit_code == 0, result.output
    assert "the val split has no clips: no best checkpoint is chosen, and no plateau or early stop acts" in (
        " ".join(result.output.split()))


def test_patience_used_up_on_the_last_epoch_is_named_when_more_epochs_are_asked(tmp_path, monkeypatch):
    """No early-stop record (the run ended on its last epoch anyway), yet with more epochs it trains
    nothing more: the message says patience stopped it, not "raise train.epochs" (just done)."""
    asked = _validation_scores(monkeypatch, [0.5, 0.4, 0.4])
    args = tiny(tmp_path, **{"train.epochs": 3, "train.early_stop_patience": 2})
    result = CliRunner().invoke(app, ["finetune", RECIPE, *args, "--quiet"])
    assert result.exit_code == 0, result.output
    assert not [r for r in _records(tmp_path / "run") if r.get("early_stop")]
    more = tiny(tmp_path, **{"train.epochs": 6, "train.early_stop_patience": 2})
    result = CliRunner().invoke(app, ["finetune", RECIPE, *more, "--quiet", "--resume"])
    assert result.exit_code == 0, result.output
    assert asked == [1, 2, 3]
    said = " ".join(result.output.split())
    assert f"nothing left to train: {tmp_path / 'run'} stopped early after epoch 3 (2 validations in a row" in said


def _stop_at_step(monkeypatch, n: int) -> None:
    """SIGTERM to the trainer as its `n`-th step starts: it finishes the step, saves and exits 143."""
    import os
    import signal

    from s5cli.train import step

    real, calls = step.backward_batch, {"n": 0}

    def backward_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            os.kill(os.getpid(), signal.SIGTERM)  # the trainer's handler takes it: a flag, nothing raised
        return real(*args, **kwargs)

    monkeypatch.setattr(step, "backward_batch", backward_batch)


def test_a_lowered_patience_on_a_mid_epoch_resume_finishes_the_epoch_then_stops(tmp_path, monkeypatch):
    """Patience acts at epoch boundaries only: a run resumed mid-epoch with a patience it had used up
    dropped the rest of the epoch and said it had "nothing left of its 6 epochs"."""
    asked = _validation_scores(monkeypatch, [0.5, 0.4, 0.4, 0.4])
    with monkeypatch.context() as patch:
        _stop_at_step(patch, 11)  # in epoch 4 (3 steps an epoch), 2 validations after the best one
        result = CliRunner().invoke(app, ["finetune", RECIPE, *tiny(tmp_path, **{"train.epochs": 6}), "--quiet"])
    assert result.exit_code == 143, result.output
    args = tiny(tmp_path, **{"train.epochs": 6, "train.early_stop_patience": 2})
    result = CliRunner().invoke(app, ["finetune", RECIPE, *args, "--resume", "--quiet"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert asked == [1, 2, 3, 4]
    assert "early stop after epoch 4: val top1 not better than 0.5000 (step 3) for 2 validations" in said
    assert "nothing left to train" not in said
    run = tmp_path / "run"
    assert max(r["step"] for r in _records(run)) == 12
    stop = [r for r in _records(run) if r.get("early_stop")]
    assert len(stop) == 1 and stop[0]["epoch"] == 4 and stop[0]["best_step"] == 3


def test_a_lowered_patience_resumed_into_an_epoch_that_does_not_validate_stops_after_it_with_its_record(
        tmp_path, monkeypatch):
    """With train.eval_every 2 the resumed epoch 5 validates nothing: the run stopped at the next epoch's
    start without a word or an early-stop record (a second --resume said why)."""
    asked = _validation_scores(monkeypatch, [0.5, 0.4])
    extra = {"train.epochs": 8, "train.eval_every": 2}
    with monkeypatch.context() as patch:
        _stop_at_step(patch, 14)  # in epoch 5 (3 steps an epoch), 1 validation after the best one
        result = CliRunner().invoke(app, ["finetune", RECIPE, *tiny(tmp_path, **extra), "--quiet"])
    assert result.exit_code == 143, result.output
    args = tiny(tmp_path, **extra, **{"train.early_stop_patience": 1})
    result = CliRunner().invoke(app, ["finetune", RECIPE, *args, "--resume", "--quiet"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert asked == [2, 4]
    assert "early stop after epoch 5: 1 validation without a better one (train.early_stop_patience=1; " \
           "best at step 6)" in said
    run = tmp_path / "run"
    assert max(r["step"] for r in _records(run)) == 15
    stop = [r for r in _records(run) if r.get("early_stop")]
    assert len(stop) == 1 and stop[0]["epoch"] == 5 and stop[0]["best_step"] == 6
    result = CliRunner().invoke(app, ["finetune", RECIPE, *args, "--resume", "--quiet"])  # stays stopped
    assert result.exit_code == 0 and len([r for r in _records(run) if r.get("early_stop")]) == 1


def test_a_resume_that_only_validates_again_says_only_why_it_stopped(tmp_path, monkeypatch):
    """Stopped while validating epoch 3; the resume runs that validation again, which uses up the patience:
    it said "early stop after epoch 3" and then "nothing left to train"."""
    import os
    import signal

    from s5cli.train import loop

    scores, asked = iter([0.5, 0.4, None, 0.4]), []

    def validate(setup, module, epoch, **_):
        asked.append(epoch + 1)
        value = next(scores)
        if value is None:  # SIGTERM while validating: abandoned, as `_validate` does
            os.kill(os.getpid(), signal.SIGTERM)
            return None
        return {"top1": value, "top5": 1.0, "count": 8, "windows": 8}

    monkeypatch.setattr(loop, "_validate", validate)
    args = tiny(tmp_path, **{"train.epochs": 6, "train.early_stop_patience": 2})
    result = CliRunner().invoke(app, ["finetune", RECIPE, *args, "--quiet"])
    assert result.exit_code == 143, result.output
    result = CliRunner().invoke(app, ["finetune", RECIPE, *args, "--resume", "--quiet"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert asked == [1, 2, 3, 3]
    assert "early stop after epoch 3" in said and "nothing left to train" not in said


def test_a_resume_stopped_by_patience_gives_that_reason_when_the_checkpoint_cannot(tmp_path, monkeypatch):
    """The trainer's own word when `run_end` cannot read how the run ended: patience, not "nothing left of
    its epochs"."""
    from s5cli.train import resume_checks

    _validation_scores(monkeypatch, [0.5, 0.4, 0.4])
    args = tiny(tmp_path, **{"train.epochs": 10, "train.early_stop_patience": 2})
    result = CliRunner().invoke(app, ["finetune", RECIPE, *args, "--quiet"])
    assert result.exit_code == 0, result.output
    monkeypatch.setattr(resume_checks, "run_end", lambda *_: None)
    result = CliRunner().invoke(app, ["finetune", RECIPE, *args, "--resume", "--quiet"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert f"nothing left to train: {tmp_path / 'run'} stopped early (train.early_stop_patience=2" in said
    assert "nothing left of its" not in said
