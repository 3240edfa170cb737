"""Overrides as the recipe reads them, wherever a command inspects them itself: the run folder a
RUN/recipe.yaml names unless an override moves it (bare `out_dir=` too), and the model settings `s5 eval`
refuses to change (compared as values, not as text: `1e-3` is the trained 0.001, `S5` the trained s5)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from s5cli.cli.evaluate import _refuse_model_changes
from s5cli.errors import UserError
from s5cli.recipe import load_recipe, recipe_to_dict
from s5cli.train.resume_checks import check_resume_recipe
from s5cli.train.run_folder import out_dir_for
from tests.test_recipe import SYNTHETIC


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A run folder as training leaves it, for `run_folder_of`: its recipe.yaml beside a metrics log."""
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(SYNTHETIC, folder / "recipe.yaml")
    (folder / "metrics.jsonl").write_text("")
    return folder


@pytest.mark.parametrize("key", ["train.out_dir", "out_dir", " out_dir "])
def test_an_out_dir_override_moves_a_runs_recipe_to_another_folder(run: Path, tmp_path: Path, key: str) -> None:
    """`s5 finetune RUN/recipe.yaml out_dir=runs/d --resume` trained RUN: only the text `train.out_dir` counted."""
    overrides = [f"{key}={tmp_path / 'other'}"]
    recipe = load_recipe(run / "recipe.yaml", overrides)
    assert out_dir_for(recipe, None, str(run / "recipe.yaml"), overrides) == tmp_path / "other"
    assert out_dir_for(load_recipe(run / "recipe.yaml"), None, str(run / "recipe.yaml"), []) == run


def stored() -> dict:
    """The resolved recipe a checkpoint stores (the bundled synthetic one)."""
    return recipe_to_dict(load_recipe(SYNTHETIC))


@pytest.mark.parametrize("override", ["model.dt_min=1e-3", "model.dt_min=0.0010", "dt_min=.001", "model.name=S5",
                                      "model.kernel=DPLR", "model.keep_ratio=0.5"])
def test_eval_takes_an_override_that_repeats_the_trained_model(override: str) -> None:
    assert stored()["model"]["dt_min"] == 0.001
    _refuse_model_changes([override], stored(), "runs/x")


@pytest.mark.parametrize(("override", "said"), [
    ("model.dt_min=2e-3", "override model.dt_min=0.002: runs/x was trained with model.dt_min=0.001, and eval cannot "
                          "change the model"),
    ("keep_ratio=0.25", "override model.keep_ratio=0.25: runs/x was trained with model.keep_ratio=0.5"),
    ("model.name=s4", "override model.name='s4': runs/x was trained with model.name='s5'"),
    ("model.depth=3", "override model.depth=3: runs/x is a s5 model, which has no model.depth, and eval cannot"),
])
def test_eval_refuses_an_override_that_changes_the_model(override: str, said: str) -> None:
    with pytest.raises(UserError) as info:
        _refuse_model_changes([override], stored(), "runs/x")
    assert str(info.value).startswith(said)


def test_resuming_a_run_that_stored_its_model_name_in_another_case_is_no_change(run: Path) -> None:
    """Names are now stored as registered (`S5` -> s5): a run saved before must still resume."""
    text = (run / "recipe.yaml").read_text()
    (run / "recipe.yaml").write_text(text.replace("name: s5", "name: S5"))
    assert "name: S5" in (run / "recipe.yaml").read_text()
    check_resume_recipe(run, load_recipe(SYNTHETIC))
