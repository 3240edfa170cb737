"""Recipes: loading, overrides, unreadable files, data paths, bundled recipes, round trip.

The one-line errors of the checks against the schema are in test_recipe_validation.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from s5cli.errors import UserError
from s5cli.recipe import (
    bundled_recipes,
    check_data_paths,
    dump_recipe,
    load_recipe,
    load_recipe_spec,
    model_config,
    recipe_to_dict,
    save_recipe,
)

REPO = Path(__file__).resolve().parents[1]
SYNTHETIC = REPO / "recipes" / "synthetic.yaml"
LVU_TASKS = ("relationship", "way_speaking", "scene", "director", "genre", "writer", "year", "like_ratio", "view_count")


def write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path: Path, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(UserError) as info:
        load_recipe(path, overrides)
    message = str(info.value)
    assert "\n" not in message
    assert info.value.exit_code == 2
    return message


# ---------------------------------------------------------------------------------------- bad recipes
def test_a_key_given_twice_is_refused_with_its_line(tmp_path: Path) -> None:
    """PyYAML keeps the last value silently: `lr: 0.001` ... `lr: 1` would train at 1.0."""
    message = error_of(write(tmp_path, "optim:\n  lr: 0.001\n  weight_decay: 0.1\n  lr: 1\n"))
    assert "line 4" in message and "key 'lr' is given twice" in message
    merged = write(tmp_path, "base: &b {lr: 0.002}\noptim:\n  <<: *b\n  weight_decay: 0.1\n")
    message = error_of(merged)  # a merge key is not a repeat: the only complaint is the unknown section
    assert "is given twice" not in message and "unknown section 'base'" in message


def test_yaml_syntax_error_gives_line_number(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "data:\n  frames: 8\noptim:\n  lr: [0.1\n  wd: 2\n"))
    assert "YAML syntax error at line" in message
    line = int(message.split("at line ")[1].split(",")[0])
    assert 4 <= line <= 6


def test_list_recipe_empty_recipe_missing_recipe(tmp_path: Path) -> None:
    assert "holds a list" in error_of(write(tmp_path, "- data\n- model\n"))
    assert "is empty" in error_of(write(tmp_path, "", "empty.yaml"))
    assert "is empty" in error_of(write(tmp_path, "# only a comment\n", "comment.yaml"))
    assert "not found" in error_of(tmp_path / "nope.yaml")


@pytest.mark.parametrize(("typed", "meant"), [
    ("recipes/lvu.yaml", "lvu/director, lvu/genre, lvu/like_ratio, lvu/relationship, lvu/scene, ..."),
    ("lvu", "lvu/director, lvu/genre, lvu/like_ratio, lvu/relationship, lvu/scene, ..."),
    ("recipes/lvu/genr.yaml", "lvu/genre"), ("lvu/yeer", "lvu/year"), ("brekfast.yaml", "breakfast"),
    ("pretrain", "pretrain-lsmcl"),
])
def test_a_missing_recipe_names_the_bundled_ones_it_may_mean(typed: str, meant: str) -> None:
    with pytest.raises(UserError) as info:
        load_recipe_spec(typed)
    assert str(info.value) == (f"recipe {typed} not found; bundled recipes of a similar name: {meant} "
                               "(`s5 recipes ls` lists them all)")
    with pytest.raises(UserError, match=r"recipe notes.yaml not found \(`s5 recipes ls` lists the bundled ones\)$"):
        load_recipe_spec("notes.yaml")


def test_section_that_is_not_a_mapping(tmp_path: Path) -> None:
    assert "optim=3 must be a mapping" in error_of(write(tmp_path, "optim: 3\n"))
    # Also when an override reaches into it (`s5 finetune` adds train.objective itself): the file is named.
    message = error_of(write(tmp_path, "train: 5\n", "t.yaml"), ("train.objective=supervised",))
    assert message.endswith("t.yaml: train=5 must be a mapping of keys (a YAML section), not an int")
    assert "override" not in message


def test_a_folder_given_as_the_recipe_says_to_name_a_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"is a folder: name a recipe \.yaml file in it"):
        load_recipe(tmp_path)


def test_malformed_override() -> None:
    with pytest.raises(UserError, match="not key=value"):
        load_recipe(SYNTHETIC, ["optim.lr"])


def test_missing_data_root_is_one_line(tmp_path: Path) -> None:
    recipe = load_recipe(REPO / "recipes" / "coin.yaml", [f"data.root={tmp_path / 'absent'}"])
    with pytest.raises(UserError) as info:
        check_data_paths(recipe)
    assert "data.root" in str(info.value) and "absent" in str(info.value) and "\n" not in str(info.value)
    videos = tmp_path / "videos"
    videos.mkdir()
    recipe = load_recipe(REPO / "recipes" / "lvu" / "genre.yaml", [f"data.root={videos}", "data.annotations=null"])
    with pytest.raises(UserError, match=r"lvu_1\.0"):
        check_data_paths(recipe)
    check_data_paths(load_recipe(SYNTHETIC))  # generated: nothing to check
    check_data_paths(load_recipe(SYNTHETIC, [f"data.root={tmp_path / 'new'}"]))  # ... into a folder made then
    with pytest.raises(UserError, match=r"data.root=.*is a file: the synthetic videos are generated into a folder"):
        check_data_paths(load_recipe(SYNTHETIC, [f"data.root={SYNTHETIC}"]))


def test_a_bundled_recipes_data_root_fix_says_to_copy_it_not_to_edit_the_package(tmp_path: Path) -> None:
    """Installed, a bundled recipe lies in site-packages: the hint sent users to edit it there."""
    absent = f"data.root={tmp_path / 'absent'}"
    with pytest.raises(UserError) as info:
        check_data_paths(load_recipe_spec("breakfast", [absent]))
    assert "or set data.root in a copy of the bundled recipe: s5 recipes cp breakfast my.yaml" in str(info.value)
    with pytest.raises(UserError) as info:
        check_data_paths(load_recipe_spec("lvu/genre", [absent]))
    assert "s5 recipes cp lvu/genre my.yaml" in str(info.value)
    mine = write(tmp_path, (REPO / "recipes" / "breakfast.yaml").read_text(), "mine.yaml")
    with pytest.raises(UserError) as info:
        check_data_paths(load_recipe(mine, [absent]))
    assert f"or set data.root in {mine}" in str(info.value) and "recipes cp" not in str(info.value)


def test_a_saved_recipe_names_its_source_and_lists_its_overrides(tmp_path: Path) -> None:
    """The header said "and overrides" whether or not there were any, and never which."""
    save_recipe(load_recipe(SYNTHETIC), tmp_path / "plain.yaml")
    assert (tmp_path / "plain.yaml").read_text().startswith(f"# Resolved s5cli recipe (from {SYNTHETIC})\n")
    save_recipe(load_recipe(SYNTHETIC, ["train.epochs=3", "optim.lr=0.01"]), tmp_path / "changed.yaml")
    text = (tmp_path / "changed.yaml").read_text()
    assert text.startswith(f"# Resolved s5cli recipe (from {SYNTHETIC})\n# with overrides:\n#   train.epochs=3\n"
                           "#   optim.lr=0.01\n")
    assert load_recipe(tmp_path / "changed.yaml").train.epochs == 3  # still a recipe


def test_data_paths_accept_real_split_files(tmp_path: Path, shared_data_dir: Path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    recipe = load_recipe(REPO / "recipes" / "lvu" / "scene.yaml",
                         [f"data.root={videos}", f"data.annotations={shared_data_dir / 'lvu_1.0'}"])
    check_data_paths(recipe)
    recipe = load_recipe(REPO / "recipes" / "breakfast.yaml",
                         [f"data.root={videos}", f"data.annotations={shared_data_dir / 'Breakfast'}"])
    check_data_paths(recipe)


def test_annotation_paths_naming_a_file_are_not_looked_into(tmp_path: Path) -> None:
    """COIN's annotations are a file: a missing one is named as given, not as `COIN.json/COIN.json`;
    Breakfast's are a folder: naming its train.csv says to give the folder."""
    recipe = load_recipe(REPO / "recipes" / "coin.yaml", [f"data.root={tmp_path}", f"data.annotations={tmp_path}/COIN.json"])
    with pytest.raises(UserError) as info:
        check_data_paths(recipe)
    assert f"{tmp_path}/COIN.json not found" in str(info.value) and "COIN.json/COIN.json" not in str(info.value)
    (tmp_path / "train.csv").write_text("video,label\n")
    recipe = load_recipe(REPO / "recipes" / "breakfast.yaml",
                         [f"data.root={tmp_path}", f"data.annotations={tmp_path}/train.csv"])
    with pytest.raises(UserError, match=r"names a file: set it to the folder holding train.csv and test.csv"):
        check_data_paths(recipe)


# ------------------------------------------------------------------------------------------ overrides
def test_overrides_set_typed_values() -> None:
    recipe = load_recipe(
        SYNTHETIC,
        ["optim.lr=3e-4", "model.keep_ratio=0.25", "optim.betas=[0.8, 0.99]", "train.init=/ckpt", "data.root=null",
         "train.tensorboard=true", "data.synthetic.num_train=12", "train.epochs=3.0"],
    )
    assert recipe.optim.lr == pytest.approx(3e-4) and isinstance(recipe.optim.lr, float)
    assert recipe.model.keep_ratio == 0.25
    assert recipe.optim.betas == [0.8, 0.99]
    assert recipe.train.init == "/ckpt" and recipe.data.root is None and recipe.train.tensorboard is True
    assert recipe.data.synthetic.num_train == 12
    assert recipe.train.epochs == 3 and isinstance(recipe.train.epochs, int)


def test_bare_keys_name_their_section() -> None:
    recipe = load_recipe(SYNTHETIC, ["init=runs/x/best", "keep_ratio=0.75", "lr=0.01"])
    assert recipe.train.init == "runs/x/best" and recipe.model.keep_ratio == 0.75 and recipe.optim.lr == 0.01
    with pytest.raises(UserError, match="ambiguous"):
        load_recipe(SYNTHETIC, ["batch_size=4"])
    # Nested sections count: clutter is only data.synthetic's; momentum is S5's and LSMCL's, so ambiguous.
    assert load_recipe(SYNTHETIC, ["clutter=0.9"]).data.synthetic.clutter == 0.9
    with pytest.raises(UserError, match=r"use one of model\.momentum, train\.lsmcl\.momentum"):
        load_recipe(SYNTHETIC, ["momentum=0.5"])


def test_defaults_fill_a_minimal_recipe(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, "model:\n  name: s4\n  d_input: 96\n  d_model: 64\n"))
    config = model_config(recipe)
    assert type(config).__name__ == "DecoderConfig" and config.d_model == 64 and config.n_blocks == 3
    assert recipe.optim.schedule == "cosine" and recipe.eval.split == "test"
    assert type(recipe.train.lsmcl).__name__ == "LSMCLConfig"


# ------------------------------------------------------------------------------ bundled + round trip
def test_all_bundled_recipes_exist_and_validate() -> None:
    names = set(bundled_recipes())
    expected = {"synthetic", "breakfast", "coin", "pretrain-lsmcl", *(f"lvu/{t}" for t in LVU_TASKS)}
    assert expected <= names
    for name, path in bundled_recipes().items():
        recipe = load_recipe(path)
        assert model_config(recipe) is not None, name
        assert path.read_text().startswith("# "), f"{name} needs a top comment"
        if recipe.data.dataset != "synthetic":
            assert "data.root" in path.read_text(), f"{name} must say where the data goes"
    for task in LVU_TASKS:
        recipe = load_recipe(REPO / "recipes" / "lvu" / f"{task}.yaml")
        assert recipe.data.task == task and recipe.data.fps == 1.0 and recipe.data.window_seconds == 60
        assert recipe.model.d_input == 1024 and recipe.optim.plateau_patience == 1 and recipe.train.epochs == 100
    assert load_recipe(REPO / "recipes" / "pretrain-lsmcl.yaml").train.objective == "lsmcl"


def test_pretrain_recipe_reuses_the_synthetic_videos_and_model_shapes() -> None:
    """Its comment promises that `finetune recipes/synthetic.yaml data.synthetic.shared_background=true
    train.init=runs/pretrain-lsmcl` loads: the same task with one shared background, the same model shapes."""
    pretrain = load_recipe(REPO / "recipes" / "pretrain-lsmcl.yaml")
    finetune = load_recipe(SYNTHETIC, ["data.synthetic.shared_background=true"])
    assert pretrain.data.synthetic.shared_background and pretrain.data == finetune.data
    shapes = ("name", "d_input", "d_model", "n_blocks", "pool", "d_state", "kernel", "guide_channels", "mg_hidden")
    assert {k: getattr(pretrain.model, k) for k in shapes} == {k: getattr(finetune.model, k) for k in shapes}
    assert pretrain.train.lsmcl.long_frames <= pretrain.data.frames


def test_synthetic_recipe_matches_the_synthetic_task() -> None:
    recipe = load_recipe(SYNTHETIC)
    assert recipe.data.dataset == "synthetic" and recipe.data.backbone == "patch_pool"
    assert recipe.model.name == "s5" and recipe.model.d_model in (96, 128)
    assert recipe.data.frames == recipe.data.synthetic.frames
    assert recipe.data.image_size == recipe.data.synthetic.size
    # one grid cell = one 16 px backbone patch, so token s of a frame is grid cell s - 1
    assert recipe.data.synthetic.size // recipe.data.synthetic.grid == 16
    assert recipe.train.lsmcl.long_frames <= recipe.data.frames


@pytest.mark.parametrize("name", ["synthetic", "lvu/like_ratio", "pretrain-lsmcl", "coin"])
def test_round_trip_recipe_dict_yaml_recipe(tmp_path: Path, name: str) -> None:
    recipe = load_recipe(bundled_recipes()[name], ["optim.lr=2e-4"])
    as_dict = recipe_to_dict(recipe)
    assert list(as_dict) == ["data", "model", "optim", "train", "eval", "hub"]
    path = tmp_path / "saved.yaml"
    save_recipe(recipe, path)
    again = load_recipe(path)
    assert again == recipe
    assert recipe_to_dict(again) == as_dict
    assert yaml.safe_load(dump_recipe(recipe)) == as_dict
    assert dataclasses.asdict(model_config(again)) == dataclasses.asdict(model_config(recipe))
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write left no temp file


def test_feature_norm_rules_match_the_models_choices() -> None:
    from s5cli.models.batch_norm import FEATURE_NORMS
    from s5cli.recipe_schema import LSMCL_RULES, MODEL_RULES

    assert MODEL_RULES["head_norm"].choices == LSMCL_RULES["projector_norm"].choices == FEATURE_NORMS
