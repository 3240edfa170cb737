"""Shared Rich consoles and the one-line error style used by every command."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

# Results go to stdout (pipeable, e.g. `--json`); progress and errors go to stderr.
stdout = Console(highlight=False)
stderr = Console(stderr=True, highlight=False)


def print_error(message: str) -> None:
    """Print a user-facing error as one red line on stderr."""
    stderr.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)


def print_warning(message: str) -> None:
    """Print a warning as one yellow line on stderr."""
    stderr.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)
