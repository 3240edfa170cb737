"""Dataset adapters: annotation files -> `VideoRecord`s, and the task each dataset poses.

`list_records(data, split, show_progress)`, `task_info(data)` and `val_split_warning(data)` dispatch on
`data.dataset`. Adapter modules (and torch, via token_dataset.py) are imported only when called, so
importing this package costs nothing.
"""

from __future__ import annotations

import difflib
import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any

from s5cli.errors import UserError

if TYPE_CHECKING:
    from .base import RecordList, TaskInfo

DATASETS: dict[str, str] = {
    "synthetic": "synthetic",
    "lvu": "lvu",
    "breakfast": "breakfast",
    "coin": "coin",
}
# Names this package re-exports lazily, and the module each lives in.
_REEXPORTS = {
    "VideoRecord": "base",
    "TaskInfo": "base",
    "RecordList": "base",
    "AnnotationError": "base",
    "Sample": "token_dataset",
    "SampleBatch": "token_dataset",
    "TokenDataset": "token_dataset",
    "collate_samples": "token_dataset",
}


def adapter(name: str | None) -> ModuleType:
    """The adapter module of a dataset name; UserError suggesting the closest name if unknown."""
    key = str(name).lower() if name is not None else ""
    if key not in DATASETS:
        close = difflib.get_close_matches(key, DATASETS, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"use one of {', '.join(DATASETS)}"
        raise UserError(f"unknown dataset data.dataset={name!r}", hint=hint)
    return importlib.import_module(f"{__name__}.{DATASETS[key]}")


def _dataset_name(data: Any) -> Any:
    return data.get("dataset") if isinstance(data, dict) else getattr(data, "dataset", None)


def list_records(data: Any, split: str, show_progress: bool = True) -> RecordList:
    """Videos of one split (train/val/test) of the recipe's dataset; missing videos are skipped and counted.

    `show_progress`: a bar (a line in logs) for work that listing itself may do. Only the synthetic
    dataset has any (it generates its videos on first use); the others read annotation files and take
    the flag so that every adapter answers the same call."""
    return adapter(_dataset_name(data)).list_records(data, split, show_progress=show_progress)


def task_info(data: Any) -> TaskInfo:
    """Task kind ("classification"/"regression"), number of model outputs and class names of the dataset."""
    return adapter(_dataset_name(data)).task_info(data)


def val_split_warning(data: Any) -> str | None:
    """What to say about this recipe's val split before training: validation would choose on test videos
    (Breakfast, COIN without data.val_fraction), or data.val_fraction is set for a dataset with its own val
    split (LVU, synthetic), where it was ignored without a word; else None."""
    from s5cli.data.datasets.base import val_fraction_of

    name = _dataset_name(data)
    check = getattr(adapter(name), "val_split_warning", None)
    if check is not None:
        return check(data)
    fraction = val_fraction_of(data)
    if fraction > 0:
        return (f"data.val_fraction={fraction:g} is not used: {name} has its own val split (data.val_fraction holds "
                "out part of train for Breakfast and COIN only); drop it from the recipe")
    return None


def __getattr__(name: str) -> Any:
    # Lazy re-exports: token_dataset imports torch.
    if name in _REEXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_REEXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
