"""Recipe validation: unknown keys with the closest one, types, ranges, rules across keys, which model's
fields apply; every problem one line that says whether the file or the command line is to blame."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from s5cli.recipe import bundled_recipes_dir, load_recipe, model_config
from tests.test_recipe import SYNTHETIC, error_of, write


def test_unknown_key_names_file_key_and_closest_key(tmp_path: Path) -> None:
    path = write(tmp_path, "optim:\n  lrr: 0.1\n")
    message = error_of(path)
    assert str(path) in message and "optim.lrr" in message and "did you mean optim.lr?" in message


def test_unknown_section_is_reported(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "optimizer:\n  lr: 0.1\n"))
    assert "unknown section 'optimizer'" in message and "did you mean optim" in message


def test_unknown_model_key_suggests_the_model_field(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "model:\n  name: s5\n  keep_ration: 0.5\n"))
    assert "model.keep_ration" in message and "did you mean model.keep_ratio?" in message


def test_wrong_type_names_key_value_and_expected_type(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "train:\n  epochs: ten\n"))
    assert "train.epochs='ten'" in message and "wrong type" in message and "integer" in message


@pytest.mark.parametrize("value", ["0", "1.5", "-0.2"])
def test_keep_ratio_out_of_range(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, f"model:\n  name: s5\n  keep_ratio: {value}\n")
    message = error_of(path)
    assert str(path) in message and f"model.keep_ratio={value}" in message and "(0, 1]" in message


def test_lsmcl_with_one_video_a_batch_and_no_queue_is_refused() -> None:
    """Its loss is exactly 0 (no negatives): it once trained for hours learning nothing, without a word."""
    message = error_of(SYNTHETIC, ("train.objective=lsmcl", "train.batch_size=1"))
    assert "train.batch_size=1 with LSMCL and no queue" in message
    load_recipe(SYNTHETIC, ("train.objective=lsmcl", "train.batch_size=1", "train.lsmcl.queue_size=8"))
    load_recipe(SYNTHETIC, ("train.batch_size=1",))  # supervised: fine


def test_whole_video_clips_in_batches_of_more_than_one_are_refused() -> None:
    """data.fps with data.frames and data.window_seconds null makes each clip a whole video: the recipe was
    accepted, every video extracted (hours), then the first batch of two lengths died in a traceback."""
    breakfast = bundled_recipes_dir() / "breakfast.yaml"
    message = error_of(breakfast, ("data.fps=1", "data.frames=null"))
    assert "each clip is a whole video" in message and "set data.window_seconds" in message
    assert "train.batch_size=" in message and "eval.batch_size=" in message
    load_recipe(breakfast, ("data.fps=1", "data.frames=null", "train.batch_size=1", "eval.batch_size=1"))
    load_recipe(breakfast, ("data.fps=1", "data.frames=64"))  # a clip length: fine
    lvu = bundled_recipes_dir() / "lvu" / "genre.yaml"
    assert "each clip is a whole video" in error_of(lvu, ("data.window_seconds=null", "data.frames=null"))
    # LSMCL pretraining cuts every clip to train.lsmcl.long_frames: its batches stack whatever the videos.
    load_recipe(breakfast, ("data.fps=1", "data.frames=null", "train.objective=lsmcl", "optim.schedule=cosine"))


def test_lsmcl_with_the_plateau_schedule_is_refused() -> None:
    """The plateau schedule steps on validation metrics, which pretraining has none of: the rate stayed at
    optim.lr and the warm-up was skipped, without a word."""
    message = error_of(SYNTHETIC, ("train.objective=lsmcl", "optim.schedule=plateau"))
    assert "optim.schedule=plateau lowers the rate when validation stalls, and LSMCL pretraining has no " \
           "validation: use cosine or constant" in " ".join(message.split())
    load_recipe(SYNTHETIC, ("train.objective=lsmcl", "optim.schedule=cosine"))
    load_recipe(SYNTHETIC, ("optim.schedule=plateau",))  # supervised: fine


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optim.lr=0", "optim.lr=0 is not allowed: must be > 0"),
        ("data.frames=0", "data.frames=0 is not allowed: must be >= 1"),
        ("train.batch_size=0", "train.batch_size=0"),
        ("optim.schedule=cosin", "did you mean cosine?"),
        ("optim.betas=[0.9]", "a list of 2 numbers"),
        ("data.image_size=100", "a multiple of 16"),
        ("model.d_model=100", "divisible by 2**model.n_blocks"),
        ("model.n_blocks=20", "divisible by 2**model.n_blocks"),  # the rule names d_model; the override broke it
        ("model.d_input=1024", "set model.d_input=96"),
        ("data.backbone=vit_larg", "did you mean vit_large_patch16_224?"),
        ("model.name=s55", "unknown model 's55'"),
        ("train.lsmcl.mask_ratio=1.0", "train.lsmcl.mask_ratio=1.0"),
        ("data.synthetic.clutter=2", "data.synthetic.clutter=2"),
        ("data.dataset=lvu", "data.task is not set"),
        # A recipe written without `dataset:` is the synthetic task: another dataset's keys say it was not meant.
        ("data.task=genre", "data.task=genre is an LVU task, but data.dataset is synthetic: set data.dataset: lvu"),
        ("data.annotations=data/lvu_1.0", "data.annotations names split files, which the synthetic task does not read"),
        ("eval.batch_size=99999999999999999999", "is too large: use a value of at most 9223372036854775807"),
        ("eval.window_stride=17", "eval.window_stride=17 is longer than a clip (16 frames)"),
        ("eval.window_stride=0", "eval.window_stride=0 is not allowed"),
        ("data.prefetch_batches=0", "data.prefetch_batches=0 is not allowed: must be >= 1"),
        ("hub.repo_id=bad", "hub.repo_id='bad' is not a Hub repo id"),  # what `s5 push` would refuse
        ("data.synthetic.num_event_types=1", "makes a task of one class"),
        ("hub.repo_id=a--b/c", "hub.repo_id='a--b/c' is not a Hub repo id"),
    ],
)
def test_out_of_range_and_inconsistent_values(override: str, expected: str) -> None:
    message = error_of(SYNTHETIC, (override,))
    assert expected in message
    assert "command-line override" in message


def test_an_lsmcl_long_clip_longer_than_the_cached_frames_is_refused() -> None:
    """Uniform sampling caches data.frames a video: a longer clip repeated the last frame, without a word."""
    message = error_of(SYNTHETIC, ("train.objective=lsmcl", "train.lsmcl.long_frames=1000",
                                   "train.lsmcl.short_frames=999"))
    assert "train.lsmcl.long_frames=1000 is more frames than the 16 each video has cached" in message
    load_recipe(SYNTHETIC, ("train.objective=lsmcl", "train.lsmcl.long_frames=32", "data.frame_pool=32",
                            "data.synthetic.frames=32"))  # a pool of 32 needs videos of 32 frames
    load_recipe(SYNTHETIC, ("train.lsmcl.long_frames=1000", "train.lsmcl.short_frames=999"))  # supervised: unused


def test_a_rule_broken_by_the_file_alone_does_not_blame_the_command_line(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "model:\n  d_model: 100\n"), ("optim.lr=0.01",))
    assert message.startswith(f"{tmp_path / 'r.yaml'}: model.d_model=100 must be divisible")


@pytest.mark.parametrize("value", ["1e400", ".nan", "-.inf"])
def test_a_number_that_is_not_finite_is_named_so(value: str) -> None:
    assert "is not a finite number" in error_of(SYNTHETIC, (f"optim.lr={value}",))


def test_yaml_1_1_exponent_floats_are_numbers(tmp_path: Path) -> None:
    # PyYAML reads `1e-3` (no dot) as a string; the schema still takes it as a number.
    recipe = load_recipe(write(tmp_path, "optim:\n  lr: 1e-3\n  weight_decay: 5e-2\n"))
    assert recipe.optim.lr == pytest.approx(1e-3) and recipe.optim.weight_decay == pytest.approx(0.05)


def test_model_name_selects_the_config_class(tmp_path: Path, capsys) -> None:
    # The synthetic recipe carries S5 fields: switching the model is one override; the other model's settings
    # are named in a warning and left out, and a key no model has is still an error.
    for name, dropped, kept in (("s4", "model.keep_ratio", "n_blocks"), ("transformer", "model.n_blocks", "heads")):
        recipe = load_recipe(SYNTHETIC, (f"model.name={name}",))
        warning = capsys.readouterr().err
        assert f"{dropped}" in warning and f"not used by model.name={name} (command line)" in warning
        assert f"{SYNTHETIC}: " in warning and "command-line override" not in warning  # the keys are the file's
        assert kept in dataclasses.asdict(model_config(recipe)) and dropped.split(".")[1] not in vars(recipe.model)
    assert "unknown key model.keep_ration" in error_of(SYNTHETIC, ("model.name=s4", "model.keep_ration=0.5"))
    recipe = load_recipe(write(tmp_path, "model:\n  name: vit\n  d_model: 64\n  heads: 4\n"))
    config = model_config(recipe)
    assert type(config).__name__ == "VideoTransformerConfig" and config.d_input == 96  # = patch_pool width
    assert "model.heads=5 must divide" in error_of(tmp_path / "r.yaml", ("model.heads=5",))
