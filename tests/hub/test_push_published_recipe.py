"""What `s5 push` publishes as recipe.yaml (its hub section names the repo pushed to), and the warning for
absolute paths of this machine in a pushed recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from s5cli.cli.app import app
from tests.hub.conftest import REPO_ROOT, TINY_MODEL
from tests.hub.fake_hub import FakeHub

# huggingface_hub's LFS upload passes a file object as `data=`, which httpx2 flags as deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")

ABSOLUTE = ["data.root=/home/alice/private/videos", "data.cache_dir=/home/alice/.cache/feat"]


def _run(tmp_path: Path, overrides: list[str]) -> Path:
    """A run folder with a tiny best/ checkpoint trained (nominally) with the synthetic recipe + `overrides`."""
    from s5cli.models.registry import build_model
    from s5cli.recipe import load_recipe, recipe_to_dict
    from s5cli.train import checkpoint as ckpt

    source = tmp_path / "tiny.yaml"
    source.write_bytes((REPO_ROOT / "recipes" / "synthetic.yaml").read_bytes())
    sizes = [f"model.{k}={v}" for k, v in TINY_MODEL.items() if k != "name"]
    recipe = recipe_to_dict(load_recipe(source, sizes + overrides))
    model = build_model("s5", {k: v for k, v in TINY_MODEL.items() if k != "name"}, 9)
    metadata = {"model_name": "s5", "num_outputs": "9", "recipe": json.dumps(recipe), "step": "3",
                "objective": "supervised"}
    run = tmp_path / "run"
    ckpt.save_checkpoint(run / "best", model, metadata, metrics={"top1": 0.5, "count": 4})
    return run


def _push(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "400"})


def _warnings(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("warning:")]


def test_the_published_recipe_names_the_repo_it_is_pushed_to(hub: FakeHub, tmp_path: Path) -> None:
    """It kept the source recipe's hub.repo_id (alice/s5-synth) under a header naming erin/from-init, so a
    run finetuned from it pushed to alice's repo by default."""
    run = _run(tmp_path, ["hub.repo_id=alice/s5-synth", "hub.revision=v1"])
    result = _push("push", str(run), "erin/from-init", "--revision", "exp")
    assert result.exit_code == 0, result.output
    text = hub.files("erin/from-init", "exp")["recipe.yaml"].decode()
    assert text.startswith("# Resolved s5cli recipe of erin/from-init\n")
    assert yaml.safe_load(text)["hub"] == {"repo_id": "erin/from-init", "revision": "exp"}
    result = _push("push", str(run), "erin/main-only")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(hub.files("erin/main-only")["recipe.yaml"])["hub"] == {
        "repo_id": "erin/main-only", "revision": None}


def test_a_push_to_the_recipes_own_repo_keeps_its_hub_section(hub: FakeHub, tmp_path: Path) -> None:
    run = _run(tmp_path, ["hub.repo_id=alice/s5-synth", "hub.revision=v1"])
    assert _push("push", str(run)).exit_code == 0
    assert yaml.safe_load(hub.files("alice/s5-synth", "v1")["recipe.yaml"])["hub"] == {
        "repo_id": "alice/s5-synth", "revision": "v1"}


def test_a_checkpoint_push_names_the_keys_holding_absolute_local_paths(hub: FakeHub, tmp_path: Path) -> None:
    result = _push("push", str(_run(tmp_path, ABSOLUTE)), "erin/abs")
    assert result.exit_code == 0, result.output
    warnings = _warnings(result.output)
    assert len(warnings) == 1, result.output
    assert "data.cache_dir, data.root" in warnings[0] and "absolute paths" in warnings[0]
    assert "/home/alice" not in result.output  # the keys are named, the paths need not be printed again
    # Published as they are: the warning does not rewrite the recipe.
    assert yaml.safe_load(hub.files("erin/abs")["recipe.yaml"])["data"]["root"] == "/home/alice/private/videos"


def test_a_recipe_push_names_the_keys_holding_absolute_local_paths(hub: FakeHub, recipe_file: Path) -> None:
    absolute = recipe_file.with_name("abs.yaml")
    absolute.write_text(recipe_file.read_text() + "\n", encoding="utf-8")
    text = yaml.safe_load(absolute.read_text())
    text["data"]["root"] = "/home/alice/private/videos"
    absolute.write_text(yaml.safe_dump(text), encoding="utf-8")
    result = _push("recipes", "push", str(absolute), "erin/recipes")
    assert result.exit_code == 0, result.output
    warnings = _warnings(result.output)
    assert len(warnings) == 1 and "data.root" in warnings[0] and "data.cache_dir" not in warnings[0], result.output
    assert hub.files("erin/recipes")["abs.yaml"] == absolute.read_bytes()


def test_relative_and_unset_paths_push_without_a_warning(hub: FakeHub, recipe_file: Path, tmp_path: Path) -> None:
    run = _run(tmp_path, ["data.root=videos", "train.init=null"])
    for args in (("push", str(run), "erin/rel"), ("recipes", "push", str(recipe_file), "erin/rel-recipes")):
        result = _push(*args)
        assert result.exit_code == 0, result.output
        assert _warnings(result.output) == [], result.output
