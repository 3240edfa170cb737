"""`train.init` from a run that has training left (interrupted, or still running) says so: its weights are
not the run's final ones. Finished runs, early-stopped ones and an earlier step named on purpose say nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from s5cli.cli.app import app
from s5cli.train import checkpoint as ckpt
from s5cli.train.checkpoint_paths import set_latest
from s5cli.train.init_weights import _check_init_finished, resolve_init
from tests.train.test_finetune_e2e import RECIPE, _env, _losses_if_any, tiny


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def _save_step(run: Path, objective: str = "lsmcl", epochs: int = 6, patience: int | None = None,
               **trainer: int) -> Path:
    """A step checkpoint of `run` as the trainer writes it (weights, metadata, trainer state), made `latest`."""
    state = ckpt.TrainerState(**trainer)
    module = nn.Linear(2, 2)
    recipe = {"train": {"objective": objective, "epochs": epochs, "early_stop_patience": patience}}
    path = ckpt.save_checkpoint(
        run / "checkpoints" / f"step-{state.step:07d}", module,
        {"model_name": "s5", "num_outputs": "2", "objective": objective, "recipe": json.dumps(recipe),
         "step": str(state.step)},
        torch.optim.SGD(module.parameters(), lr=0.1), {}, state)
    set_latest(run, path)
    (run / "recipe.yaml").write_text("train: {}\n")
    return path


def _warning(capsys: pytest.CaptureFixture[str], run: Path) -> str:
    directory = resolve_init(str(run))
    _check_init_finished(directory, str(run))
    return " ".join(capsys.readouterr().err.split())


def test_an_interrupted_pretraining_run_is_named_with_its_step_and_how_to_finish_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "U"
    _save_step(run, step=5, epoch=1, batch_in_epoch=2, planned_steps=18)
    assert _warning(capsys, run) == (
        f"warning: train.init={run} stopped at step 5 of 18 (interrupted, or still running?): these are not its "
        f"final weights; finish it first with `s5 pretrain {run / 'recipe.yaml'} --resume`")


def test_a_run_stopped_between_epochs_of_an_older_version_counts_its_epochs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "old"
    _save_step(run, step=6, epoch=2, batch_in_epoch=0)  # planned_steps 0: a checkpoint from before it was kept
    assert f"train.init={run} stopped at step 6, with 2 of its 6 epochs done" in _warning(capsys, run)


def test_finished_and_early_stopped_runs_and_earlier_steps_say_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _save_step(tmp_path / "done", step=18, epoch=6, planned_steps=18)
    _save_step(tmp_path / "patience", objective="supervised", patience=2, step=9, epoch=3, evals_since_best=2,
               planned_steps=18)
    for run in ("done", "patience"):
        assert _warning(capsys, tmp_path / run) == "", run
    # An earlier step of an unfinished run, named on purpose, and a checkpoint outside any run.
    early = _save_step(tmp_path / "U", step=3, epoch=1, planned_steps=18)
    _save_step(tmp_path / "U", step=5, epoch=1, batch_in_epoch=2, planned_steps=18)
    assert _warning(capsys, early) == ""
    loose = tmp_path / "loose"
    early.rename(loose)
    assert _warning(capsys, loose) == ""


def test_the_best_checkpoint_of_an_interrupted_finetuning_run_is_said_to_be_of_part_of_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """best/ is what a finetuning run validated best so far: a sound choice, but of only part of the run."""
    run = tmp_path / "F"
    _save_step(run, objective="supervised", step=9, epoch=3, planned_steps=30, best_step=6)
    ckpt.save_checkpoint(run / "best", nn.Linear(2, 2), {"objective": "supervised", "step": "6"})
    assert resolve_init(str(run)) == run / "best"
    assert _warning(capsys, run) == (
        f"warning: train.init={run} stopped at step 9 of 30 (interrupted, or still running?): its best/ (step 6) "
        "is the best of the epochs validated so far, not of the whole run; finish it first with "
        f"`s5 finetune {run / 'recipe.yaml'} --resume`")


def test_finetuning_from_a_ctrl_c_pretraining_run_warns_until_it_is_finished(tmp_path: Path) -> None:
    """The reported case end to end: `s5 pretrain` stopped by Ctrl-C, then `s5 finetune train.init=RUN`."""
    shared = tmp_path / "shared"
    clips = {"train.lsmcl.long_frames": 8, "train.lsmcl.short_frames": 4, "train.epochs": 6}
    pre = tiny(shared, **clips, **{"train.out_dir": tmp_path / "U"})
    args = [sys.executable, "-m", "s5cli", "pretrain", RECIPE, *pre, "--quiet"]
    proc = subprocess.Popen(args, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and len(_losses_if_any(tmp_path / "U" / "metrics.jsonl")) < 4:
        time.sleep(0.02)
    assert proc.poll() is None, "run finished before it could be interrupted; make it longer"
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err

    def finetune(out: str) -> str:
        result = CliRunner().invoke(app, ["finetune", RECIPE, *tiny(shared, **{"train.epochs": 1,
                                                                              "train.out_dir": tmp_path / out,
                                                                              "train.init": tmp_path / "U"})])
        assert result.exit_code == 0, result.output
        return " ".join(result.output.split())

    output = finetune("ft1")
    assert f"warning: train.init={tmp_path / 'U'} stopped at step " in output and " of 18 " in output
    assert f"`s5 pretrain {tmp_path / 'U' / 'recipe.yaml'} --resume`" in output
    # The command the warning names finishes it.
    finished = subprocess.run([sys.executable, "-m", "s5cli", "pretrain", str(tmp_path / "U" / "recipe.yaml"),
                               "--resume", "--quiet"], env=_env(), capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    assert json.loads((tmp_path / "U" / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 18
    assert "stopped at step" not in finetune("ft2")


def test_a_trainer_state_without_its_step_is_not_a_crash(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A hand-edited (or odd) trainer state that still reads as unfinished but lacks `step`: the message that
    names the step was built outside the guarded reading and raised KeyError in finetune."""
    run = tmp_path / "U"
    path = _save_step(run, step=5, epoch=1, batch_in_epoch=2, planned_steps=18)
    state_file = path / ckpt.STATE_JSON
    state = json.loads(state_file.read_text(encoding="utf-8"))
    del state["trainer"]["step"]
    state_file.write_text(json.dumps(state), encoding="utf-8")
    assert _warning(capsys, run) == ""
