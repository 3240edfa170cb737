"""`--resume` continues the run its folder holds: no silent setting changes, damaged checkpoints skipped."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from s5cli.cli.app import app
from s5cli.io import default_file_mode
from tests.train.test_finetune_e2e import RECIPE, _losses, tiny


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def finetune(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["finetune", *args, "--quiet"])
    return result.exit_code, result.output


@pytest.fixture
def finished_run(tmp_path: Path) -> Path:
    code, output = finetune(RECIPE, *tiny(tmp_path))
    assert code == 0, output
    return tmp_path / "run"


def test_settings_the_checkpoints_hold_cannot_change_on_resume(tmp_path: Path, finished_run: Path) -> None:
    saved = (finished_run / "recipe.yaml").read_text()
    code, output = finetune(RECIPE, *tiny(tmp_path, **{"optim.lr": 1e-5, "model.d_model": 64}), "--resume")
    assert code == 2
    assert "optim.lr (0.001 -> 1e-05)" in output and "model.d_model (32 -> 64)" in output
    assert "cannot change mid-run" in output
    assert (finished_run / "recipe.yaml").read_text() == saved  # nothing rewritten by a refused resume
    # Training longer is what resuming is for; the saved recipe then says so.
    code, output = finetune(RECIPE, *tiny(tmp_path, **{"train.epochs": 3}), "--resume")
    assert code == 0, output
    assert yaml.safe_load((finished_run / "recipe.yaml").read_text())["train"]["epochs"] == 3
    assert len(_losses(finished_run)) == 3 * 3


def test_resuming_with_the_other_command_names_the_right_one(tmp_path: Path, finished_run: Path) -> None:
    result = CliRunner().invoke(app, ["pretrain", RECIPE, *tiny(tmp_path), "--resume", "--quiet"])
    assert result.exit_code == 2
    assert " ".join(result.output.split()).endswith(  # after the warning that pretrain trains lsmcl
        f"error: --resume: {finished_run} is a supervised run: resume it with `s5 finetune "
        f"{finished_run / 'recipe.yaml'} --resume`")


def test_an_unreadable_run_recipe_is_warned_about_on_resume(tmp_path: Path, finished_run: Path) -> None:
    (finished_run / "recipe.yaml").write_text("x: [\n")
    code, output = finetune(RECIPE, *tiny(tmp_path, **{"train.epochs": 3}), "--resume")
    assert code == 0, output
    assert "recipe.yaml is unreadable, so changed optimiser, batch or seed settings cannot be caught" in (
        " ".join(output.split()))
    assert yaml.safe_load((finished_run / "recipe.yaml").read_text())["train"]["epochs"] == 3  # rewritten whole


def test_the_saved_recipe_names_the_folder_given_with_out(tmp_path: Path) -> None:
    code, output = finetune(RECIPE, *tiny(tmp_path), "--out", str(tmp_path / "elsewhere"))
    assert code == 0, output
    recipe = tmp_path / "elsewhere" / "recipe.yaml"
    assert yaml.safe_load(recipe.read_text())["train"]["out_dir"] == str(tmp_path / "elsewhere")
    # So the run's own recipe resumes the run itself (here: one more epoch), not the recipe's old folder.
    code, output = finetune(str(recipe), "train.epochs=3", "--resume")
    assert code == 0, output
    assert len(_losses(tmp_path / "elsewhere")) == 3 * 3
    assert not (tmp_path / "run").exists()


def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(
    tmp_path: Path, finished_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    losses = _losses(finished_run)
    latest = finished_run / (finished_run / "latest").read_text().strip()
    weights = latest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # what a power loss before the data reached disk leaves
    code, output = finetune(RECIPE, *tiny(tmp_path), "--resume")
    assert code == 0, output
    assert "model.safetensors is unreadable" in output and "trying an older checkpoint" in output
    assert _losses(finished_run) == losses  # epoch 2 redone from the epoch-1 checkpoint, exactly
    # Under DDP only the main process reports it (report=False elsewhere); every process still skips it.
    from s5cli.train.checkpoint import find_resume_point

    damaged = finished_run / (finished_run / "latest").read_text().strip()
    (damaged / "model.safetensors").write_bytes(b"\0" * 10)
    capsys.readouterr()
    point = find_resume_point(finished_run, report=False)
    assert point is not None and point.directory != damaged and capsys.readouterr().err == ""
    find_resume_point(finished_run)
    assert "trying an older checkpoint" in capsys.readouterr().err
    # With every checkpoint damaged the run cannot continue: one line, exit 2, nothing started.
    for state in finished_run.glob("checkpoints/step-*/trainer_state.json"):
        state.write_text("{")
    code, output = finetune(RECIPE, *tiny(tmp_path), "--resume")
    assert code == 2 and "no readable checkpoint" in output


def test_checkpoint_files_get_the_usual_permissions(finished_run: Path, tmp_path: Path) -> None:
    """What a plain open() gives under this umask (safetensors' writer alone gives 0600)."""
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    expected = stat.S_IMODE(os.stat(plain).st_mode)
    assert expected == default_file_mode()
    files = list(finished_run.rglob("*.safetensors"))
    assert len(files) >= 5  # best/, two step checkpoints: weights and trainer state
    for path in files:
        assert stat.S_IMODE(os.stat(path).st_mode) == expected, path


def test_same_recipe_and_seed_in_two_folders_write_identical_checkpoints(tmp_path: Path) -> None:
    """The README's `sha256sum` promise: only recipe.yaml says where a run lives, not its checkpoints."""
    import hashlib

    args = tiny(tmp_path, **{"train.epochs": 1})
    args = [a for a in args if not a.startswith("train.out_dir=")]
    for name in ("a", "b"):
        code, output = finetune(RECIPE, *args, "--out", str(tmp_path / name))
        assert code == 0, output

    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    for relative in ("best/model.safetensors", "checkpoints/step-0000003/trainer_state.safetensors"):
        assert digest(tmp_path / "a" / relative) == digest(tmp_path / "b" / relative), relative
    assert yaml.safe_load((tmp_path / "b" / "recipe.yaml").read_text())["train"]["out_dir"] == str(tmp_path / "b")


def test_resume_may_change_how_a_run_is_evaluated_and_kept(tmp_path: Path, finished_run: Path) -> None:
    """Keys outside the checkpoints' state change on resume and are recorded (RESUMABLE_KEYS)."""
    extra = {"train.epochs": 3, "train.keep_last": 1, "eval.batch_size": 4, "train.log_every": 2}
    code, output = finetune(RECIPE, *tiny(tmp_path, **extra), "--resume")
    assert code == 0, output
    saved = yaml.safe_load((finished_run / "recipe.yaml").read_text())
    assert (saved["train"]["keep_last"], saved["eval"]["batch_size"]) == (1, 4)
    assert [p.name for p in (finished_run / "checkpoints").iterdir()] == ["step-0000009"]


def test_seed_flag_sets_train_seed_and_changes_the_run(tmp_path: Path) -> None:
    """`--seed` overrides train.seed: recorded in the run, and another seed trains differently."""
    for seed in (0, 5):
        code, output = finetune(RECIPE, *tiny(tmp_path, **{"train.out_dir": tmp_path / f"seed{seed}"}),
                                "--seed", str(seed))
        assert code == 0, output
        assert yaml.safe_load((tmp_path / f"seed{seed}" / "recipe.yaml").read_text())["train"]["seed"] == seed
    assert _losses(tmp_path / "seed0") != _losses(tmp_path / "seed5")


def test_training_longer_keeps_s5s_exploration_done_and_says_what_the_lr_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A finished cosine run resumed with more epochs: the rate follows the longer curve (a warning says so),
    and S5's exploration, annealed over the first length, does not start again."""
    from s5cli.train import loop

    fractions: list[float] = []
    real = loop._set_progress
    monkeypatch.setattr(loop, "_set_progress", lambda module, fraction: (fractions.append(fraction),
                                                                         real(module, fraction)))
    extra = {"optim.schedule": "cosine", "model.explore_temperature": 8.0}
    code, output = finetune(RECIPE, *tiny(tmp_path, **extra))
    assert code == 0, output
    first = len(fractions)
    code, output = finetune(RECIPE, *tiny(tmp_path, **extra, **{"train.epochs": 4}), "--resume")
    assert code == 0, output
    assert "the cosine learning-rate schedule now ends at step 12, not 6; from step 6 the rate is" in " ".join(
        output.split())
    assert fractions[:first] == [step / 6 for step in range(6)]
    assert fractions[first:] == [step / 6 for step in range(6, 12)]  # >= 1: exploration stays done


def test_a_second_training_in_the_same_folder_stops_at_once(tmp_path: Path) -> None:
    """Two trainers in one run folder (a restarted preemptible job while the old one still runs) both ran to
    the end, writing each other's checkpoints and interleaving metrics.jsonl."""
    import signal
    import subprocess
    import sys
    import time

    from tests.train.test_finetune_e2e import _env

    args = [sys.executable, "-m", "s5cli", "finetune", RECIPE, "--quiet", *tiny(tmp_path, **{"train.epochs": 50})]
    first = subprocess.Popen(args, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lock = tmp_path / "run" / ".training.lock"
        deadline = time.time() + 120
        while time.time() < deadline and first.poll() is None and not (lock.exists() and lock.read_text()):
            time.sleep(0.05)
        assert first.poll() is None, "the first run ended before the second could start"
        code, output = finetune(RECIPE, *tiny(tmp_path, **{"train.epochs": 50}), "--resume")
        assert code == 2, output
        assert f"is in use by another training (pid {first.pid})" in " ".join(output.split())
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    code, output = finetune(RECIPE, *tiny(tmp_path, **{"train.epochs": 1}), "--out", str(tmp_path / "other"))
    assert code == 0, output  # the kernel released the killed run's lock; other folders were never locked
    code, output = finetune(RECIPE, *tiny(tmp_path, **{"train.epochs": 1}), "--out", str(tmp_path / "other"),
                            "--resume")
    assert code == 0, output  # and an in-process run gives its lock back when it ends
