"""`s5 eval`: evaluate a checkpoint on a recipe's test split, or one raw video."""

from __future__ import annotations

from s5cli.cli._pending import not_available


def evaluate() -> None:
    """Evaluate a checkpoint on a recipe's test split, or one raw video."""
    raise not_available("eval", 4)
