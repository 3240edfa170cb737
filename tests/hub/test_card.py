"""Model cards: YAML front matter the Hub understands, metrics from metrics.json, reproduce commands."""

from __future__ import annotations

import json

import yaml

from s5cli.hub.card import checkpoint_card, recipe_card


def _front(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_regression_checkpoint_card() -> None:
    recipe = {"data": {"dataset": "lvu", "task": "view_count"}, "model": {"name": "s4"}}
    meta = {"model_name": "s4", "num_outputs": "1", "step": "50", "recipe": json.dumps(recipe)}
    card = checkpoint_card("me/vis4mer-views", meta, {"mse": 0.25, "count": 10}, revision="v2")
    front = _front(card)
    assert front["library_name"] == "s5cli" and "vis4mer" in front["tags"] and front["datasets"] == ["lvu"]
    assert front["metrics"] == ["mse"]
    result = front["model-index"][0]["results"][0]
    assert result["dataset"]["name"] == "LVU view_count" and result["metrics"][0]["value"] == 0.25
    assert "s5 finetune hf://me/vis4mer-views@v2/recipe.yaml" in card
    assert "| mean squared error | 0.2500 |" in card


def test_checkpoint_card_names_the_stored_classes() -> None:
    recipe = {"data": {"dataset": "lvu", "task": "genre"}, "model": {"name": "s5"}}
    names = [f"genre{i}" for i in range(25)]
    task = {"kind": "classification", "num_outputs": 25, "class_names": names}
    meta = {"model_name": "s5", "num_outputs": "25", "recipe": json.dumps(recipe), "task": json.dumps(task)}
    card = checkpoint_card("me/s5-genre", meta, None)
    assert f"- classes (25): {', '.join(names[:20])}, … and 5 more" in card
    assert "- classes" not in checkpoint_card("me/lsmcl", {**meta, "objective": "lsmcl"}, None)
    del meta["task"]  # checkpoints from before the task was stored: no line
    assert "- classes" not in checkpoint_card("me/s5-genre", meta, None)


def test_lsmcl_card_without_metrics_reproduces_with_pretrain() -> None:
    recipe = {"data": {"dataset": "synthetic"}, "model": {"name": "s5"}, "train": {"objective": "lsmcl"}}
    card = checkpoint_card("me/lsmcl", {"model_name": "s5", "recipe": json.dumps(recipe)}, None)
    front = _front(card)
    assert front["metrics"] == [] and "model-index" not in front
    assert "s5 pretrain hf://me/lsmcl/recipe.yaml" in card


def test_recipe_card_commands() -> None:
    card = recipe_card("me/recipes", {"data": {"dataset": "coin"}, "model": {"name": "s5"}}, "coin.yaml", "dev")
    assert _front(card)["datasets"] == ["coin"]
    assert "s5 recipes pull me/recipes coin.yaml --revision dev" in card
    assert "s5 finetune hf://me/recipes@dev/coin.yaml" in card


def test_a_card_says_what_reproducing_needs_from_train_init() -> None:
    recipe = {"data": {"dataset": "synthetic"}, "model": {"name": "s5"}, "train": {"init": "runs/pretrain-lsmcl"}}
    meta = {"model_name": "s5", "recipe": json.dumps(recipe)}
    card = " ".join(checkpoint_card("me/s5", meta, None).split())
    assert "It starts from the weights of `train.init: runs/pretrain-lsmcl`" in card
    assert "s5 finetune hf://me/s5/recipe.yaml train.init=PATH/TO/CHECKPOINT" in card
    recipe["train"]["init"] = "hf://me/lsmcl"
    card = " ".join(checkpoint_card("me/s5", {**meta, "recipe": json.dumps(recipe)}, None).split())
    assert "It starts from the weights of `hf://me/lsmcl`, which the command fetches from the Hub." in card
    assert "train.init=PATH" not in card
    del recipe["train"]["init"]
    assert "starts from the weights" not in checkpoint_card("me/s5", {**meta, "recipe": json.dumps(recipe)}, None)
