"""Every command that reads a recipe through `load_recipe_spec` says that RECIPE may be a Hub address."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from s5cli.cli.app import app


@pytest.mark.parametrize("command", ["extract", "finetune", "pretrain", "eval"])
def test_the_recipe_argument_names_hub_addresses(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "hf://repo/file" in result.output
