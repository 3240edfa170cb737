"""`s5 eval RECIPE`: a run's own recipe.yaml means that run, and a recipe file whose model section differs
from the checkpoint's says that eval runs the checkpoint's model."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from s5cli.cli.app import app
from tests.train.test_finetune_e2e import RECIPE, tiny


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def test_a_runs_recipe_means_that_run_and_another_model_section_is_named(tmp_path: Path) -> None:
    runner = CliRunner()
    for name in ("first", "newest"):  # the newest is what a bare `s5 eval` takes
        overrides = tiny(tmp_path, **{"train.epochs": 1, "train.out_dir": tmp_path / name})
        result = runner.invoke(app, ["finetune", RECIPE, *overrides, "--quiet", "--device", "cpu"])
        assert result.exit_code == 0, result.output
    first = tmp_path / "first"
    result = runner.invoke(app, ["eval", str(first / "recipe.yaml"), "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert f"{first} on test" in " ".join(result.output.split())  # the run (its best/), not the newest
    assert "warning" not in result.output  # its own model section: nothing to say

    other = tmp_path / "quarter.yaml"
    other.write_text((first / "recipe.yaml").read_text().replace("keep_ratio: 0.5", "keep_ratio: 0.25"))
    result = runner.invoke(app, ["eval", str(other), "-c", str(first), "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert f"warning: {other}: model.keep_ratio=0.25 (trained: 0.5): eval runs {first}'s own model" in said
