"""`s5 visualize-mask`: render which tokens S5 keeps on a video (GIF, MP4 or PNG grid)."""

from __future__ import annotations

from s5cli.cli._pending import not_available


def visualize_mask() -> None:
    """Render which tokens S5 keeps on a video (GIF, MP4 or PNG grid)."""
    raise not_available("visualize-mask", 5)
