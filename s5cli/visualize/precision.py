"""Score a token selection against the bundled synthetic task's ground truth: do the kept patches hit the events?

Each synthetic video has a `.json` sidecar naming its event cells (row, col, frames [start, end)). A sampled
frame's event cells are those of the events shown in its source frame. Two views, each next to what a random
selection of the same size would get:

- coverage (recall): share of event cells that were kept; chance = share of all patches kept (the keep ratio).
- precision: share of kept patches that are event cells; chance = share of all patches that are event cells.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from s5cli.errors import UserError
from s5cli.visualize.selection import run_selection, set_keep_ratio
from s5cli.visualize.video_encoding import VideoSampling

if TYPE_CHECKING:
    from torch import nn


def _load_json(value: dict[str, Any] | list | str | os.PathLike[str]) -> Any:
    if isinstance(value, (dict, list)):
        return value
    with open(value, encoding="utf-8") as handle:
        return json.load(handle)


def kept_precision(
    selection_json: dict[str, Any] | str | os.PathLike[str],
    ground_truth_events: dict[str, Any] | list[dict[str, Any]] | str | os.PathLike[str],
) -> dict[str, float | int]:
    """How well kept patches cover the synthetic task's event cells, against what a random choice would get.

    `selection_json`: the `--json` output (dict or path). `ground_truth_events`: the generator's sidecar JSON
    (dict or path) or just its `events` list; event rows/cols must be in the selection's patch grid. Each
    sampled frame is matched to the events shown in its source frame (start <= frame < end).
    Returns `coverage` (share of event cells kept) vs `coverage_chance` (share of all patches kept, what a
    random selection of the same size covers), `precision` (share of kept patches that are event cells) vs
    `precision_chance` (share of patches that are event cells), and their ratios `coverage_lift`/`precision_lift`.
    """
    selection = _load_json(selection_json)
    truth = _load_json(ground_truth_events)
    events = truth["events"] if isinstance(truth, dict) else truth
    grid = int(selection["grid"])
    if isinstance(truth, dict) and "grid" in truth and int(truth["grid"]) != grid:
        raise ValueError(f"ground truth grid {truth['grid']} differs from the selection's patch grid {grid}")
    patches = grid * grid
    event_cells = kept_cells = kept_on_event = 0
    for frame in selection["frames"]:
        source = int(frame["source_frame"])
        cells = {
            1 + int(e["row"]) * grid + int(e["col"]) for e in events if int(e["start"]) <= source < int(e["end"])
        }
        kept = {int(s) for s in frame["kept"] if int(s) >= 1}
        event_cells += len(cells)
        kept_cells += len(kept)
        kept_on_event += len(cells & kept)
    frames = len(selection["frames"])
    return _precision_summary(frames, frames * patches, event_cells, kept_cells, kept_on_event)


def _precision_summary(frames: int, patches: int, event_cells: int, kept_cells: int, hits: int) -> dict:
    """Coverage (recall) and precision of kept patches on event cells, each with its chance level and lift."""
    coverage = hits / event_cells if event_cells else math.nan
    coverage_chance = kept_cells / patches if patches else math.nan
    precision = hits / kept_cells if kept_cells else math.nan
    precision_chance = event_cells / patches if patches else math.nan
    return {
        "frames": frames,
        "patches": patches,
        "event_cells": event_cells,
        "kept_patches": kept_cells,
        "kept_on_event": hits,
        "coverage": coverage,
        "coverage_chance": coverage_chance,
        "coverage_lift": coverage / coverage_chance if coverage_chance else math.nan,
        "precision": precision,
        "precision_chance": precision_chance,
        "precision_lift": precision / precision_chance if precision_chance else math.nan,
    }


def merge_precision(results: list[dict[str, float | int]]) -> dict[str, float | int]:
    """Pool `kept_precision` results over many videos (sums of counts, then the same ratios)."""
    return {
        "videos": len(results),
        **_precision_summary(
            sum(int(r["frames"]) for r in results),
            sum(int(r["patches"]) for r in results),
            sum(int(r["event_cells"]) for r in results),
            sum(int(r["kept_patches"]) for r in results),
            sum(int(r["kept_on_event"]) for r in results),
        ),
    }


def video_event_precision(
    videos: list[str | os.PathLike[str]],
    model: Any,
    backbone: nn.Module,
    *,
    frames: int | None,
    fps: float | None,
    image_size: int,
    seed: int = 0,
    storage_dtype: str | None = "float16",
    resize: str = "crop",
) -> dict[str, float | int]:
    """`kept_precision` pooled over synthetic videos (each with its `.json` ground truth beside the `.mp4`)."""
    results = []
    sampling = VideoSampling(frames, fps, image_size, storage_dtype=storage_dtype, resize=resize)
    for video in videos:
        selection = run_selection(video, model, backbone, sampling, model_name="eval", seed=seed)
        results.append(kept_precision(selection.to_json(), Path(video).with_suffix(".json")))
    return merge_precision(results)


def synthetic_event_precision(
    checkpoint: str | os.PathLike[str],
    split: str = "test",
    limit: int | None = None,
    keep_ratio: float | None = None,
    device: str | None = None,
    seed: int = 0,
    reference: bool = False,
) -> dict[str, Any]:
    """`kept_precision` of a checkpoint trained on the bundled synthetic task, pooled over a split's videos.

    `reference=True` scores `DeviationSelector` instead of the model (same videos, keep ratio and tokens).
    """
    from s5cli.data.datasets import list_records
    from s5cli.models.backbone import build_backbone
    from s5cli.train.distributed import pick_device
    from s5cli.train.loading import load_trained_model

    model, recipe, _ = load_trained_model(checkpoint, expect_model="s5")
    data = dict(recipe.get("data") or {})
    if data.get("dataset") != "synthetic":
        raise UserError(f"{checkpoint} was trained on {data.get('dataset')!r}, not on the synthetic task")
    dev = pick_device(device)
    set_keep_ratio(model, keep_ratio)
    if reference:
        model = DeviationSelector(model.config.keep_ratio, int(model.config.d_input))
    model.to(dev)
    image_size = int(data.get("image_size") or 96)
    backbone = build_backbone(data["backbone"], data.get("backbone_weights"), image_size).to(dev)
    records = list(list_records(data, split))[: limit or None]
    if not records:
        raise UserError(f"the synthetic {split} split of {checkpoint} has no videos: check data.synthetic in its recipe")
    result = video_event_precision(
        [record.path for record in records], model, backbone,
        frames=data.get("frames"), fps=data.get("fps"), image_size=image_size, seed=seed,
        storage_dtype=data.get("cache_dtype") or "float16", resize=data.get("resize") or "crop",
    )
    return {**result, "keep_ratio": float(model.config.keep_ratio), "selector": str(model.config.selector),
            "selection": str(model.config.selection)}


class DeviationSelector:
    """Non-learned reference selector: per frame, keep the patches whose tokens lie farthest from the frame's median.

    It stands in for an S5 model in `run_selection` (same `select` / `config` surface) to show what a trivial
    saliency rule achieves on the same videos: an upper reference for the learned mask generator on this task.
    """

    def __init__(self, keep_ratio: float, d_input: int) -> None:
        from types import SimpleNamespace

        self.config = SimpleNamespace(keep_ratio=keep_ratio, d_input=d_input, selector="deviation",
                                      selection="per_frame")

    def parameters(self):
        """One empty CPU tensor, so callers can read the device."""
        import torch

        yield torch.empty(0)

    def to(self, device: Any) -> DeviationSelector:
        """No weights to move."""
        return self

    def select(self, tokens: Any, generator: Any = None) -> Any:
        """(1, T, S, D) -> indices (1, T*K) of the K = round(keep_ratio*S) most deviant patch tokens of each frame."""
        from types import SimpleNamespace

        import torch

        _, t, s, _ = tokens.shape
        k = min(s - 1, max(1, round(self.config.keep_ratio * s)))
        patches = tokens[0, :, 1:].float()
        deviation = (patches - patches.median(dim=1, keepdim=True).values).norm(dim=-1)  # (T, S-1)
        local = deviation.topk(k, dim=-1).indices.sort(dim=-1).values + 1  # +1: token 0 is CLS
        offsets = torch.arange(t, device=tokens.device)[:, None] * s
        return SimpleNamespace(indices=(local + offsets).reshape(1, -1), scores=None)
