"""`s5 push`: upload a checkpoint directory to the Hugging Face Hub with a model card."""

from __future__ import annotations

from s5cli.cli._pending import not_available


def push() -> None:
    """Upload a checkpoint directory to the Hugging Face Hub with a model card."""
    raise not_available("push", 7)
