"""Non-finite model outputs (float16 overflow, a diverged model): counted, never scored as right, JSON-safe,
and never chosen as the best checkpoint."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from s5cli.train import evaluation
from s5cli.train.checkpoint import TrainerState
from s5cli.train.early_stop import early_stop_notice, is_improvement
from s5cli.train.metrics import compute_metrics, headline

NAN = float("nan")


def test_all_nan_scores_are_wrong_predictions_not_class_0() -> None:
    """All-NaN rows ranked class 0 first: half the labels are 0, so a broken model scored top-1 0.5."""
    scores = torch.full((4, 9), NAN).softmax(-1)
    m = compute_metrics(scores, torch.tensor([0, 0, 3, 5]), "classification")
    assert m["top1"] == 0.0 and m["top5"] == 0.0
    assert m["nonfinite"] == 4 and m["count"] == 4
    assert sum(map(sum, m["confusion_matrix"])) == 0  # no prediction to place in the matrix
    json.dumps(m, allow_nan=False)


def test_only_the_nonfinite_rows_are_wrong() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.0], [NAN, NAN, NAN], [0.2, 0.3, 0.5], [float("inf"), 0.0, 0.0]])
    m = compute_metrics(scores, torch.tensor([1, 0, 2, 0]), "classification")
    assert m["top1"] == 0.5 and m["nonfinite"] == 2
    diagonal = sum(m["confusion_matrix"][c][c] for c in range(3))
    assert diagonal / m["count"] == m["top1"]


def test_finite_outputs_have_no_nonfinite_key() -> None:
    assert "nonfinite" not in compute_metrics(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), "classification")
    assert "nonfinite" not in compute_metrics(torch.randn(4, 1), torch.randn(4), "regression")


def test_a_nan_regression_output_gives_json_safe_metrics() -> None:
    m = compute_metrics(torch.tensor([[0.5], [NAN], [1.0]]), torch.tensor([0.5, 0.0, 1.0]), "regression")
    assert m == {"mse": None, "count": 3, "nonfinite": 1}
    json.dumps(m, allow_nan=False)  # strict JSON: NaN is no number there
    name, value, higher = headline(m)
    assert name == "mse" and value != value and not higher  # NaN for the trainer: never better


class _Constant(torch.nn.Module):
    """Outputs `value` for every window (NaN: an overflowed or diverged model)."""

    def __init__(self, outputs: int, value: float) -> None:
        super().__init__()
        self.outputs, self.value = outputs, value

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.full((tokens.shape[0], self.outputs), self.value)


def test_evaluate_counts_nonfinite_videos_and_windows_and_warns(capsys: pytest.CaptureFixture[str]) -> None:
    from s5cli.data.datasets.token_dataset import Sample

    class Windows(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 6

        def __getitem__(self, i: int):
            return Sample(tokens=torch.zeros(2, 3, 4), label=0, video_id=f"v{i // 2}")  # 3 videos, 2 windows each

    task = SimpleNamespace(kind="classification", num_outputs=3)
    m = evaluation.evaluate(_Constant(3, NAN), Windows(), task, 4, torch.device("cpu"))
    assert m["top1"] == 0.0 and m["nonfinite"] == 3 and m["nonfinite_windows"] == 6 and m["windows"] == 6
    said = capsys.readouterr().err
    assert "3 of 3 videos had non-finite model outputs" in said and "6 of 6 windows" in said
    assert "wrong predictions" in said and "earlier checkpoint" in said
    evaluation.evaluate(_Constant(3, 1.0), Windows(), task, 4, torch.device("cpu"))
    assert "non-finite" not in capsys.readouterr().err


def test_the_warning_after_float16_autocast_names_full_precision() -> None:
    m = {"mse": None, "count": 10, "nonfinite": 2, "windows": 40, "nonfinite_windows": 5}
    said = evaluation.nonfinite_warning(m, "mean", float16=True)
    assert said.startswith("2 of 10 videos") and "5 of 40 windows" in said
    assert "train.amp=false" in said and "--device cpu" in said and "no mse" in said
    assert evaluation.nonfinite_warning(m, "none", float16=False).startswith("2 of 10 windows")


@pytest.mark.parametrize("higher", [True, False])
def test_a_nan_validation_is_never_the_best(higher: bool) -> None:
    """[nan, 0.3, 0.2]: the NaN is not kept, 0.3 becomes the best, 0.2 improves only when lower is better."""
    best = None
    improved = []
    for value in (NAN, 0.3, 0.2):
        better = is_improvement(value, best, higher)
        improved.append(better)
        if better:
            best = value
    assert improved == [False, True, not higher]
    assert best == (0.3 if higher else 0.2)


def test_non_finite_values_and_ties() -> None:
    assert not is_improvement(0.3, 0.3, True) and not is_improvement(0.3, 0.3, False)  # a tie keeps the earlier
    assert not is_improvement(float("inf"), None, False) and not is_improvement(float("-inf"), 0.1, True)
    assert is_improvement(0.1, NAN, True) and is_improvement(0.9, NAN, False)  # a NaN best stored by an older run


def test_early_stop_after_only_nonfinite_validations_says_so() -> None:
    state = TrainerState(step=6, epoch=3, evals_since_best=2)
    said = early_stop_notice(state, 2, {"mse": None, "count": 3, "nonfinite": 3})
    assert "val mse not finite for 2 validations" in said and "no best checkpoint" in said
    assert "no best checkpoint" in early_stop_notice(state, 2, None)


def test_s5_eval_table_shows_a_metric_that_could_not_be_computed_and_the_nonfinite_count() -> None:
    from rich.console import Console

    from s5cli.cli.evaluate import _print_metrics

    console = Console(record=True, width=100)
    _print_metrics(console, "runs/x", {"split": "test", "mse": None, "count": 4, "windows": 9, "nonfinite": 2,
                                        "nonfinite_windows": 3})
    text = console.export_text()
    assert "not finite" in text and "None" not in text
    assert "nonfinite " in text.replace("│", " ") and "nonfinite_windows" in text


def test_the_training_summary_keeps_a_metric_that_could_not_be_computed(tmp_path) -> None:
    """The summary skipped rows whose value was not a number, so a non-finite MSE left no mse row at all
    (and with it the best checkpoint's finite one)."""
    import json as json_module

    from rich.console import Console

    from s5cli.cli.training import _summary

    (tmp_path / "best").mkdir()
    (tmp_path / "best" / "metrics.json").write_text(json_module.dumps({"mse": 0.42, "count": 4}))
    console = Console(record=True, width=100)
    _summary(console, tmp_path, {"mse": None, "count": 4, "nonfinite": 4})
    rows = [line for line in console.export_text().splitlines() if " mse " in line.replace("│", " ")]
    assert rows and "not finite" in rows[0] and "0.4200" in rows[0]
