"""`s5 finetune`: train S5 (or a baseline) on a labelled dataset from a recipe."""

from __future__ import annotations

from s5cli.cli._pending import not_available


def finetune() -> None:
    """Train S5 (or a baseline) on a labelled dataset from a recipe."""
    raise not_available("finetune", 4)
