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


def _tiny_breakfast(root, val_fraction: float) -> dict:
    """Two people in train, one in test, each video flat on disk."""
    rows = {"train": ["P03-cam01-P03_tea,5,tea,0", "P04-cam01-P04_milk,5,milk,1"],
            "test": ["P50-cam01-P50_tea,5,tea,0"]}
    for split, lines in rows.items():
        (root / f"{split}.csv").write_text("\n".join(["file_name,duration,action,class_id", *lines]) + "\n")
        for line in lines:
            (root / f"{line.split(',')[0]}.mp4").touch()
    return {"dataset": "breakfast", "root": root, "annotations": root, "val_fraction": val_fraction}


def test_training_that_validates_on_the_test_split_says_so_once(tmp_path, monkeypatch, capsys) -> None:
    """With data.val_fraction 0 (the default) Breakfast's val is its test split: the best checkpoint, the
    plateau schedule and early stopping were chosen on the videos `s5 eval` scores, without a word."""
    import s5cli.data.extract as extract

    monkeypatch.setattr(extract, "ensure_cached", lambda data, **kwargs: None)
    ctx = DistContext(device=torch.device("cpu"))
    data = _tiny_breakfast(tmp_path, 0.0)
    records = prepare_splits(data, ("train", "val"), ctx, show_progress=False)
    assert [r.video_id for r in records["val"]] == ["P50-cam01-P50_tea"]
    err = " ".join(capsys.readouterr().err.split())
    assert err.count("data.val_fraction=0: Breakfast's val split is its test split, so the best checkpoint, the "
                     "plateau schedule and early stopping are chosen on test videos: set data.val_fraction (e.g. "
                     "0.1) for a held-out val") == 1, err
    prepare_splits(data, ("val",), ctx, show_progress=False)  # `s5 eval --split val` chose nothing
    prepare_splits(data, ("train",), ctx, show_progress=False)  # pretraining reads no val
    prepare_splits({**data, "val_fraction": 0.5}, ("train", "val"), ctx, show_progress=False)
    assert "val_fraction" not in capsys.readouterr().err


def test_a_val_fraction_for_a_dataset_with_its_own_val_split_is_named_unused() -> None:
    """LVU and the synthetic task have a val split of their own: data.val_fraction was ignored silently."""
    from s5cli.data.datasets import val_split_warning

    assert val_split_warning({"dataset": "lvu", "task": "genre", "val_fraction": 0.2}) == (
        "data.val_fraction=0.2 is not used: lvu has its own val split (data.val_fraction holds out part of train "
        "for Breakfast and COIN only); drop it from the recipe")
    assert val_split_warning({"dataset": "synthetic", "val_fraction": 0.0}) is None
    assert val_split_warning({"dataset": "breakfast", "val_fraction": 0.1}) is None
