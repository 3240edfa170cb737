"""`s5 benchmark`: measure speed and memory of S5 against S4 and a video transformer."""

from __future__ import annotations

from s5cli.cli._pending import not_available


def benchmark() -> None:
    """Measure speed and memory of S5 against S4 and a video transformer."""
    raise not_available("benchmark", 6)
