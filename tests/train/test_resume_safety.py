"""`--resume` continues the run its folder holds: no silent setting changes, damaged checkpoints skipped."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
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
    clips = {"train.lsmcl.long_frames": 8, "train.lsmcl.short_frames": 4}  # within the 8 cached frames
    result = CliRunner().invoke(app, ["pretrain", RECIPE, *tiny(tmp_path, **clips), "--resume", "--quiet"])
    assert result.exit_code == 2
    assert " ".join(result.output.split()).endswith(  # after the warning that pretrain trains lsmcl
        f"error: --resume: {finished_run} is a finetuning run: resume it with `s5 finetune "
        f"{finished_run / 'recipe.yaml'} --resume`")


@pytest.mark.parametrize("damage", ["unreadable", "deleted"])
def test_a_lost_run_recipe_is_replaced_by_the_checkpoints_on_resume(tmp_path: Path, finished_run: Path,
                                                                     damage: str) -> None:
    """The latest checkpoint stores the resolved recipe: without recipe.yaml, --resume changed the optimiser
    silently."""
    recipe = finished_run / "recipe.yaml"
    recipe.write_text("x: [\n") if damage == "unreadable" else recipe.unlink()
    code, output = finetune(RECIPE, *tiny(tmp_path, **{"train.epochs": 3, "optim.lr": 0.1}), "--resume")
    assert code == 2
    assert f"--resume: the recipe of {finished_run}'s latest checkpoint differs in optim.lr (0.001 -> 0.1)" in (
        " ".join(output.split()))
    code, output = finetune(RECIPE, *tiny(tmp_path, **{"train.epochs": 3}), "--resume")
    assert code == 0, output
    assert "warning" not in output
    assert yaml.safe_load(recipe.read_text())["train"]["epochs"] == 3  # written whole again


def test_an_unreadable_run_recipe_without_a_readable_checkpoint_is_warned_about(tmp_path: Path,
                                                                                finished_run: Path) -> None:
    from s5cli.train import job, resume_checks

    (finished_run / "recipe.yaml").write_text("x: [\n")
    for model in (finished_run / "checkpoints").glob("*/model.safetensors"):
        model.write_bytes(b"not safetensors")
    recipe = job.recipe_objects(RECIPE, tiny(tmp_path), None)
    from s5cli.cli.console import stderr

    with stderr.capture() as captured:
        resume_checks.check_resume_recipe(finished_run, recipe)
    assert "recipe.yaml is unreadable and no checkpoint holds the run's recipe" in " ".join(captured.get().split())


def test_the_saved_recipe_names_the_folder_given_with_out(tmp_path: Path) -> None:
    code, output = finetune(RECIPE, *_no_out_dir(tiny(tmp_path)), "--out", str(tmp_path / "elsewhere"))
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
    from s5cli.train.resume_point import find_resume_point

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
    from s5cli.train import step as train_step

    fractions: list[float] = []
    real = train_step.set_training_progress
    monkeypatch.setattr(train_step, "set_training_progress", lambda module, fraction: (fractions.append(fraction),
                                                                         real(module, fraction)))
    extra = {"optim.schedule": "cosine", "model.explore_temperature": 8.0}
    code, output = finetune(RECIPE, *tiny(tmp_path, **extra))
    assert code == 0, output
    first = len(fractions)
    code, output = finetune(RECIPE, *tiny(tmp_path, **extra, **{"train.epochs": 4}), "--resume")
    assert code == 0, output
    assert ("the cosine learning-rate schedule now ends at step 12, not 6 (train.epochs=4 x 3 steps an epoch); "
            "from step 6 the rate is") in " ".join(output.split())
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
    code, output = finetune(RECIPE, *_no_out_dir(tiny(tmp_path, **{"train.epochs": 1})), "--out", str(tmp_path / "other"))
    assert code == 0, output  # the kernel released the killed run's lock; other folders were never locked
    code, output = finetune(RECIPE, *_no_out_dir(tiny(tmp_path, **{"train.epochs": 1})), "--out",
                            str(tmp_path / "other"), "--resume")
    assert code == 0, output  # and an in-process run gives its lock back when it ends


def test_a_fresh_start_is_refused_in_a_folder_with_step_checkpoints_but_no_latest(
        tmp_path: Path, finished_run: Path) -> None:
    (finished_run / "latest").unlink()
    before = (finished_run / "metrics.jsonl").read_text()
    code, output = finetune(RECIPE, *tiny(tmp_path))
    assert code == 2 and "already holds a run: pass --resume" in " ".join(output.split())
    assert (finished_run / "metrics.jsonl").read_text() == before


def test_a_run_recipe_resumes_its_own_folder_from_anywhere_and_a_copy_resumes_the_copy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """RUN/recipe.yaml holds train.out_dir as typed (relative here): resumed from another working folder
    it started a new run there, and a copied run folder resumed the original."""
    import shutil

    code, output = finetune(RECIPE, *tiny(tmp_path, **{"train.out_dir": "runs/a"}))
    assert code == 0, output
    original = (tmp_path / "runs" / "a" / "metrics.jsonl").read_text()
    shutil.copytree(tmp_path / "runs" / "a", tmp_path / "runs" / "b")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, output = finetune(str(tmp_path / "runs" / "b" / "recipe.yaml"), "train.epochs=3", "--resume")
    assert code == 0, output
    assert len(_losses(tmp_path / "runs" / "b")) == 3 * 3
    assert (tmp_path / "runs" / "a" / "metrics.jsonl").read_text() == original
    assert not (elsewhere / "runs").exists()


def _records_without_speed(run: Path) -> list[dict]:
    import json

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [{k: v for k, v in r.items() if k != "samples_per_s"} for r in records]


@pytest.mark.parametrize("stopped_validation", [1, 2])
def test_a_stop_during_validation_abandons_it_and_resume_runs_it_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stopped_validation: int) -> None:
    """SIGTERM during validation used to wait for the whole split (minutes on LVU), then train one more
    step; in the last epoch it was dropped and the run exited 0. It now stops after the batch in hand."""
    import signal

    from safetensors.torch import load_file

    from s5cli.train import loop

    shared = tmp_path / "shared"
    extra = {"eval.batch_size": 2, "model.dropout": 0.1}
    code, output = finetune(RECIPE, *tiny(shared, **extra, **{"train.out_dir": tmp_path / "full"}))
    assert code == 0, output
    real_evaluate, seen = loop.evaluate, {"validations": 0, "batches": 0}

    def evaluate_then_stop(*args, stop_requested, **kwargs):
        seen["validations"] += 1
        if seen["validations"] == stopped_validation:
            os.kill(os.getpid(), signal.SIGTERM)  # the trainer's handler takes it: a flag, nothing raised

        def counted() -> bool:
            seen["batches"] += 1
            return stop_requested()

        return real_evaluate(*args, stop_requested=counted, **kwargs)

    monkeypatch.setattr(loop, "evaluate", evaluate_then_stop)
    cut = tiny(shared, **extra, **{"train.out_dir": tmp_path / "cut"})
    code, output = finetune(RECIPE, *cut)
    assert code == 143, output
    steps = 3 * stopped_validation
    assert f"terminated at step {steps}; checkpoint saved to" in " ".join(output.split())
    assert seen["batches"] == 1 + 4 * (stopped_validation - 1)  # 4 batches of 2 windows; stopped after one
    monkeypatch.setattr(loop, "evaluate", real_evaluate)
    code, output = finetune(RECIPE, *cut, "--resume")
    assert code == 0, output
    assert _records_without_speed(tmp_path / "cut") == _records_without_speed(tmp_path / "full")
    for pick in (lambda run: run / "best", lambda run: run / (run / "latest").read_text().strip()):
        full_dir, cut_dir = pick(tmp_path / "full"), pick(tmp_path / "cut")
        full_w, cut_w = load_file(full_dir / "model.safetensors"), load_file(cut_dir / "model.safetensors")
        assert full_w.keys() == cut_w.keys() and all(torch.equal(full_w[k], cut_w[k]) for k in full_w)


@pytest.mark.parametrize("damage", ["param_groups", "rng_tensor", "python_rng"])
def test_a_trainer_state_that_cannot_be_applied_is_a_damaged_checkpoint(finished_run: Path, damage: str) -> None:
    """Found while reading, so --resume falls back to the older checkpoint instead of failing half-way."""
    import json

    from safetensors.torch import load_file, save_file

    from s5cli.train.resume_point import find_resume_point

    latest = finished_run / (finished_run / "latest").read_text().strip()
    state_json = latest / "trainer_state.json"
    payload = json.loads(state_json.read_text())
    if damage == "param_groups":
        payload["optimizer"]["param_groups"] = []
    elif damage == "python_rng":
        payload["rng"]["python"] = "garbage"
    else:
        tensors = load_file(str(latest / "trainer_state.safetensors"))
        tensors["rng.torch"] = torch.zeros(7, dtype=torch.float32)
        save_file(tensors, str(latest / "trainer_state.safetensors"))
    state_json.write_text(json.dumps(payload))
    point = find_resume_point(finished_run, report=False)
    assert point is not None and point.directory != latest


def test_a_run_saved_before_resize_existed_cannot_resume_squashed(tmp_path: Path, finished_run: Path) -> None:
    """Its frames were cropped: resuming with a recipe that squashes would switch token caches mid-run."""
    recipe = finished_run / "recipe.yaml"
    saved = yaml.safe_load(recipe.read_text())
    del saved["data"]["resize"]  # as every recipe.yaml before the key existed
    recipe.write_text(yaml.safe_dump(saved))
    code, output = finetune(RECIPE, *tiny(tmp_path, **{"train.epochs": 3, "data.resize": "squash"}), "--resume")
    assert code == 2
    assert "data.resize ('crop' -> 'squash')" in " ".join(output.split())
    code, output = finetune(RECIPE, *tiny(tmp_path, **{"train.epochs": 3}), "--resume")  # crop, as it was
    assert code == 0, output


def test_a_step_checkpoint_a_kill_set_aside_mid_replace_is_put_back_and_resumed(tmp_path: Path,
                                                                                  finished_run: Path) -> None:
    """A resume that saves a step again (after a stop during validation) replaces that checkpoint with two
    renames; a kill between them leaves `.step-N.old` while `latest` names step-N. With no older checkpoint
    (train.keep_last: 1) the resume started the run over."""
    import shutil

    losses = _losses(finished_run)
    latest = finished_run / (finished_run / "latest").read_text().strip()
    for older in (finished_run / "checkpoints").glob("step-*"):
        if older != latest:
            shutil.rmtree(older)
    aside = latest.with_name(f".{latest.name}.old")
    latest.rename(aside)
    code, output = finetune(RECIPE, *tiny(tmp_path, **{"train.epochs": 3}), "--resume")
    assert code == 0, output
    assert "warning" not in output and not aside.exists()
    assert _losses(finished_run)[: len(losses)] == losses and len(_losses(finished_run)) == 3 * 3


def test_a_resume_whose_checkpoints_were_deleted_starts_from_train_init(tmp_path: Path, finished_run: Path) -> None:
    """Only `latest` left (checkpoints deleted to free disk): the resume starts a new run, and that new run
    loads train.init as a first start does (it said "from train.init" but trained from random weights)."""
    run = tmp_path / "again"
    run.mkdir()
    (run / "latest").write_text("checkpoints/step-0000006\n")
    overrides = tiny(tmp_path, **{"train.out_dir": run, "train.init": finished_run, "train.epochs": 1})
    result = CliRunner().invoke(app, ["finetune", RECIPE, *overrides, "--resume"])
    output = " ".join(result.output.split())
    assert result.exit_code == 0, output
    assert f"starting a new run from train.init={finished_run}" in output
    assert f"weights from train.init={finished_run}" in output


def test_a_damaged_best_metrics_file_costs_the_summary_a_column_not_the_exit_code(tmp_path: Path,
                                                                                   finished_run: Path) -> None:
    (finished_run / "best" / "metrics.json").write_text("{trunc")
    code, output = finetune(RECIPE, *tiny(tmp_path), "--resume")
    assert code == 0, output
    assert "metrics.json is not a JSON object of metrics (damaged?)" in " ".join(output.split())
    assert "Traceback" not in output


@pytest.mark.parametrize("damage", ["python generator", "numpy generator", "schedule", "learning rate"])
def test_a_trainer_state_that_could_not_be_applied_is_skipped_while_reading(finished_run: Path, damage: str) -> None:
    """Found before the weights are loaded, so the resume falls back to the previous checkpoint: applied, each
    of these raised half-way (or, a learning rate of "x", in the first optimiser step)."""
    import json

    from s5cli.train.resume_point import find_resume_point

    latest = finished_run / (finished_run / "latest").read_text().strip()
    state_file = latest / "trainer_state.json"
    payload = json.loads(state_file.read_text())
    if damage == "python generator":
        payload["rng"]["python"][1] = [1, 2]
    elif damage == "numpy generator":
        payload["rng"]["numpy"][1] = [1, 2]
    elif damage == "schedule":
        payload["schedule"] = [1]
    else:
        payload["optimizer"]["param_groups"][0]["lr"] = "x"
    state_file.write_text(json.dumps(payload))
    point = find_resume_point(finished_run, report=False)
    assert point is not None and point.directory != latest


def test_an_optimiser_state_for_other_parameter_groups_is_one_line(finished_run: Path) -> None:
    from s5cli.errors import UserError
    from s5cli.train.resume_point import apply_resume_point, read_resume_point

    point = read_resume_point(finished_run)
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])
    with pytest.raises(UserError, match="its optimiser state does not fit this model"):
        apply_resume_point(point, optimizer)


def test_a_resume_over_a_changed_train_split_says_so(tmp_path: Path, finished_run: Path) -> None:
    """Videos added or removed under data.root between runs change the epochs a resume trains on; with fewer
    batches than the saved position the rest of that epoch was skipped without a word."""
    import json

    latest = finished_run / (finished_run / "latest").read_text().strip()
    state_file = latest / "trainer_state.json"
    payload = json.loads(state_file.read_text())
    assert payload["trainer"]["train_clips"] == 24
    payload["trainer"]["train_clips"] = 40  # as if 16 of the run's videos had gone since
    state_file.write_text(json.dumps(payload))
    code, output = finetune(RECIPE, *tiny(tmp_path, **{"train.epochs": 3}), "--resume")
    assert code == 0, output
    assert ("warning: --resume: the train split has 24 clips, the interrupted run had 40 (videos added or removed "
            "under data.root?): training goes on over the 24, from epoch 3, and no longer repeats an uninterrupted "
            "run") in " ".join(output.split())
    latest = finished_run / (finished_run / "latest").read_text().strip()
    assert json.loads((latest / "trainer_state.json").read_text())["trainer"]["train_clips"] == 24
    code, output = finetune(RECIPE, *tiny(tmp_path, **{"train.epochs": 4}), "--resume")
    assert code == 0 and "the train split has" not in output  # the same split: nothing to say


def _no_out_dir(overrides: list[str]) -> list[str]:
    """`overrides` without train.out_dir: beside `--out` another value is refused (as `--seed` beside train.seed=)."""
    return [item for item in overrides if not item.startswith("train.out_dir=")]
