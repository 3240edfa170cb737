"""`--resume` with the other command names the run's kind in words, not by its train.objective value."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from s5cli.errors import UserError
from s5cli.train import job, resume_checks
from tests.train.test_finetune_e2e import RECIPE, tiny


def _run_of(folder: Path, objective: str) -> Path:
    """A run folder whose recipe.yaml trains `objective`."""
    folder.mkdir()
    (folder / "recipe.yaml").write_text(yaml.safe_dump({"train": {"objective": objective}}))
    return folder


@pytest.mark.parametrize(("saved", "resumed", "kind", "command"), [
    ("lsmcl", "supervised", "an LSMCL pretraining run", "s5 pretrain"),
    ("supervised", "lsmcl", "a finetuning run", "s5 finetune"),
])
def test_resuming_with_the_other_command_names_the_kind_of_run(tmp_path: Path, saved: str, resumed: str,
                                                                kind: str, command: str) -> None:
    run = _run_of(tmp_path / "A", saved)
    recipe = job.recipe_objects(RECIPE, tiny(tmp_path, **{"train.objective": resumed, "train.lsmcl.long_frames": 8,
                                                              "train.lsmcl.short_frames": 4}), None, check_paths=False)
    with pytest.raises(UserError) as error:
        resume_checks.check_resume_recipe(run, recipe)
    assert str(error.value) == (f"--resume: {run} is {kind}: resume it with "
                                f"`{command} {run / 'recipe.yaml'} --resume`")


def test_an_objective_of_another_version_is_named_as_the_recipe_value() -> None:
    assert resume_checks.run_kind("distill") == "a run of train.objective=distill"
