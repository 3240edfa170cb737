"""`s5 extract`: decode videos and cache frozen-backbone tokens for a recipe's dataset."""

from __future__ import annotations

from s5cli.cli._pending import not_available


def extract() -> None:
    """Decode videos and cache frozen-backbone tokens for a recipe's dataset."""
    raise not_available("extract", 3)
