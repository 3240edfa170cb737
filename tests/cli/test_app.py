"""The `s5` entry point: help, version, and that it works as an installed console script."""

from __future__ import annotations

import shutil
import subprocess
import sys

from typer.testing import CliRunner

from s5cli import __version__
from s5cli.cli.app import app

COMMANDS = ["pretrain", "finetune", "eval", "visualize-mask", "benchmark", "extract", "recipes", "push", "cache"]


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    for command in COMMANDS:
        assert command in result.output


def test_version_prints_package_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"s5cli {__version__}"


def test_unknown_command_is_usage_error() -> None:
    result = CliRunner().invoke(app, ["no-such-command"])
    assert result.exit_code == 2


def test_installed_console_script_and_module_entry_point() -> None:
    script = shutil.which("s5")
    assert script is not None, "the `s5` console script is not on PATH: install the project with pip"
    for argv in ([script, "--help"], [sys.executable, "-m", "s5cli", "--version"]):
        completed = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        assert completed.returncode == 0, completed.stderr
    assert __version__ in completed.stdout
