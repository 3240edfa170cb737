"""`s5 finetune` and `s5 pretrain` decide the objective; a recipe or override that disagrees is told so."""

from __future__ import annotations

from pathlib import Path

import pytest

from s5cli.cli.training import _check_objective
from s5cli.errors import UserError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("override", "objective", "words"), [
    ("train.objective=lsmcl", "supervised", "run `s5 pretrain` for lsmcl"),
    ("train.objective=foo", "supervised", "drop the override"),
    ("objective=supervised", "lsmcl", "run `s5 finetune` for supervised"),
])
def test_an_override_that_disagrees_with_the_command_is_refused(override: str, objective: str, words: str) -> None:
    with pytest.raises(UserError, match="always trains the") as info:
        _check_objective(str(REPO / "recipes" / "synthetic.yaml"), [override], objective)
    assert words in str(info.value)


def test_a_recipe_file_that_disagrees_gets_a_warning(capsys) -> None:
    _check_objective(str(REPO / "recipes" / "pretrain-lsmcl.yaml"), [], "supervised")
    assert "sets train.objective: lsmcl; `s5 finetune` trains the supervised objective" in capsys.readouterr().err
    _check_objective(str(REPO / "recipes" / "pretrain-lsmcl.yaml"), ["train.objective=lsmcl"], "lsmcl")
    _check_objective("pretrain-lsmcl", [], "lsmcl")  # a bundled name, agreeing: nothing to say
    _check_objective(str(REPO / "recipes" / "synthetic.yaml"), [], "supervised")
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(("section", "overrides", "blamed"), [
    ("train:\n  early_stop_patience: 3\n", [], False),
    ("train:\n  batch_size: 1\n", ["train.lsmcl.temperature=0.2"], False),  # an override the rule does not read
    ("train:\n  batch_size: 1\n", ["train.lsmcl.queue_size=0"], True),
])
def test_s5_pretrain_blames_the_command_line_only_for_the_users_overrides(
    tmp_path: Path, section: str, overrides: list[str], blamed: bool
) -> None:
    """`s5 pretrain` adds `train.objective=lsmcl` itself: a mistake in the file must not read as the
    user's command line (as it did while the LSMCL rules named train.objective among their keys)."""
    from typer.testing import CliRunner

    from s5cli.cli.app import app

    recipe = tmp_path / "r.yaml"
    recipe.write_text("data:\n  dataset: synthetic\n" + section)
    result = CliRunner().invoke(app, ["pretrain", str(recipe), *overrides])
    assert result.exit_code == 2, result.output
    assert f"{recipe}{' (command-line override)' if blamed else ''}: train." in " ".join(result.output.split())


def test_pretraining_a_finetuning_recipe_gets_the_measured_lsmcl_settings_and_a_dropout_warning() -> None:
    """`s5 pretrain recipes/lvu/genre.yaml` has no train.lsmcl section: it must get the settings that learned
    on the bundled task (mask ratio 0.25, batch-norm projector), not 0.5 and a plain projector, which did not;
    and its model.dropout 0.2 is named, with the fix."""
    from s5cli.cli.training import lsmcl_dropout_warning
    from s5cli.recipe import load_recipe

    genre = load_recipe(str(REPO / "recipes" / "lvu" / "genre.yaml"),
                        ["train.objective=lsmcl", "optim.schedule=cosine"])
    assert (genre.train.lsmcl.mask_ratio, genre.train.lsmcl.projector_norm) == (0.25, "batch")
    warning = lsmcl_dropout_warning(genre)
    assert warning is not None and "model.dropout=0.2" in warning and "set model.dropout=0" in warning
    bundled = load_recipe(str(REPO / "recipes" / "pretrain-lsmcl.yaml"), [])
    assert lsmcl_dropout_warning(bundled) is None
