"""Command help that reads well at any terminal width, and flags that do not look as if they took a value.

Docstrings are wrapped at the source's line length (~110 columns), and Typer's rich help keeps their single
line breaks, so on an 80-column terminal every source line broke twice: once where the terminal ran out and
again where the source did. `command_help` joins each prose paragraph into one line, which the terminal then
wraps where it needs to, and keeps example lines (indented in the docstring) as written, in colour.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import click
import typer
import typer.core
from rich.markup import escape

# An example line: indentation, the command, and an optional trailing `# comment` with its alignment.
_EXAMPLE = re.compile(r"^(?P<indent>\s*)(?P<command>.*?)(?P<comment>\s+#\s.*)?$")


def command_help(doc: str | None) -> str:
    """A command's docstring as help text: one line per prose paragraph, one paragraph per example line.

    Example lines become paragraphs of their own (blank line between them) so that no Typer version joins
    them into one, whatever it does with single line breaks. They are wrapped in Rich markup, which also
    keeps their indentation: Typer dedents the text after the summary with `inspect.cleandoc`, which would
    otherwise strip the indentation off a help whose every later line is an example.
    """
    paragraphs: list[str] = []
    for block in inspect.cleandoc(doc or "").split("\n\n"):
        lines = [line for line in block.splitlines() if line.strip()]
        if not lines:
            continue
        if all(line[:1].isspace() for line in lines):
            paragraphs.extend(_example(line.rstrip()) for line in lines)
        else:
            paragraphs.append(" ".join(line.strip() for line in lines))
    return "\n\n".join(paragraphs)


def _example(line: str) -> str:
    """One example line as Rich markup: the command in cyan, a trailing `# comment` dimmed."""
    parts = _EXAMPLE.match(line)
    assert parts is not None  # the pattern matches every string
    text = f"[cyan]{parts['indent']}{escape(parts['command'])}[/cyan]"
    if parts["comment"]:
        text += f"[dim]{escape(parts['comment'])}[/dim]"
    return text


def flag(default: bool | None, *names: str, help: str, **options: Any) -> Any:
    """`typer.Option` for an on/off flag, shown in the help without a type.

    Typer prints each option's type next to it, `<bool>` for flags too, which reads as if a flag took a
    value (`--resume true` is an error). An empty metavar leaves that column blank.
    """
    return typer.Option(default, *names, help=help, metavar="", **options)


def _usage_error_types() -> tuple[type[Exception], ...]:
    """click's UsageError, plus the one of the copy of click that newer Typer releases vendor (typer._click)."""
    types: list[type[Exception]] = [click.UsageError]
    try:
        from typer._click.exceptions import UsageError as VendoredUsageError
    except ImportError:  # Typer before it vendored click parses with click itself
        return tuple(types)
    return (*types, VendoredUsageError)


USAGE_ERRORS = _usage_error_types()


class _UntypedHelpOption:
    """Mixin: the command's own --help row shows no `<bool>` either. Typer builds that option itself, so
    `flag` cannot reach it; `get_help_option` (click's public hook for it) blanks its type."""

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None:  # None: the command has no help option
            option.metavar = ""
        return option


class _ConventionalUsage:
    """Mixin: the usage line names arguments as click and man pages do (`RECIPE [OVERRIDES]...`). Typer
    0.29 writes a required one in braces (`{recipe}`), which reads as a choice of values."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []  # type: ignore[attr-defined]
        for param in self.get_params(ctx):  # type: ignore[attr-defined]
            if getattr(param, "param_type_name", None) == "argument":
                pieces.append(argument_usage(param))
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces


def argument_usage(param: Any) -> str:
    """`NAME`, `[NAME]` when optional, `...` after either when it takes several values: the metavar where one
    is set, else the name in capitals."""
    name = param.metavar or (param.name or "").upper()
    name = name if param.required else f"[{name}]"
    return name + ("..." if param.nargs != 1 else "")


class PlainFlagCommand(_ConventionalUsage, _UntypedHelpOption, typer.core.TyperCommand):
    """A Typer command whose help shows no `<bool>` (see `_UntypedHelpOption`) and writes its arguments in
    the usage line as `RECIPE [OVERRIDES]...` (see `_ConventionalUsage`)."""


class _SubcommandErrorContext:
    """Mixin: a usage error in a subcommand's arguments carries that subcommand's context, so the one-line
    error can point to its help ("see `s5 cache clean --help`"). click's parser raises some errors (an
    option missing its value: `s5 finetune R --out`) with no context, and the reporter then fell back to
    `s5 --help`."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)  # type: ignore[misc]
        except USAGE_ERRORS as error:
            _fill_context(self, ctx, error)
            raise


def _fill_context(group: Any, ctx: Any, error: Any) -> None:
    """Give a context-less usage error a context for the subcommand being parsed (only its path is read)."""
    name = ctx.invoked_subcommand
    command = group.get_command(ctx, name) if name else None
    if error.ctx is None and command is not None:
        error.ctx = type(ctx)(command, info_name=name, parent=ctx)


class PlainFlagGroup(_SubcommandErrorContext, _UntypedHelpOption, typer.core.TyperGroup):
    """A Typer command group (`s5`, `s5 recipes`, `s5 cache`) whose help shows no `<bool>`, and whose
    subcommands' usage errors name the subcommand (`_SubcommandErrorContext`)."""
