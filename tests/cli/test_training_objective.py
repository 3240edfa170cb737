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
