"""A run folder's own checkpoints are the only ones it touches: stray folders beside them, runs inside another
run's checkpoints, and optimiser moments of the wrong shape each end in a warning or one line, not data loss
or a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from s5cli.errors import UserError
from s5cli.train import checkpoint as ckpt
from s5cli.train.checkpoint_paths import step_checkpoints
from s5cli.train.checkpoint_pruning import prune_checkpoints
from s5cli.train.resume_point import apply_resume_point, read_resume_point
from s5cli.train.run_folder import refuse_folder_of_another_run
from tests.train.test_checkpoint import SMALL, _trained_pair
from tests.train.test_finetune_e2e import RECIPE, tiny
from tests.train.test_resume_safety import _no_out_dir, finetune


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def finished_run(tmp_path: Path) -> Path:
    code, output = finetune(RECIPE, *tiny(tmp_path))
    assert code == 0, output
    return tmp_path / "run"


def _fake_run(run: Path, steps: list[str]) -> Path:
    """A run folder with weight files under checkpoints/ (names as given) and `latest`."""
    for name in steps:
        (run / "checkpoints" / name).mkdir(parents=True)
        (run / "checkpoints" / name / ckpt.MODEL_FILE).write_bytes(b"x")
    (run / "latest").write_text(f"checkpoints/{steps[0]}\n")
    return run


# 1. Folders named like a checkpoint that are not one ------------------------------------------------------------

STRAYS = ["step-0000002 copy", "step-foo", "step-"]


def test_pruning_leaves_stray_folders_alone_and_names_them_once(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    run = _fake_run(tmp_path / "r", ["step-0000001", "step-0000002", "step-0000003", *STRAYS])
    capsys.readouterr()
    prune_checkpoints(run, 1, just_saved=run / "checkpoints" / "step-0000003")
    left = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert left == sorted(["step-0000003", *STRAYS])
    warning = " ".join(capsys.readouterr().err.split())
    assert all(repr(name) in warning for name in STRAYS) and "not named step-NUMBER" in warning
    prune_checkpoints(run, 1, just_saved=run / "checkpoints" / "step-0000003")
    assert capsys.readouterr().err == ""  # said once, not at every save


def test_step_checkpoints_are_the_step_number_folders_newest_first(tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "r", ["step-9999999", "step-10000000", "step-9999999 copy", "step-x"])
    assert [p.name for p in step_checkpoints(run)] == ["step-10000000", "step-9999999"]


def test_a_backup_copy_of_a_checkpoint_does_not_stop_a_resumed_run(tmp_path: Path, finished_run: Path) -> None:
    latest = finished_run / (finished_run / "latest").read_text().strip()
    shutil.copytree(latest, latest.with_name(f"{latest.name} copy"))
    code, output = finetune(RECIPE, *tiny(tmp_path, **{"train.epochs": 3}), "--resume")
    assert code == 0, output
    assert "not named step-NUMBER" in " ".join(output.split())
    assert latest.with_name(f"{latest.name} copy").is_dir()


# 2. A run inside another run's checkpoints ----------------------------------------------------------------------

@pytest.mark.parametrize("inside", ["best", "checkpoints/step-0000003", "checkpoints/step-0000003/sub",
                                    "checkpoints"])
def test_a_run_inside_another_runs_checkpoints_is_refused(tmp_path: Path, finished_run: Path, inside: str) -> None:
    target = finished_run / inside
    before = sorted(p.relative_to(finished_run) for p in finished_run.rglob("*"))
    code, output = finetune(RECIPE, *_no_out_dir(tiny(tmp_path)), "--out", str(target))
    assert code == 2, output
    assert " ".join(output.split()) == (f"error: train.out_dir={target} is inside run {finished_run.resolve()} (its "
                                        "best/ or checkpoints/ are replaced as it trains): pick another --out")
    assert sorted(p.relative_to(finished_run) for p in finished_run.rglob("*")) == before


def test_a_checkpoint_folder_is_not_a_run_folder(tmp_path: Path, finished_run: Path) -> None:
    copy = shutil.copytree(finished_run / "best", tmp_path / "mine")
    code, output = finetune(RECIPE, *_no_out_dir(tiny(tmp_path)), "--out", str(copy))
    assert code == 2
    assert "is a checkpoint folder (it holds model.safetensors), not a run folder: pick another --out" in (
        " ".join(output.split()))


def test_own_fresh_and_sibling_run_folders_are_accepted(tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "runs" / "a", ["step-0000001"])
    (run / "best").mkdir()
    (run / "best" / ckpt.MODEL_FILE).write_bytes(b"x")
    for folder in (run, tmp_path / "runs" / "b", tmp_path / "fresh" / "x", Path("runs/a")):
        refuse_folder_of_another_run(folder)
    # A folder named best/ under a plain folder (no run) is just a name.
    refuse_folder_of_another_run(tmp_path / "runs" / "best" / "x")
    with pytest.raises(UserError, match="is inside run"):
        refuse_folder_of_another_run(Path("runs/a/best/../best"))



def test_a_working_folder_under_a_folder_named_checkpoints_is_not_taken_for_a_run(tmp_path: Path) -> None:
    """`checkpoints/` alone made its parent "a run": the path checked passes through it, so every run under
    /scratch/u/checkpoints/... (or runs/ linked there) was refused."""
    (tmp_path / "proj" / "checkpoints").mkdir(parents=True)
    refuse_folder_of_another_run(tmp_path / "proj" / "checkpoints" / "lvu-genre")
    (tmp_path / "proj" / "best").mkdir()
    refuse_folder_of_another_run(tmp_path / "proj" / "best" / "x")


# 3. Optimiser moments of another shape --------------------------------------------------------------------------

def _saved_pair(tmp_path: Path, name: str = "c") -> Path:
    model, opt = _trained_pair()
    return ckpt.save_checkpoint(tmp_path / name, model, {"model_name": "s5", "num_outputs": "3"}, opt,
                                {"kind": "constant", "state": {}}, ckpt.TrainerState(step=1))


def _replace_tensor(directory: Path, key: str, value: torch.Tensor) -> None:
    file = directory / ckpt.STATE_TENSORS
    tensors = load_file(str(file))
    tensors[key] = value
    save_file(tensors, str(file))


@pytest.mark.parametrize(("key", "value", "says"), [
    ("optim.0.exp_avg", torch.zeros(3), "optim.0.exp_avg is float (3,)"),
    ("optim.0.exp_avg_sq", torch.zeros(3, dtype=torch.int64), "optim.0.exp_avg_sq is integer (3,)"),
    ("optim.0.step", torch.zeros(3), "optim.0.step holds 3 values"),
])
def test_a_moment_of_another_shape_is_a_damaged_checkpoint(tmp_path: Path, key: str, value: torch.Tensor,
                                                          says: str) -> None:
    path = _saved_pair(tmp_path)
    _replace_tensor(path, key, value)
    with pytest.raises(UserError) as error:
        read_resume_point(path)
    assert f"{path / ckpt.STATE_TENSORS} does not fit the checkpoint's weights ({says}" in str(error.value)
    assert str(error.value).endswith("the checkpoint is damaged")


def test_checkpoints_without_parameter_names_are_checked_against_the_model(tmp_path: Path) -> None:
    """Checkpoints written before `param_names`: a lone bad moment shows against its partner while reading;
    both bad, it is found against the model's parameter when applied, in one line."""
    path = _saved_pair(tmp_path)
    state_json = path / ckpt.STATE_JSON
    payload = json.loads(state_json.read_text())
    del payload["optimizer"]["param_names"]
    state_json.write_text(json.dumps(payload))
    _replace_tensor(path, "optim.0.exp_avg", torch.zeros(3))
    with pytest.raises(UserError, match=r"optim.0.exp_avg_sq is float \(\d+.*\), optim.0.exp_avg float \(3,\)"):
        read_resume_point(path)
    _replace_tensor(path, "optim.0.exp_avg_sq", torch.zeros(3))
    point = read_resume_point(path)
    from s5cli.models.registry import build_model

    model = build_model("s5", SMALL, 3)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    with pytest.raises(UserError, match=r"its optimiser state does not fit this model \(optim\.0\.exp_avg is float"):
        apply_resume_point(point, optimizer)


def test_resume_falls_back_past_a_moment_of_another_shape(tmp_path: Path, finished_run: Path) -> None:
    latest = finished_run / (finished_run / "latest").read_text().strip()
    _replace_tensor(latest, "optim.0.exp_avg", torch.zeros(3))
    code, output = finetune(RECIPE, *tiny(tmp_path), "--resume")
    assert code == 0, output
    assert "does not fit the checkpoint's weights" in output and "trying an older checkpoint" in output
    # Every checkpoint so: one line, exit 2 (the error that a damaged model.safetensors gets).
    for step in finished_run.glob("checkpoints/step-*"):
        _replace_tensor(step, "optim.0.exp_avg", torch.zeros(3))
    code, output = finetune(RECIPE, *tiny(tmp_path), "--resume")
    assert code == 2 and "no readable checkpoint" in output


def test_a_finetuning_run_made_before_the_lsmcl_defaults_moved_still_resumes(tmp_path: Path) -> None:
    """Every run's recipe.yaml holds train.lsmcl; when its defaults moved to 0.25 / batch, `s5 finetune
    RECIPE --resume` of an older supervised run was refused over settings finetuning never reads. A
    pretraining run still refuses them."""
    from s5cli.recipe import dump_recipe, load_recipe
    from s5cli.train.resume_checks import check_resume_recipe

    repo = Path(__file__).resolve().parents[2]
    for objective, refused in (("supervised", False), ("lsmcl", True)):
        extra = [f"train.objective={objective}"] + (["optim.schedule=cosine"] if objective == "lsmcl" else [])
        recipe = load_recipe(str(repo / "recipes" / "lvu" / "genre.yaml"), extra)
        old = load_recipe(str(repo / "recipes" / "lvu" / "genre.yaml"),
                          [*extra, "train.lsmcl.mask_ratio=0.5", "train.lsmcl.projector_norm=none"])
        run = tmp_path / objective
        run.mkdir()
        (run / "recipe.yaml").write_text(dump_recipe(old))
        if refused:
            with pytest.raises(UserError, match=r"train.lsmcl.mask_ratio \(0.5 -> 0.25\)"):
                check_resume_recipe(run, recipe)
        else:
            check_resume_recipe(run, recipe)
