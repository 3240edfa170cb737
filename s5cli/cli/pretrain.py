"""`s5 pretrain`: lSMCL pretraining (long-short masked contrastive learning) from a recipe."""

from __future__ import annotations

from s5cli.cli._pending import not_available


def pretrain() -> None:
    """LSMCL pretraining (long-short masked contrastive learning) from a recipe."""
    raise not_available("pretrain", 4)
