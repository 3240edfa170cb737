"""RUN/recipe.yaml's header says where the run's recipe came from: the recipe given and the overrides the
user typed. It listed `train.objective=...` (which the command adds) in every run, and a resume from
RUN/recipe.yaml replaced the run's origin with that file and the resume's own overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from s5cli.cli.app import app
from s5cli.recipe import load_recipe
from s5cli.train import run_recipe
from tests.train.test_finetune_e2e import RECIPE, tiny


def _header(run: Path) -> list[str]:
    return [line for line in (run / "recipe.yaml").read_text().splitlines() if line.startswith("#")]


def _finetune(*args: str) -> None:
    result = CliRunner().invoke(app, ["finetune", *args, "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output


def test_the_header_lists_what_was_typed_and_a_resume_keeps_the_runs_origin(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    given = tiny(tmp_path, **{"train.epochs": 1})
    run = tmp_path / "run"
    _finetune(RECIPE, *given, "--seed", "3")
    typed = [*given, "train.seed=3"]
    assert _header(run) == [f"# Resolved s5cli recipe (from {RECIPE})", "# with overrides:",
                            *(f"#   {item}" for item in typed)]
    _finetune(str(run / "recipe.yaml"), "--resume", "train.epochs=2")
    assert _header(run) == [f"# Resolved s5cli recipe (from {RECIPE})", "# with overrides:",
                            *(f"#   {item}" for item in [*typed, "train.epochs=2"])]


def test_an_objective_the_user_typed_is_still_listed(tmp_path: Path) -> None:
    from s5cli.cli.training import _without_last

    typed = ("train.objective=supervised", "train.epochs=2", "train.objective=supervised")
    assert _without_last(typed, "train.objective=supervised") == typed[:2]
    assert _without_last(("train.epochs=2",), "train.objective=supervised") == ("train.epochs=2",)


def test_a_resume_without_a_readable_header_keeps_the_new_provenance(tmp_path: Path) -> None:
    """A recipe.yaml written by hand (no header) or unreadable: the header is the resume's own."""
    (tmp_path / "recipe.yaml").write_text("model:\n  name: s5\n")
    recipe = load_recipe(RECIPE, ["train.epochs=2"])
    run_recipe.save_run_recipe(recipe, tmp_path, resume=True)
    assert _header(tmp_path) == [f"# Resolved s5cli recipe (from {RECIPE})", "# with overrides:",
                                 "#   train.epochs=2"]
    assert run_recipe.saved_provenance(tmp_path / "missing.yaml") is None


def test_a_resume_lists_a_value_again_when_a_later_one_replaced_it(tmp_path: Path) -> None:
    """The header read `log_every=5, log_every=10` (so 10) after resuming with log_every=5: the repeat was
    dropped because `=5` appeared earlier in the list."""
    (tmp_path / "recipe.yaml").write_text(f"# Resolved s5cli recipe (from {RECIPE})\n# with overrides:\n"
                                          "#   train.log_every=5\n#   train.log_every=10\nmodel:\n  name: s5\n")
    run_recipe.save_run_recipe(load_recipe(RECIPE, ["train.log_every=5", "train.epochs=2"]), tmp_path, resume=True)
    assert _header(tmp_path)[2:] == [f"#   {item}" for item in
                                     ["train.log_every=5", "train.log_every=10", "train.log_every=5",
                                      "train.epochs=2"]]
    # The same value as the last one listed is not repeated.
    run_recipe.save_run_recipe(load_recipe(RECIPE, ["train.epochs=2"]), tmp_path, resume=True)
    assert _header(tmp_path)[2:] == [f"#   {item}" for item in
                                     ["train.log_every=5", "train.log_every=10", "train.log_every=5",
                                      "train.epochs=2"]]
