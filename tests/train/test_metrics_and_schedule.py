"""Metrics (top-k, MSE, confusion, per-video aggregation) and learning-rate schedules."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from s5cli.train.metrics import aggregate_by_video, compute_metrics, topk_accuracy
from s5cli.train.schedule import Schedule, WarmupCosine, build_optimizer


def test_topk_and_confusion() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 2, 2])
    assert topk_accuracy(scores, labels, 1) == pytest.approx(2 / 3)
    assert topk_accuracy(scores, labels, 2) == pytest.approx(2 / 3)
    m = compute_metrics(scores, labels, "classification")
    assert m["confusion_matrix"] == [[0, 0, 0], [0, 1, 0], [1, 0, 1]] and "top5" not in m
    assert "top5" in compute_metrics(torch.randn(4, 8), torch.tensor([0, 1, 2, 3]), "classification")


def test_tied_scores_count_top1_as_the_confusion_matrix_does() -> None:
    """Ties rank the lower class first in top-k, as `argmax` does for the matrix: both say 2 of 3 right."""
    scores = torch.full((3, 10), 0.1)
    labels = torch.tensor([0, 0, 2])
    m = compute_metrics(scores, labels, "classification")
    diagonal = sum(m["confusion_matrix"][c][c] for c in range(10))
    assert m["top1"] == pytest.approx(diagonal / 3) == pytest.approx(2 / 3)
    assert topk_accuracy(scores, labels, 3) == 1.0  # classes 0, 1, 2 are the first three of the tie


def test_per_video_aggregation_averages_softmaxed_windows() -> None:
    # Video a: two windows that disagree; the average of the softmaxes decides.
    outputs = torch.tensor([[4.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    ids, scores, labels = aggregate_by_video(["a", "a", "b"], outputs, torch.tensor([0, 0, 1]), "classification")
    assert ids == ["a", "b"] and labels.tolist() == [0, 1]
    assert scores[0].argmax() == 0 and scores[1].argmax() == 1
    torch.testing.assert_close(scores.sum(-1), torch.ones(2))
    # Exactly the mean of the windows' softmaxes (not the softmax of the mean logits, not one window).
    torch.testing.assert_close(scores[0], outputs[:2].softmax(-1).mean(0))
    assert not torch.allclose(scores[0], outputs[:2].mean(0).softmax(-1))
    _, reg, _ = aggregate_by_video(["a", "a"], torch.tensor([[1.0], [3.0]]), torch.tensor([0.0, 0.0]), "regression")
    assert reg.item() == 2.0
    assert compute_metrics(torch.tensor([[1.0], [3.0]]), torch.tensor([0.0, 1.0]), "regression")["mse"] == 2.5


def test_aggregate_none_scores_every_window_on_its_own() -> None:
    """eval.aggregate: none: one softmaxed row per window, ids and labels repeated as they came."""
    outputs = torch.tensor([[4.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    ids, scores, labels = aggregate_by_video(["a", "a", "b"], outputs, torch.tensor([0, 0, 1]), "classification",
                                             "none")
    assert ids == ["a", "a", "b"] and labels.tolist() == [0, 0, 1]
    torch.testing.assert_close(scores, outputs.softmax(-1))
    # Window a/1 votes for class 1: counted as a miss here, where the per-video mean counts video a a hit.
    assert compute_metrics(scores, labels, "classification", 2)["top1"] == pytest.approx(2 / 3)


def test_metrics_are_exact_fractions_not_float32_roundings() -> None:
    """15 hits of 100 videos is 0.15 in the JSON, not float32's 0.15000000596046448; MSE is a float64 mean."""
    import json

    labels = torch.arange(100) % 4
    scores = torch.nn.functional.one_hot((labels + (torch.arange(100) >= 15)) % 4, 4).float()  # first 15 right
    metrics = compute_metrics(scores, labels, "classification")
    assert metrics["top1"] == 0.15 and '"top1": 0.15,' in json.dumps(metrics)
    mse = compute_metrics(torch.tensor([[1.0], [2.0], [3.0]]), torch.zeros(3), "regression")["mse"]
    assert mse == 14 / 3  # float32: 4.666666507720947


def test_warmup_cosine_shape() -> None:
    fn = WarmupCosine(warmup=10, total=110)
    assert fn(0) < fn(5) < fn(9) <= 1.0
    assert fn(10) == pytest.approx(1.0)
    assert fn(60) == pytest.approx(0.5)
    assert fn(110) == pytest.approx(0.0)


def test_optimizer_groups_and_schedule_state_round_trip() -> None:
    from s5cli.models.s4 import S4Config, S4Layer

    model = S4Layer(S4Config(d_model=4, d_state=8, ssm_lr=None))
    optim = SimpleNamespace(lr=1e-3, ssm_lr=5e-4, weight_decay=0.01, betas=[0.9, 0.999], schedule="cosine",
                            warmup_steps=2, plateau_factor=0.2, plateau_patience=1)
    opt = build_optimizer(model, optim)
    lrs = sorted({g["lr"] for g in opt.param_groups})
    assert lrs == [5e-4, 1e-3]
    assert all(g["weight_decay"] == 0.0 for g in opt.param_groups if g["lr"] == 5e-4)
    sched = Schedule(opt, optim, total_steps=20, maximize=True)
    for _ in range(5):
        opt.step()
        sched.after_step()
    state = sched.state_dict()
    opt2 = build_optimizer(model, optim)
    sched2 = Schedule(opt2, optim, total_steps=20, maximize=True)
    sched2.load_state_dict(state)
    opt2.step()
    sched2.after_step()
    opt.step()
    sched.after_step()
    assert sched2.lr() == pytest.approx(sched.lr())


@pytest.mark.parametrize("maximize", [True, False])
def test_plateau_lowers_the_rate_after_patience_evaluations_without_progress(maximize: bool) -> None:
    """ViS4mer's schedule (every LVU and Breakfast recipe): the rate falls by plateau_factor once the
    validation metric stops improving for more than plateau_patience evaluations, in the metric's own
    direction (top-1 up, MSE down), and the count survives a resume."""
    import json

    from s5cli.models.s4 import S4Config, S4Layer

    model = S4Layer(S4Config(d_model=4, d_state=8, ssm_lr=None))
    optim = SimpleNamespace(lr=1e-3, ssm_lr=None, weight_decay=0.01, betas=[0.9, 0.999], schedule="plateau",
                            warmup_steps=0, plateau_factor=0.2, plateau_patience=2)
    sched = Schedule(build_optimizer(model, optim), optim, total_steps=100, maximize=maximize)
    better = 1.0 if maximize else -1.0
    sched.after_eval(0.5)
    sched.after_eval(0.5 + better * 0.1)  # improved: the count restarts
    for _ in range(2):
        sched.after_eval(0.5 + better * 0.1)  # two evaluations without progress: still patient
        sched.after_step()  # per-step calls never move a plateau schedule
    assert sched.lr() == pytest.approx(1e-3)
    # A resumed run (state through the checkpoint's JSON) counts on from there.
    state = json.loads(json.dumps(sched.state_dict()))
    resumed = Schedule(build_optimizer(model, optim), optim, total_steps=100, maximize=maximize)
    resumed.load_state_dict(state)
    resumed.after_eval(0.5 + better * 0.1)  # the third: past the patience
    assert resumed.lr() == pytest.approx(2e-4)
    # Getting worse is no progress: a schedule reading the metric the wrong way round would call these
    # improvements and never lower the rate (and would have lowered it in the first part).
    worse = Schedule(build_optimizer(model, optim), optim, total_steps=100, maximize=maximize)
    for step in range(3):
        worse.after_eval(0.5 - better * 0.1 * step)
    assert worse.lr() == pytest.approx(1e-3)
    worse.after_eval(0.5 - better * 0.3)
    assert worse.lr() == pytest.approx(2e-4)


def test_predicting_leaves_the_global_generator_alone() -> None:
    """Validation runs on rank 0 alone under torchrun: had it drawn from the global generator (a DataLoader
    draws its workers' base seed there unless it has its own), rank 0's training noise would shift."""
    from torch import nn

    from s5cli.data.datasets.token_dataset import Sample
    from s5cli.train.evaluation import predict

    samples = [Sample(torch.randn(2, 3, 4), i % 2, f"v{i}") for i in range(5)]
    model = nn.Sequential(nn.Flatten(), nn.Linear(24, 2))
    before = torch.get_rng_state()
    ids, outputs, _ = predict(model, samples, batch_size=2, device=torch.device("cpu"))
    assert ids == [f"v{i}" for i in range(5)] and outputs.shape == (5, 2)
    assert torch.equal(torch.get_rng_state(), before)


def test_a_resumed_cosine_schedule_takes_its_first_step_at_the_new_curves_rate() -> None:
    """Resumed with another train.epochs, the first step used the rate the saved (shorter) run had reached."""
    optim = SimpleNamespace(schedule="cosine", warmup_steps=1, lr=1.0)
    saved_run = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    short = Schedule(saved_run, optim, total_steps=6, maximize=True)
    for _ in range(6):
        saved_run.step()
        short.after_step()
    assert short.lr() == pytest.approx(0.0)
    resumed = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    resumed.load_state_dict(saved_run.state_dict())
    longer = Schedule(resumed, optim, total_steps=12, maximize=True)
    longer.load_state_dict(short.state_dict())
    assert longer.lr() == pytest.approx(WarmupCosine(1, 12)(6))
    # The same length resumes at exactly the saved rate.
    again = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    again.load_state_dict(saved_run.state_dict())
    same = Schedule(again, optim, total_steps=6, maximize=True)
    same.load_state_dict(short.state_dict())
    assert same.lr() == short.lr()
