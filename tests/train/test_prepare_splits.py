"""`prepare_splits` extracts the share of its context, whatever RANK/WORLD_SIZE the environment holds."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from s5cli.train.data import prepare_splits
from s5cli.train.distributed import DistContext


def test_a_one_process_context_extracts_every_video_under_torchrun_variables(monkeypatch) -> None:
    """`s5 eval` under torchrun built a one-process context, but extraction read RANK=1/WORLD_SIZE=2 from
    the environment: it cached half the videos and scored the split with the other half missing."""
    import s5cli.data.datasets as datasets
    import s5cli.data.extract as extract

    shards: list[tuple[int, int] | None] = []
    monkeypatch.setattr(datasets, "list_records", lambda data, split, show_progress=True: [])
    monkeypatch.setattr(extract, "ensure_cached", lambda data, **kwargs: shards.append(kwargs.get("shard")))
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    prepare_splits(SimpleNamespace(), ("test",), DistContext(device=torch.device("cpu")), show_progress=False)
    assert shards == [(0, 1)]
