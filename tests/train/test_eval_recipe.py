"""`s5 eval RECIPE`: a run's own recipe.yaml means that run, a recipe without --checkpoint means its
train.out_dir, a recipe file whose model section differs from the checkpoint's says that eval runs the
checkpoint's model, and a checkpoint is scored only on the dataset and task it was trained for."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from s5cli.cli import evaluate as eval_cli
from s5cli.cli.app import app
from s5cli.errors import UserError
from s5cli.recipe import load_recipe
from tests.train.test_finetune_e2e import RECIPE, REPO, tiny


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with two tiny finetune runs, `first` and `newest`; ./.s5/last_run there names the newest
    (what a bare `s5 eval` takes). Shared by the tests here: training is their slow part."""
    home = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(home)
        for name in ("first", "newest"):
            overrides = tiny(home, **{"train.epochs": 1, "train.out_dir": home / name})
            result = CliRunner().invoke(app, ["finetune", RECIPE, *overrides, "--quiet", "--device", "cpu"])
            assert result.exit_code == 0, result.output
    return home


@pytest.fixture(autouse=True)
def _work_in_runs(runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(runs)


def _said(result) -> str:
    return " ".join(result.output.split())


def test_a_runs_recipe_means_that_run_and_another_model_section_is_named(runs: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    first = runs / "first"
    out = tmp_path / "first.json"
    result = runner.invoke(app, ["eval", str(first / "recipe.yaml"), "--json", str(out), "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert f"{first} on test" in _said(result)  # the run (its best/), not the newest
    assert "warning" not in result.output  # its own model section: nothing to say
    assert json.loads(out.read_text())["checkpoint"] == str(first / "best")  # the folder scored

    other = tmp_path / "quarter.yaml"
    other.write_text((first / "recipe.yaml").read_text().replace("keep_ratio: 0.5", "keep_ratio: 0.25"))
    result = runner.invoke(app, ["eval", str(other), "-c", str(first), "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert f"warning: {other}: model.keep_ratio=0.25 (trained: 0.5): eval runs {first}'s own model" in _said(result)


def test_a_recipe_without_checkpoint_scores_its_own_out_dir(runs: Path, tmp_path: Path) -> None:
    """train.out_dir (an override too, relative to the working folder as training reads it) names the run;
    the newest run here was scored instead."""
    runner = CliRunner()
    out = tmp_path / "metrics.json"
    result = runner.invoke(app, ["eval", RECIPE, *tiny(runs, **{"train.out_dir": "first"}), "--json", str(out),
                                 "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "first on test" in _said(result) and "newest" not in result.output
    assert json.loads(out.read_text())["checkpoint"] == str(Path("first") / "best")
    # A train.out_dir with no run in it: one line naming it and the run there is to pass instead.
    result = runner.invoke(app, ["eval", RECIPE, *tiny(runs, **{"train.out_dir": "runs/nothing"}), "--quiet",
                                 "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert (f"train.out_dir=runs/nothing holds no checkpoint: train it first, or pass the run to score with "
            f"--checkpoint (the last finetune run here: --checkpoint {(runs / 'newest').resolve()})") in _said(result)


def test_a_bare_out_dir_override_moves_a_runs_recipe_too(runs: Path) -> None:
    """`s5 eval RUN/recipe.yaml out_dir=runs/a` scored RUN: only the text `train.out_dir=` moved it."""
    result = CliRunner().invoke(app, ["eval", str(runs / "first" / "recipe.yaml"), "out_dir=runs/nothing", "--quiet",
                                      "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert "train.out_dir=runs/nothing holds no checkpoint" in _said(result)


def test_a_checkpoint_is_scored_only_on_its_own_dataset_and_task(runs: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    first = runs / "first"
    result = runner.invoke(app, ["eval", "data.dataset=lvu", "data.task=genre", "-c", str(first), "--quiet",
                                 "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert f"data.dataset=lvu: {first} was trained on data.dataset=synthetic" in _said(result)
    # An older checkpoint (no data.dataset/task in its recipe) is still scored; class names it stored unlike
    # the recipe's task are named (the metrics compare labels by index).
    older = tmp_path / "older"
    shutil.copytree(first / "best", older)
    _edit_metadata(older, _as_older_with_a_renamed_class)
    out = tmp_path / "older.json"
    result = runner.invoke(app, ["eval", "-c", str(older), "--json", str(out), "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    renamed = json.loads(out.read_text())["class_names"][0]
    assert (f"warning: {older} names its classes unlike the recipe's synthetic task (class 0: 'renamed' "
            f"trained, {renamed!r} here)") in _said(result)


def test_a_recipe_for_another_dataset_is_refused_without_the_model_warning(runs: Path, tmp_path: Path) -> None:
    """`s5 eval lvu/genre -c RUN` of a synthetic run warned about six model.* settings, then refused."""
    (tmp_path / "lvu_1.0").mkdir()  # the split files' folder, only looked for
    first = runs / "first"
    result = CliRunner().invoke(app, ["eval", "lvu/genre", f"data.root={tmp_path}", "-c", str(first), "--quiet",
                                      "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert "warning" not in result.output
    assert _said(result).startswith(f"error: data.dataset=lvu: {first} was trained on data.dataset=synthetic")


def test_an_lvu_model_is_not_scored_on_another_lvu_task(tmp_path: Path) -> None:
    """genre and relationship both have 4 classes: the class count alone let one be scored as the other."""
    rec = load_recipe(REPO / "recipes" / "lvu" / "genre.yaml", [f"data.root={tmp_path}", "data.task=relationship"])
    with pytest.raises(UserError, match=r"^data\.task=relationship: runs/genre was trained on data\.task=genre"):
        eval_cli._refuse_another_task(rec.data, {"dataset": "lvu", "task": "genre"}, "runs/genre")
    eval_cli._refuse_another_task(rec.data, {"dataset": "lvu", "task": "relationship"}, "runs/relationship")
    eval_cli._refuse_another_task(rec.data, {"frames": 60}, "runs/older")  # nothing stored: nothing to compare


def _as_older_with_a_renamed_class(meta: dict[str, str]) -> None:
    recipe = json.loads(meta["recipe"])
    del recipe["data"]["dataset"], recipe["data"]["task"]
    meta["recipe"] = json.dumps(recipe)
    task = json.loads(meta["task"])
    task["class_names"][0] = "renamed"
    meta["task"] = json.dumps(task)


def _edit_metadata(checkpoint: Path, edit) -> None:
    """Rewrite a checkpoint's model.safetensors with its metadata changed by `edit(meta)` in place."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    file = str(checkpoint / "model.safetensors")
    with safe_open(file, framework="pt") as handle:
        meta = dict(handle.metadata())
    tensors = load_file(file)
    edit(meta)
    save_file(tensors, file, metadata=meta)


def test_a_bare_eval_of_a_run_whose_best_lost_its_weights_names_the_latest(runs: Path) -> None:
    """As `-c RUN` does: the bare form picked RUN/best itself and said only that it holds no weights."""
    weights = runs / "newest" / "best" / "model.safetensors"
    aside = weights.with_name("aside.safetensors")
    weights.rename(aside)
    try:
        result = CliRunner().invoke(app, ["eval", "--quiet", "--device", "cpu"])
    finally:
        aside.rename(weights)
    assert result.exit_code == 2, result.output
    assert "holds no model.safetensors (damaged?): pass a checkpoint folder instead, e.g. the latest one" in _said(result)
