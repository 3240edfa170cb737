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
    assert "metrics" not in front and "model-index" not in front  # no empty `metrics: []` for pretraining
    assert "s5 pretrain hf://me/lsmcl/recipe.yaml" in card


def test_lsmcl_card_says_to_finetune_from_it_not_to_eval_it() -> None:
    """`s5 eval` refuses LSMCL checkpoints (untrained head): the card's Use section finetunes from it instead."""
    recipe = {"data": {"dataset": "synthetic"}, "model": {"name": "s5"}, "train": {"objective": "lsmcl"}}
    meta = {"model_name": "s5", "num_outputs": "9", "step": "40", "objective": "lsmcl", "recipe": json.dumps(recipe)}
    card = checkpoint_card("me/lsmcl", meta, None, revision="v2")
    use = card.split("## Use")[1]
    assert "s5 finetune RECIPE train.init=hf://me/lsmcl@v2" in use
    assert "s5 eval" not in card
    assert "- step: 40" in card and "outputs" not in card
    # The objective stored in the metadata alone is enough (the recipe's train section may be missing).
    assert "s5 eval" not in checkpoint_card("me/lsmcl", {**meta, "recipe": json.dumps({"model": {"name": "s5"}})},
                                            None)
    # A supervised checkpoint keeps its eval commands and output count.
    supervised = checkpoint_card("me/s5", {**meta, "objective": "supervised", "recipe": "{}"}, None)
    assert "s5 eval --checkpoint hf://me/s5" in supervised and "outputs: 9" in supervised
    assert _front(supervised)["metrics"] == []


def test_cards_write_a_revision_with_a_slash_url_encoded() -> None:
    """hf:// addresses read `@refs%2Fpr%2F1`; a raw `@refs/pr/1` meant revision `refs` and file `pr/1/...`."""
    from s5cli.hub.paths import parse_hub_spec

    recipe = {"data": {"dataset": "synthetic"}, "model": {"name": "s5"}}
    card = checkpoint_card("me/s5", {"model_name": "s5", "recipe": json.dumps(recipe)}, None, revision="refs/pr/1")
    assert "s5 finetune hf://me/s5@refs%2Fpr%2F1/recipe.yaml" in card
    assert "s5 eval --checkpoint hf://me/s5@refs%2Fpr%2F1\n" in card
    assert "refs/pr/1" not in card
    spec = parse_hub_spec("hf://me/s5@refs%2Fpr%2F1/recipe.yaml")
    assert (spec.revision, spec.path) == ("refs/pr/1", "recipe.yaml")
    card = recipe_card("me/recipes", recipe, "coin.yaml", "feature/x")
    assert "s5 finetune hf://me/recipes@feature%2Fx/coin.yaml" in card
    assert "s5 recipes pull me/recipes coin.yaml --revision feature/x" in card  # --revision takes it as it is


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
