"""Recipe review findings: deep nesting (file, override), --out beside train.out_dir, bare keys before
model.name, line numbers of a file's bad keys, synthetic videos shorter than a clip, `recipes cp` names and
destinations, values YAML reads as a mapping or list, a second YAML document, quoted integers and empty values."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from s5cli.cli.app import app
from s5cli.errors import UserError
from s5cli.recipe import load_recipe, load_recipe_text
from s5cli.recipe_yaml import MAX_YAML_DEPTH
from s5cli.train.run_folder import out_dir_for
from tests.test_recipe import SYNTHETIC, error_of, write


# ------------------------------------------------------------------------------------ deep nesting
def test_a_deeply_nested_recipe_file_is_one_line_naming_the_file_and_line(tmp_path: Path) -> None:
    """400 `[` ended in a RecursionError traceback (exit 1): PyYAML composes nested values by recursion."""
    path = write(tmp_path, "optim:\n  lr: " + "[" * 400 + "]" * 400 + "\n", "deep.yaml")
    message = error_of(path)
    assert message.startswith(f"{path}: too deeply nested at line 2, column ")
    assert f"more than {MAX_YAML_DEPTH} levels" in message


def test_a_deeply_nested_hub_recipe_is_refused_the_same_way() -> None:
    """`s5 recipes pull` validates a downloaded recipe with load_recipe_text: the same parser."""
    text = "data:\n  root: " + "{a: " * 300 + "1" + "}" * 300 + "\n"
    with pytest.raises(UserError, match=r"^hf://o/n/r\.yaml: too deeply nested at line 2"):
        load_recipe_text(text, "hf://o/n/r.yaml")


def test_a_deeply_nested_override_is_one_line_naming_the_key() -> None:
    message = error_of(SYNTHETIC, ("optim.lr=" + "[" * 1000 + "]" * 1000,))
    assert message.startswith(f"override optim.lr=...: more than {MAX_YAML_DEPTH} levels")


def test_a_look_ahead_at_a_deeply_nested_file_is_none() -> None:
    """For `s5 finetune`'s look at train.objective before loading (yaml.safe_load raised RecursionError)."""
    from s5cli.recipe_yaml import peek_recipe_yaml

    assert peek_recipe_yaml("optim:\n  lr: " + "[" * 5000 + "]" * 5000 + "\n") is None
    assert peek_recipe_yaml("train:\n  objective: lsmcl\n") == {"train": {"objective": "lsmcl"}}


def test_nesting_up_to_the_cap_is_only_a_type_problem(tmp_path: Path) -> None:
    depth = MAX_YAML_DEPTH - 3  # the top mapping, optim: and lr: are three levels
    message = error_of(write(tmp_path, "optim:\n  lr: " + "[" * depth + "]" * depth + "\n"))
    assert "optim.lr=" in message and "has the wrong type" in message


# ----------------------------------------------------------------------- --out beside train.out_dir
def test_out_and_another_train_out_dir_override_are_refused(tmp_path: Path) -> None:
    """`--out a train.out_dir=b` trained into a/ while RUN/recipe.yaml listed the override; --seed and another
    train.seed were already refused."""
    for key in ("train.out_dir", "out_dir"):
        overrides = [f"{key}={tmp_path / 'b'}"]
        recipe = load_recipe(SYNTHETIC, overrides)
        with pytest.raises(UserError, match=r"^--out .*/a and the override train\.out_dir=.*/b both set the run folder"):
            out_dir_for(recipe, tmp_path / "a", str(SYNTHETIC), overrides)


def test_out_and_the_same_train_out_dir_override_are_one_folder(tmp_path: Path) -> None:
    overrides = [f"train.out_dir={tmp_path / 'a'}/"]
    recipe = load_recipe(SYNTHETIC, overrides)
    assert out_dir_for(recipe, tmp_path / "a", str(SYNTHETIC), overrides) == tmp_path / "a"
    assert out_dir_for(load_recipe(SYNTHETIC), tmp_path / "a", str(SYNTHETIC), []) == tmp_path / "a"


def test_out_relative_and_train_out_dir_absolute_are_one_folder(tmp_path: Path, monkeypatch) -> None:
    """`--out runs/x train.out_dir=$PWD/runs/x` named one folder twice and was refused as two."""
    monkeypatch.chdir(tmp_path)
    overrides = [f"train.out_dir={tmp_path / 'runs' / 'x'}"]
    recipe = load_recipe(SYNTHETIC, overrides)
    assert out_dir_for(recipe, Path("runs/x"), str(SYNTHETIC), overrides) == Path("runs/x")
    assert out_dir_for(recipe, Path("./runs/../runs/x"), str(SYNTHETIC), overrides) == Path("runs/../runs/x")


def test_a_checkpoints_stored_recipe_errors_name_no_line(tmp_path: Path) -> None:
    """A checkpoint's recipe is YAML s5cli dumps from stored JSON: "(line 93)" pointed at no file the user has."""
    from s5cli.recipe import recipe_to_dict
    from s5cli.train.loading import recipe_from_checkpoint

    stored = recipe_to_dict(load_recipe(SYNTHETIC))
    stored["train"]["bogus"] = 1
    with pytest.raises(UserError) as error:
        recipe_from_checkpoint(stored, source="runs/x/checkpoints/step-5")
    assert "unknown key train.bogus" in str(error.value) and "(line" not in str(error.value)


# ------------------------------------------------------------------------ bare keys and model.name
@pytest.mark.parametrize("overrides", [
    ("heads=4", "model.name=transformer"),
    ("model.name=transformer", "heads=4"),
    ("heads=4", "name=transformer"),
])
def test_a_bare_key_reads_the_model_named_anywhere_on_the_command_line(overrides: tuple[str, ...]) -> None:
    recipe = load_recipe(SYNTHETIC, overrides)
    assert recipe.model.name == "transformer" and recipe.model.heads == 4


# ----------------------------------------------------------------------------- line numbers of keys
@pytest.mark.parametrize(("text", "expected"), [
    ("data:\n  dataset: synthetic\ntrain:\n  epochs: ten\n", "(line 4): train.epochs='ten' has the wrong type"),
    ("train:\n  epochs: 2\n  bogus: 1\n", "(line 3): unknown key train.bogus"),
    ("optim:\n  lr: 0.1\n\nmodel:\n  keep_ratio: 0\n", "(line 5): model.keep_ratio=0 is not allowed"),
    ("bogus: 1\n", "(line 1): unknown section 'bogus'"),
    ("train: 5\n", "(line 1): train=5 must be a mapping"),
    ("model:\n  name: nope\n", "(line 2): model.name='nope'"),
    ("data:\n  synthetic:\n    clutter: 2\n", "(line 3): data.synthetic.clutter=2 is not allowed"),
    ("train:\n  lsmcl:\n    mask_ratio: 1\n", "(line 3): train.lsmcl.mask_ratio=1 is not allowed"),
])
def test_a_files_bad_key_names_its_line(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    assert error_of(path).startswith(f"{path} {expected}")


def test_a_key_set_by_an_override_names_the_command_line_not_a_line(tmp_path: Path) -> None:
    path = write(tmp_path, "train:\n  epochs: 2\n")
    assert error_of(path, ("train.epochs=ten",)).startswith(f"{path} (command-line override): train.epochs=")


def test_merged_keys_name_the_line_they_were_written_on(tmp_path: Path) -> None:
    path = write(tmp_path, "train:\n  batch_size: 2\n  <<:\n    epochs: ten\n")
    assert error_of(path).startswith(f"{path} (line 4): train.epochs='ten'")


# ------------------------------------------------------------------------- synthetic videos' frames
@pytest.mark.parametrize(("overrides", "expected"), [
    (("data.frames=64",), "data.frames=64 is more frames than the synthetic videos have (data.synthetic.frames=16): "
                          "each would repeat its last frame 48 times"),
    (("data.frame_pool=32",), "data.frame_pool=32 is more frames than the synthetic videos have"),
    (("data.synthetic.frames=8",), "data.frames=16 is more frames than the synthetic videos have"),
])
def test_clips_longer_than_the_synthetic_videos_are_refused(overrides: tuple[str, ...], expected: str) -> None:
    message = error_of(SYNTHETIC, overrides)
    assert expected in message and "command-line override" in message


def test_clips_as_long_as_the_synthetic_videos_or_at_a_rate_are_fine() -> None:
    load_recipe(SYNTHETIC, ("data.frames=64", "data.synthetic.frames=64"))
    load_recipe(SYNTHETIC, ("data.frames=8", "data.frame_pool=16"))
    load_recipe(SYNTHETIC, ("data.frames=64", "data.fps=8"))  # at a rate: not the frame count's business


# ----------------------------------------------------------------------------------- recipes cp
@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_cp_to_dash_prints_the_recipe(runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`cp synthetic -` wrote a file named `-`; `-` is standard output wherever s5cli takes it."""
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["recipes", "cp", "synthetic", "-"])
    assert result.exit_code == 0, result.output
    assert result.stdout == SYNTHETIC.read_text(encoding="utf-8")
    assert list(tmp_path.iterdir()) == []


def test_cp_to_an_empty_name_is_refused(runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`cp synthetic ""` wrote ./synthetic.yaml (Path("") is the working folder)."""
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["recipes", "cp", "synthetic", ""])
    assert result.exit_code == 2 and 'DEST "" names no file' in result.output
    assert list(tmp_path.iterdir()) == []


def test_cp_takes_a_recipe_spelled_as_show_takes_it(runner: CliRunner, tmp_path: Path) -> None:
    for name in ("recipes/synthetic.yaml", "recipes/lvu/genre.yaml", "synthetic.yaml"):
        dest = tmp_path / f"{name.replace('/', '_')}"
        result = runner.invoke(app, ["recipes", "cp", name, str(dest)])
        assert result.exit_code == 0, result.output
        assert dest.read_bytes() == (SYNTHETIC.parent / Path(name).relative_to(Path(name).parts[0])
                                     if name.startswith("recipes/") else SYNTHETIC).read_bytes()


def test_cp_of_a_folders_name_lists_its_recipes(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["recipes", "cp", "lvu", str(tmp_path / "x.yaml")])
    assert result.exit_code == 2
    assert "bundled recipes of a similar name: lvu/director, lvu/genre" in " ".join(result.output.split())
    assert not (tmp_path / "x.yaml").exists()


# ------------------------------------------------------------- command-line values YAML would reread
@pytest.mark.parametrize("value", ["/data/run: final", "C:", "- a", "? a"])
def test_a_value_yaml_reads_as_a_mapping_or_list_is_kept_as_typed(value: str) -> None:
    """`data.root=/data/run: final` was {'/data/run': 'final'}, "of the wrong type"."""
    assert load_recipe(SYNTHETIC, (f"data.root={value}",)).data.root == value


def test_a_number_field_given_such_a_value_is_told_to_quote_or_fix_it() -> None:
    message = error_of(SYNTHETIC, ("train.epochs=4: x",))
    assert "train.epochs='4: x' has the wrong type" in message and "as a mapping" in message


def test_flow_lists_stay_lists() -> None:
    assert load_recipe(SYNTHETIC, ("optim.betas=[0.8, 0.9]",)).optim.betas == [0.8, 0.9]


# ----------------------------------------------------------------------------- a second document
def test_a_second_yaml_document_says_to_remove_its_marker(tmp_path: Path) -> None:
    path = write(tmp_path, "optim:\n  lr: 0.1\n---\ntrain:\n  epochs: 1\n")
    assert error_of(path) == f"{path}: a recipe is one YAML document: remove the `---` at line 3"


# -------------------------------------------------------------------- quoted integers, empty values
def test_a_quoted_integer_is_told_to_drop_the_quotes(tmp_path: Path) -> None:
    """Refused still: a quoted integer is text (a quoted '1e-3' is taken as a float because YAML 1.1 read it as
    text, so recipes written for PyYAML quoted it; no integer was ever text)."""
    message = error_of(write(tmp_path, 'train:\n  epochs: "10"\n'))
    assert message.endswith("(line 2): train.epochs='10' has the wrong type: expected an integer "
                            "(quoted, so it is text: drop the quotes)")
    assert "drop the quotes" in error_of(SYNTHETIC, ("train.epochs='10'",))
    assert "drop the quotes" not in error_of(SYNTHETIC, ("train.epochs=ten",))


@pytest.mark.parametrize(("text", "overrides", "expected"), [
    ("train:\n  epochs:\n", (), "(line 2): train.epochs is empty: give an integer"),
    ("optim:\n  lr: 0.1\n", ("optim.lr=",), "(command-line override): optim.lr is empty: give a number"),
    ("optim:\n  lr: 0.1\n", ("optim.lr= ",), "(command-line override): optim.lr is empty: give a number"),
])
def test_an_empty_value_is_called_empty(tmp_path: Path, text: str, overrides: tuple[str, ...], expected: str) -> None:
    path = write(tmp_path, text)
    assert error_of(path, overrides) == f"{path} {expected}"


def test_an_explicit_null_is_still_named_as_written(tmp_path: Path) -> None:
    assert "train.epochs=null has the wrong type" in error_of(write(tmp_path, "train:\n  epochs: null\n"))
    assert "optim.lr=null has the wrong type" in error_of(SYNTHETIC, ("optim.lr=null",))
