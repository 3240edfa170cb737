"""The split a model card names: test, with a word on model selection, when the run validated on test videos."""

from __future__ import annotations

import json

import pytest
import yaml

from s5cli.hub.card import checkpoint_card

SELECTED_ON_TEST = "model selection (best checkpoint, plateau schedule, early stopping) used the test videos"


def _front(card: str) -> dict:
    return yaml.safe_load(card.split("---\n")[1])


def _card(data: dict, metrics: dict) -> str:
    recipe = {"data": data, "model": {"name": "s5"}}
    meta = {"model_name": "s5", "num_outputs": "10", "step": "9", "recipe": json.dumps(recipe)}
    return checkpoint_card("me/m", meta, metrics)


@pytest.mark.parametrize("dataset", ["breakfast", "coin"])
@pytest.mark.parametrize("val_fraction", [0, None])
def test_a_run_whose_val_split_is_test_is_labelled_test(dataset: str, val_fraction: float | None) -> None:
    """Breakfast and COIN without data.val_fraction validate on test: the card said "validation"."""
    data = {"dataset": dataset, **({"val_fraction": val_fraction} if val_fraction is not None else {})}
    card = _card(data, {"top1": 0.5})
    result = _front(card)["model-index"][0]["results"][0]
    assert result["dataset"]["split"] == "test"
    assert result["metrics"][0]["name"] == "test top-1 accuracy"
    assert "| metric (test) | value |" in card and "validation" not in card
    assert SELECTED_ON_TEST in card


def test_an_eval_of_the_val_split_is_the_test_split_too() -> None:
    card = _card({"dataset": "breakfast", "val_fraction": 0}, {"top1": 0.5, "split": "val"})
    assert _front(card)["model-index"][0]["results"][0]["dataset"]["split"] == "test"
    assert SELECTED_ON_TEST in card


@pytest.mark.parametrize(("data", "split"), [
    ({"dataset": "breakfast", "val_fraction": 0.1}, "validation"),
    ({"dataset": "lvu", "task": "genre"}, "validation"),
    ({"dataset": "synthetic"}, "validation"),
])
def test_a_held_out_val_split_stays_validation(data: dict, split: str) -> None:
    card = _card(data, {"top1": 0.5})
    assert _front(card)["model-index"][0]["results"][0]["dataset"]["split"] == split
    assert "test videos" not in card


def test_a_test_split_eval_of_a_run_selected_on_test_says_so() -> None:
    """Scored on test by `s5 eval` but chosen on those same videos: the number is not a clean test score."""
    card = _card({"dataset": "coin"}, {"top1": 0.5, "split": "test"})
    assert _front(card)["model-index"][0]["results"][0]["dataset"]["split"] == "test"
    assert SELECTED_ON_TEST in card
    clean = _card({"dataset": "coin", "val_fraction": 0.2}, {"top1": 0.5, "split": "test"})
    assert "test videos" not in clean
