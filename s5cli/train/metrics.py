"""Evaluation metrics: top-k accuracy, MSE, confusion matrix, and per-video aggregation over windows.

LVU protocol: a test video is cut into windows; its prediction is the mean of the softmaxed window
predictions (classification) or of the window values (regression).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor


def aggregate_by_video(
    video_ids: Sequence[str], outputs: Tensor, labels: Tensor, kind: str, how: str = "mean"
) -> tuple[list[str], Tensor, Tensor]:
    """Average window outputs per video (probabilities for classification); `how="none"` keeps windows."""
    if kind == "classification":
        outputs = outputs.float().softmax(dim=-1)
    if how == "none":
        return list(video_ids), outputs, labels
    groups: OrderedDict[str, list[int]] = OrderedDict()
    for i, vid in enumerate(video_ids):
        groups.setdefault(vid, []).append(i)
    ids = list(groups)
    merged = torch.stack([outputs[idx].mean(dim=0) for idx in groups.values()])
    merged_labels = torch.stack([labels[idx[0]] for idx in groups.values()])
    return ids, merged, merged_labels


def topk_accuracy(scores: Tensor, labels: Tensor, k: int) -> float:
    """Fraction of rows whose label is among the k highest scores; tied scores rank the lower class first.

    Why not `topk`: with ties (a collapsed head, identical window averages) it returned an arbitrary one of
    them (class 8 of 10 equal scores on CPU) while the confusion matrix's `argmax` takes the first, so the
    printed top-1 disagreed with the matrix's diagonal. A stable descending sort ranks ties as `argmax`.

    A row with a non-finite score is never a hit: an all-NaN row (float16 overflow, a diverged model) ranked
    class 0 first, so a broken model scored the share of class-0 videos as its accuracy.
    """
    k = min(k, scores.shape[-1])
    ranked = scores.sort(dim=-1, descending=True, stable=True).indices[:, :k]
    hits = (ranked == labels[:, None]).any(dim=-1) & ~nonfinite_rows(scores)
    # Counted, then divided in Python: a float32 mean wrote 15 of 100 as 0.15000000596046448 in the JSON.
    return int(hits.sum().item()) / hits.numel() if hits.numel() else float("nan")


def nonfinite_rows(scores: Tensor) -> Tensor:
    """Rows (N,) of `scores` (N, C) or (N,) holding a NaN or an infinity: outputs that predict nothing."""
    finite = torch.isfinite(scores)
    return ~(finite.all(dim=-1) if scores.dim() > 1 else finite)


def confusion_matrix(scores: Tensor, labels: Tensor, num_classes: int) -> list[list[int]]:
    """Counts [true][predicted]; rows with non-finite scores predict nothing and are left out (`argmax`
    put them in class 0), so the diagonal over the count stays the top-1."""
    keep = ~nonfinite_rows(scores)
    scores, labels = scores[keep], labels[keep]
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.long)
    pred = scores.argmax(dim=-1)
    matrix.index_put_((labels.long(), pred), torch.ones_like(pred), accumulate=True)
    return matrix.tolist()


def compute_metrics(scores: Tensor, labels: Tensor, kind: str, num_classes: int | None = None) -> dict:
    """The metric set for a task: top1 (+top5 when classes > 5) and a confusion matrix, or MSE.

    Rows whose scores are not finite (NaN or inf: float16 autocast overflow, a diverged model) are counted
    under `nonfinite`, a key present only when there are some: they are wrong predictions for top-k and
    left out of the confusion matrix, and make the MSE non-finite. A non-finite metric is None, not NaN:
    `json.dumps` wrote NaN, which strict JSON readers refuse, into `s5 eval --json` and metrics files.
    """
    nonfinite = int(nonfinite_rows(scores).sum().item())
    if kind == "regression":
        pred = scores.reshape(-1).double()  # float64: a float32 mean's rounding noise showed in the JSON
        result: dict = {"mse": _finite_or_none(float(torch.mean((pred - labels.double()) ** 2).item())),
                        "count": int(labels.numel())}
    else:
        num_classes = num_classes or scores.shape[-1]
        result = {"top1": topk_accuracy(scores, labels, 1), "count": int(labels.numel())}
        if num_classes > 5:
            result["top5"] = topk_accuracy(scores, labels, 5)
        result["confusion_matrix"] = confusion_matrix(scores, labels, num_classes)
    if nonfinite:
        result["nonfinite"] = nonfinite
    return result


def _finite_or_none(value: float) -> float | None:
    """`value`, or None when it is NaN or infinite (JSON has no such numbers)."""
    return value if math.isfinite(value) else None


def headline(metrics: dict) -> tuple[str, float, bool]:
    """(name, value, higher_is_better) of the metric used for best-checkpoint selection and plateau; a
    metric that could not be computed (None: non-finite outputs) is NaN here, which is never better."""
    name, higher = ("top1", True) if "top1" in metrics else ("mse", False)
    value = metrics[name]
    return name, float("nan") if value is None else value, higher
