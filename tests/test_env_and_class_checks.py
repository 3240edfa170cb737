"""Mistakes in the environment and in the data's settings that ended in tracebacks or exhausted memory:
torchrun variables that are garbage or partial, a file name too long, a transformer too small for its
frames, and a typo in a class id. Each is now one line naming what to change."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from s5cli.cli.app import app
from s5cli.data.datasets import task_info
from s5cli.data.datasets.base import AnnotationError
from s5cli.data.datasets.lvu import CLASSIFICATION_TASKS
from s5cli.errors import UserError
from s5cli.recipe import load_recipe
from tests.test_recipe import SYNTHETIC, error_of

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No torchrun variable from the shell running the tests."""
    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def one_line(output: str) -> str:
    return " ".join(output.split())


# ---------------------------------------------------------------------------------------- torchrun variables
def test_a_world_size_that_is_not_a_number_is_named_where_it_is_used(clean_env: pytest.MonkeyPatch) -> None:
    """`WORLD_SIZE=abc s5 recipes ls` was a traceback; a command that never uses processes ignores it, and
    one that does (`finetune` joins a group) names it."""
    from s5cli.torchrun_env import world_size

    clean_env.setenv("WORLD_SIZE", "abc")
    listed = CliRunner().invoke(app, ["recipes", "ls"])
    assert listed.exit_code == 0, listed.output
    with pytest.raises(UserError, match="WORLD_SIZE='abc' is not a whole number: unset it, or start the command "
                                        "with torchrun"):
        world_size()


@pytest.mark.parametrize("value", ["x", "-1", "1.5"])
def test_a_rank_that_is_not_a_whole_number_is_named_where_extraction_reads_it(
        clean_env: pytest.MonkeyPatch, value: str) -> None:
    from s5cli.data.extract import resolve_shard

    clean_env.setenv("WORLD_SIZE", "2")
    clean_env.setenv("RANK", value)
    with pytest.raises(UserError, match=rf"RANK='{value}' is not a whole number"):
        resolve_shard(None)


def test_blank_variables_keep_their_defaults(clean_env: pytest.MonkeyPatch) -> None:
    from s5cli.data.extract import resolve_shard

    clean_env.setenv("WORLD_SIZE", "")
    clean_env.setenv("RANK", " ")
    assert resolve_shard(None) == (0, 1)


def test_the_other_readers_name_the_variable(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from s5cli.cli.extract import shares_with_other_ranks
    from s5cli.data.extract import resolve_shard
    from s5cli.train.run_lock import hold_run_folder

    clean_env.setenv("WORLD_SIZE", "two")
    assert not shares_with_other_ranks(None)  # not torchrun's: no group to join
    with pytest.raises(UserError, match="WORLD_SIZE='two'"):
        resolve_shard(None)  # the share extraction takes names it
    clean_env.setenv("RANK", "zero")
    with pytest.raises(UserError, match="RANK='zero'"):
        hold_run_folder(tmp_path / "run")


def test_a_local_rank_that_is_not_a_number_is_named_before_a_gpu_is_chosen(clean_env: pytest.MonkeyPatch) -> None:
    import torch

    from s5cli.train.distributed import pick_device

    clean_env.setattr(torch.cuda, "is_available", lambda: True)
    clean_env.setattr(torch.cuda, "device_count", lambda: 2)
    clean_env.setenv("WORLD_SIZE", "2")
    clean_env.setenv("LOCAL_RANK", "first")
    with pytest.raises(UserError, match="LOCAL_RANK='first' is not a whole number"):
        pick_device("cuda")


@pytest.mark.parametrize(("present", "missing"), [
    ({}, "RANK, MASTER_ADDR, MASTER_PORT are not set"),
    ({"RANK": "0"}, "MASTER_ADDR, MASTER_PORT are not set"),
    ({"RANK": "1", "MASTER_ADDR": "127.0.0.1"}, "MASTER_PORT is not set"),
])
def test_a_partial_torchrun_environment_names_what_is_missing_before_joining_a_group(
        clean_env: pytest.MonkeyPatch, present: dict[str, str], missing: str) -> None:
    """WORLD_SIZE=2 alone was a KeyError 'RANK'; with RANK, torch's "MASTER_ADDR expected" traceback."""
    from s5cli.train.distributed import init_distributed

    clean_env.setenv("WORLD_SIZE", "2")
    for name, value in present.items():
        clean_env.setenv(name, value)
    with pytest.raises(UserError, match=f"WORLD_SIZE=2 but {missing}: start the command with torchrun, or unset"):
        init_distributed("cpu")


def test_a_rank_past_the_world_size_is_refused_before_the_rendezvous(clean_env: pytest.MonkeyPatch) -> None:
    from s5cli.train.distributed import init_distributed

    for name, value in (("WORLD_SIZE", "2"), ("RANK", "2"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "1")):
        clean_env.setenv(name, value)
    with pytest.raises(UserError, match="RANK=2 is not below WORLD_SIZE=2"):
        init_distributed("cpu")


def test_one_process_stays_without_a_group(clean_env: pytest.MonkeyPatch) -> None:
    from s5cli.train.distributed import init_distributed

    clean_env.setenv("WORLD_SIZE", "1")
    context = init_distributed("cpu")
    assert (context.rank, context.world_size) == (0, 1)


# ---------------------------------------------------------------------------------------- a file name too long
def test_a_file_name_too_long_is_a_path_mistake_with_its_fix(tmp_path: Path) -> None:
    dest = tmp_path / ("x" * 300 + ".yaml")
    result = CliRunner().invoke(app, ["recipes", "cp", "synthetic", str(dest)])
    assert result.exit_code == 2, result.output
    assert "File name too long (a name in the path is too long: use a shorter name)" in one_line(result.output)


# ---------------------------------------------------------------------------------------- transformer positions
def test_more_tokens_per_frame_than_the_transformer_embeds_is_refused_up_front() -> None:
    """It crashed at the first training step, after every video had been extracted."""
    message = error_of(SYNTHETIC, ("model.name=transformer", "data.image_size=272"))
    assert "model.max_tokens_per_frame=256 < 290 tokens per frame of data.image_size=272" in message
    assert "raise it to at least 290" in message
    load_recipe(SYNTHETIC, ("model.name=transformer", "data.image_size=272", "model.max_tokens_per_frame=290"))
    load_recipe(SYNTHETIC, ("data.image_size=272",))  # S5 has no position table


def test_longer_clips_than_the_transformer_embeds_are_refused_up_front() -> None:
    message = error_of(SYNTHETIC, ("model.name=transformer", "model.max_frames=8"))
    assert "model.max_frames=8 < 16 frames per clip: raise it to at least 16" in message
    message = error_of(SYNTHETIC, ("model.name=transformer", "train.objective=lsmcl", "data.frame_pool=64",
                                   "train.lsmcl.long_frames=40", "model.max_frames=32"))
    assert "model.max_frames=32 < 40 frames per clip" in message


# ---------------------------------------------------------------------------------------- class id typos
def copy_lvu(shared_data_dir: Path, tmp_path: Path, task: str) -> Path:
    folder = tmp_path / "lvu_1.0"
    shutil.copytree(shared_data_dir / "lvu_1.0" / task, folder / task)
    return folder


def test_a_typo_in_an_lvu_class_id_names_its_line_instead_of_exhausting_memory(
        shared_data_dir: Path, tmp_path: Path) -> None:
    folder = copy_lvu(shared_data_dir, tmp_path, "scene")
    train = folder / "scene" / "train.csv"
    lines = len(train.read_text().splitlines())
    with train.open("a") as handle:
        handle.write("999999999999 typo bikes_1 tt\n")
    data = {"dataset": "lvu", "task": "scene", "root": tmp_path, "annotations": folder}
    with pytest.raises(AnnotationError, match=rf"train\.csv:{lines + 1}: class id 999999999999 is far above the "
                       r"other 6 class ids \(the largest 5\): class ids number the classes from 0; correct the typo"):
        task_info(data)


@pytest.mark.parametrize("task", CLASSIFICATION_TASKS)
def test_the_real_lvu_class_ids_are_all_taken(shared_data_dir: Path, task: str) -> None:
    data = {"dataset": "lvu", "task": task, "root": shared_data_dir, "annotations": shared_data_dir / "lvu_1.0"}
    assert task_info(data).num_outputs >= 2


def test_a_typo_in_a_breakfast_class_id_names_its_line(shared_data_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(shared_data_dir / "Breakfast", tmp_path / "Breakfast")
    test = tmp_path / "Breakfast" / "test.csv"
    lines = len(test.read_text().splitlines())
    with test.open("a") as handle:
        handle.write("P46-webcam02-P46_tea,87,tea,20000\n")
    data = {"dataset": "breakfast", "root": tmp_path, "annotations": tmp_path / "Breakfast"}
    with pytest.raises(AnnotationError, match=rf"test\.csv:{lines + 1}: class id 20000 is far above"):
        task_info(data)
    assert task_info({**data, "annotations": shared_data_dir / "Breakfast"}).num_outputs == 10


def test_a_typo_in_a_coin_recipe_type_names_the_video(tmp_path: Path) -> None:
    database = {f"video{i:06d}": {"recipe_type": i, "class": f"Task{i}", "subset": "training"} for i in range(5)}
    database["typo0000000"] = {"recipe_type": 1790, "class": "Task179", "subset": "training"}
    path = tmp_path / "COIN.json"
    path.write_text(json.dumps({"database": database}))
    data = {"dataset": "coin", "root": tmp_path, "annotations": path}
    with pytest.raises(AnnotationError, match=r"COIN\.json: database\['typo0000000'\]\.recipe_type 1790 is far above"):
        task_info(data)
    database["typo0000000"]["recipe_type"] = 179  # a subset of COIN's 180 tasks keeps its numbers
    path.write_text(json.dumps({"database": database}))
    assert task_info(data).num_outputs == 180


def test_the_class_id_limit() -> None:
    from s5cli.data.datasets.base import class_id_limit

    assert class_id_limit(2) == 1_000  # a subset of COIN's 180 tasks, or of any dataset here
    assert class_id_limit(180) == 1_800
    assert class_id_limit(5_000) == 10_000  # the hard cap: beyond it the confusion matrix alone is gigabytes


def test_a_lone_class_id_far_too_large_is_worded_for_one_id(tmp_path: Path) -> None:
    from s5cli.data.datasets.base import check_class_ids

    with pytest.raises(AnnotationError) as info:
        check_class_ids([(99999, tmp_path / "train.csv", 2, "class id")])
    assert "class id 99999 is the only class id, far above 1000" in str(info.value)
    assert "None" not in str(info.value)
