"""Recipe values as typed: YAML 1.2 numbers and booleans, text fields keeping their text, values YAML would cut, huge
numbers, whole nested sections, keys given twice, case in names and choices, control characters in paths,
and a folder that shares a bundled recipe's name."""

from __future__ import annotations

from pathlib import Path

import pytest

from s5cli.errors import UserError
from s5cli.recipe import load_recipe, load_recipe_spec, parse_overrides, recipe_to_dict, resolve_recipe_spec
from tests.test_recipe import SYNTHETIC, error_of, write


def value_of(key: str, overrides: tuple[str, ...] = (), path: Path = SYNTHETIC) -> object:
    """The resolved value of dotted `key` in the recipe at `path` with `overrides`."""
    node: object = recipe_to_dict(load_recipe(path, overrides))
    for part in key.split("."):
        node = node[part]  # type: ignore[index]
    return node


# --------------------------------------------------------------------------- numbers as YAML 1.2 reads them
@pytest.mark.parametrize(("override", "value"), [
    ("train.seed=0042", 42),  # YAML 1.1: octal 34
    ("train.seed=0o42", 34),
    ("train.epochs=0x10", 16),
    ("train.epochs=+5", 5),
    ("train.lsmcl.queue_size=65_536", 65536),  # digit groups, as recipes written for PyYAML use them
    ("optim.lr=.001", 0.001),
    ("optim.lr=1e-3", 0.001),
    ("optim.lr=1E-3", 0.001),
    ("train.amp=False", False),  # booleans as YAML 1.2 writes them: true/false in three cases
    ("train.amp=TRUE", True),
    # A text field keeps the text as typed: str() of the number it reads as was another name.
    ("hub.revision=0123456", "0123456"),  # YAML 1.1: octal, '42798'
    ("train.out_dir=2024_06_01", "2024_06_01"),  # YAML 1.1: 20240601
    ("train.out_dir=2024-01-01", "2024-01-01"),  # YAML 1.1: a date, "has the wrong type"
    ("data.root=0.10", "0.10"),
    ("data.root=1e3", "1e3"),
    ("hub.revision=0x1F", "0x1F"),
    ("data.root=null", None),
    ("train.out_dir=off", "off"),  # YAML 1.1: false, "has the wrong type"
    ("hub.revision=yes", "yes"),
    ("data.root=N", "N"),
])
def test_override_numbers_are_read_as_yaml_1_2_and_text_keeps_its_text(override: str, value: object) -> None:
    assert value_of(override.partition("=")[0], (override,)) == value


def test_base_60_is_no_number() -> None:
    """`2:00` was 120 (YAML 1.1's base 60)."""
    assert "data.synthetic.seed='2:00' has the wrong type: expected an integer" in error_of(
        SYNTHETIC, ("data.synthetic.seed=2:00",))


def test_numbers_in_a_file_are_read_as_yaml_1_2_and_text_fields_keep_their_text(tmp_path: Path) -> None:
    recipe = write(tmp_path, "train:\n  epochs: 017\n  out_dir: 2024_01\nhub:\n  revision: 0123\ndata:\n  root: 1.50\n")
    resolved = recipe_to_dict(load_recipe(recipe))
    assert resolved["train"]["epochs"] == 17  # YAML 1.1: octal 15
    assert (resolved["train"]["out_dir"], resolved["hub"]["revision"], resolved["data"]["root"]) == (
        "2024_01", "0123", "1.50")
    assert "train.epochs='2024-01-01' has the wrong type" in error_of(write(tmp_path, "train:\n  epochs: 2024-01-01\n"))


def test_yes_no_on_off_in_a_file_are_text(tmp_path: Path) -> None:
    """`out_dir: no` was false, and a text field refused it."""
    recipe = write(tmp_path, "train:\n  out_dir: no\nhub:\n  revision: On\n")
    resolved = recipe_to_dict(load_recipe(recipe))
    assert (resolved["train"]["out_dir"], resolved["hub"]["revision"]) == ("no", "On")


@pytest.mark.parametrize("text", ["yes", "off", "No", "Y"])
def test_a_true_false_field_given_yes_or_off_says_to_write_true_or_false(tmp_path: Path, text: str) -> None:
    assert error_of(SYNTHETIC, (f"train.amp={text}",)).endswith(
        f"train.amp={text!r} has the wrong type: expected true or false (YAML 1.2 reads {text!r} as text: write "
        "true or false)")
    message = error_of(write(tmp_path, f"model:\n  bidirectional: {text}\n"))
    assert message.endswith(f"model.bidirectional={text!r} has the wrong type: expected true or false (YAML 1.2 "
                            f"reads {text!r} as text: write true or false)")


# ----------------------------------------------------------------------------------------- huge numbers
def test_huge_numbers_are_one_line_errors_or_text() -> None:
    """A float of 400 digits raised OverflowError, and 5000 digits in a text field ValueError (str() of
    an int over 4300 digits)."""
    message = error_of(SYNTHETIC, ("optim.lr=1" + "0" * 400,))
    assert message.endswith("is too large: use a number below 1.8e308") and len(message) < 400
    message = error_of(SYNTHETIC, ("train.epochs=" + "1" * 5000,))
    assert message.endswith(f"is too large: use a value of at most {2**63 - 1}") and len(message) < 400
    assert value_of("data.root", ("data.root=" + "1" * 5000,)) == "1" * 5000


# ---------------------------------------------------------------------------------- values YAML would cut
@pytest.mark.parametrize("text", ["/data/Breakfast #2", "#x", "&a b", "*b", "!x y", "| z"])
def test_a_text_value_yaml_would_cut_is_kept_as_typed(text: str) -> None:
    """`data.root=/data/Breakfast #2` was '/data/Breakfast' (a comment), `#x` null and `&a b` 'b'."""
    assert value_of("data.root", (f"data.root={text}",)) == text


def test_a_number_yaml_would_cut_is_refused_with_the_fix() -> None:
    message = error_of(SYNTHETIC, ("train.epochs=5 # five",))
    assert message.startswith(f"{SYNTHETIC} (command-line override): train.epochs='5 # five' has the wrong type: "
                              "expected an integer (YAML reads '#' after a space as the start of a comment")
    assert "write the value alone, or quote it" in message


def test_a_quoted_value_is_yaml_to_read() -> None:
    assert value_of("data.root", ("data.root='a #b'",)) == "a #b"


# -------------------------------------------------------------------------------- whole nested sections
@pytest.mark.parametrize(("override", "example"), [
    ("data.synthetic={clutter: 0.2}", "data.synthetic.clutter=0.2"),
    ("data.synthetic=", "data.synthetic.clutter=0.2"),
    ("synthetic={clutter: 0.2}", "data.synthetic.clutter=0.2"),
    ("train.lsmcl=null", "train.lsmcl.mask_ratio=0.5"),
])
def test_a_value_for_a_whole_nested_section_is_refused(override: str, example: str) -> None:
    """It replaced the section: every key it did not name went back to its default."""
    message = error_of(SYNTHETIC, (override,))
    assert message.endswith(f"is a section; set one of its keys, e.g. {example}")


# ------------------------------------------------------------------------------------- keys given twice
def test_a_key_given_twice_with_two_values_is_refused() -> None:
    message = error_of(SYNTHETIC, ("train.epochs=5", "train.epochs=7"))
    assert message == "override train.epochs is given twice (train.epochs=5, then train.epochs=7): keep one"
    message = error_of(SYNTHETIC, ("train.epochs=5", "epochs=7"))  # a bare key names the same one
    assert message == "override train.epochs is given twice (train.epochs=5, then epochs=7): keep one"
    # The same value twice is no conflict: `s5 finetune R train.objective=supervised` adds its own.
    assert value_of("train.objective", ("train.objective=supervised", "train.objective=supervised")) == "supervised"


def test_seed_flag_and_a_seed_override_that_disagree_are_refused() -> None:
    from s5cli.train.job import recipe_objects

    with pytest.raises(UserError, match=r"^--seed 3 and the override train\.seed=4 both set train\.seed: give one$"):
        recipe_objects(str(SYNTHETIC), ["train.seed=4"], 3, check_paths=False)
    recipe = recipe_objects(str(SYNTHETIC), ["seed=3"], 3, check_paths=False)
    assert recipe.train.seed == 3
    # Listed once in RUN/recipe.yaml's header: `seed=3` and the `train.seed=3` --seed would add were both.
    assert recipe.overrides == ("seed=3",)


# ---------------------------------------------------------------------------------- names and choices
def test_model_names_and_choices_are_stored_in_their_own_spelling() -> None:
    recipe = load_recipe(SYNTHETIC, ("model.name=S5", "model.kernel=DPLR", "eval.split=Val"))
    assert (recipe.model.name, recipe.model.kernel, recipe.eval.split) == ("s5", "dplr", "val")
    assert "model.kernel='DPLRR' is not allowed: must be one of dplr, s4d (did you mean dplr?)" in error_of(
        SYNTHETIC, ("model.kernel=DPLRR",))
    assert error_of(SYNTHETIC, ("data.backbone=PATCH_POOL",)).endswith("(did you mean patch_pool?)")


# ------------------------------------------------------------------------------------ control characters
def test_a_control_character_in_a_path_is_refused(tmp_path: Path) -> None:
    """NUL passed validation and ended in a traceback ("embedded null byte") when the folder was made."""
    message = error_of(write(tmp_path, 'train:\n  out_dir: "\\x00bad"\n'))
    assert message.endswith("train.out_dir='\\x00bad' holds the control character '\\x00', which no path should: "
                            "remove it")
    assert "holds the control character '\\t'" in error_of(SYNTHETIC, ('data.root="a\\tb"',))


# ------------------------------------------------------------------------------------ recipe names
def test_a_folder_named_like_a_bundled_recipe_does_not_hide_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`mkdir synthetic; s5 recipes show synthetic` said "recipe synthetic is a folder"."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "synthetic").mkdir()
    assert Path(resolve_recipe_spec("synthetic")).resolve() == SYNTHETIC.resolve()
    assert load_recipe_spec("synthetic").data.dataset == "synthetic"
    (tmp_path / "mine").mkdir()  # a folder that is no bundled recipe is still named as one
    with pytest.raises(UserError, match="is a folder"):
        load_recipe_spec("mine")


def test_the_hint_for_a_json_file_suits_every_command() -> None:
    """It said `--json` prints on stdout, which `s5 eval --json FILE` does not."""
    with pytest.raises(UserError) as info:
        parse_overrides(["out.json"])
    assert "`--json FILE` where the command writes a file, `--json > FILE` where it prints" in str(info.value.hint)
