"""Command help reads well on an 80-column terminal: prose is wrapped by the terminal, examples stay whole."""

from __future__ import annotations

import itertools
import re

import pytest
from typer.testing import CliRunner

from s5cli.cli import benchmark, evaluate, extract, finetune, pretrain, push, visualize_mask
from s5cli.cli.app import app
from s5cli.cli.help_text import command_help

WIDTH = 80
COMMANDS = {
    "pretrain": pretrain.pretrain,
    "finetune": finetune.finetune,
    "eval": evaluate.evaluate,
    "extract": extract.extract,
    "visualize-mask": visualize_mask.visualize_mask,
    "benchmark": benchmark.benchmark,
    "push": push.push,
}


def test_prose_lines_are_joined_and_examples_kept() -> None:
    doc = """Summary line.

    A paragraph wrapped
    at the source's width.

      s5 run [x] --fast    # a comment
    """
    assert command_help(doc) == (
        "Summary line.\n\nA paragraph wrapped at the source's width.\n\n"
        "[cyan]  s5 run \\[x] --fast[/cyan][dim]    # a comment[/dim]"
    )


def _description(output: str) -> list[str]:
    """The rendered lines between the usage line and the first panel, without rich's one-space margin."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("Usage:")) + 1
    end = next(i for i, line in enumerate(lines) if line.lstrip().startswith("╭"))
    return [line[1:].rstrip() for line in lines[start:end]]


@pytest.mark.parametrize("name", [None, *COMMANDS])
def test_help_at_80_columns_breaks_lines_only_where_the_terminal_is_full(name: str | None) -> None:
    args = ["--help"] if name is None else [name, "--help"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": str(WIDTH), "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    lines = _description(result.output)
    for line, following in itertools.pairwise(lines):
        if line and following and not line.startswith(" ") and not following.startswith(" "):
            # Inside a prose paragraph a line ends only because the next word did not fit.
            assert len(line) + 1 + len(following.split()[0]) > WIDTH - 4, f"early line break: {line!r}"
    doc = command_help(app.info.help if name is None else COMMANDS[name].__doc__)
    for example in re.findall(r"\[cyan\]\s*(.*?)\[/cyan\]", doc):
        command = example.replace("\\[", "[")
        assert any(line.strip().startswith(command) for line in lines), f"example wrapped: {command!r}"
        assert len(command) < WIDTH - 4, f"example too wide for {WIDTH} columns: {command!r}"


def test_every_registered_command_uses_its_reflowed_docstring() -> None:
    import typer

    group = typer.main.get_command(app)
    for name, function in COMMANDS.items():
        assert group.commands[name].help == command_help(function.__doc__)


def _command_paths(command, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command of the click tree under `command`, as argument tuples (`("cache", "ls")`)."""
    children = getattr(command, "commands", {})
    paths = [prefix]
    for name, child in children.items():
        paths.extend(_command_paths(child, (*prefix, name)))
    return paths


def test_flags_show_no_value_type_in_any_help() -> None:
    """An on/off flag takes no value, so its help row must not say `<bool>`: ours (`flag`) and --help alike."""
    import typer

    paths = _command_paths(typer.main.get_command(app))
    assert ("cache", "ls") in paths and ("finetune",) in paths
    flags_seen = 0
    for path in paths:
        result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
        assert result.exit_code == 0, result.output
        rows = [line for line in result.output.splitlines() if line.lstrip("│ ").startswith("-")]
        flags_seen += sum(1 for row in rows if re.search(r"--(resume|quiet|json|force|debug|help)\b", row))
        assert any("--help" in row for row in rows), f"s5 {' '.join(path)} --help lists no --help"
        offenders = [row for row in rows if "<bool>" in row]
        assert not offenders, f"s5 {' '.join(path)} --help: {offenders}"
    assert flags_seen >= 5


@pytest.mark.parametrize(("path", "usage"), [
    (("finetune",), "s5 finetune [OPTIONS] RECIPE [OVERRIDES]..."),
    (("eval",), "s5 eval [OPTIONS] [RECIPE] [OVERRIDES]..."),
    (("visualize-mask",), "s5 visualize-mask [OPTIONS] VIDEO"),
    (("push",), "s5 push [OPTIONS] CHECKPOINT [REPO_ID]"),
    (("recipes", "cp"), "s5 recipes cp [OPTIONS] NAME DEST"),
    (("cache", "ls"), "s5 cache ls [OPTIONS]"),
    ((), "s5 [OPTIONS] COMMAND [ARGS]..."),
])
def test_usage_lines_name_arguments_in_capitals(path: tuple[str, ...], usage: str) -> None:
    """Typer 0.29 wrote a required argument in braces (`{recipe}`), which reads as a choice of values."""
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    [line] = [line.strip() for line in result.output.splitlines() if line.strip().startswith("Usage:")]
    assert line == f"Usage: {usage}"


def test_no_usage_line_has_braces() -> None:
    import typer

    for path in _command_paths(typer.main.get_command(app)):
        result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
        usage = next(line for line in result.output.splitlines() if "Usage:" in line)
        assert "{" not in usage and "}" not in usage, usage
