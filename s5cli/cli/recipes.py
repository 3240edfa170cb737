"""`s5 recipes ...`: list, copy, pull and push recipe files."""

from __future__ import annotations

import typer

from s5cli.cli._pending import not_available

app = typer.Typer(help="List, copy, pull and push recipes.", no_args_is_help=True)


@app.command("ls")
def list_recipes() -> None:
    """List the recipes that ship with s5cli."""
    raise not_available("recipes ls", 4)
