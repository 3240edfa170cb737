"""Where the bundled LVU recipes look for the split files: `<data.root>/lvu_1.0` unless data.annotations is set.

The recipes and `s5 extract --help` promise that data.root alone is enough; a hard-coded data.annotations in
the recipes once made that false (the default path was checked instead of the root's lvu_1.0).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from s5cli.cli.extract import extract
from s5cli.data.datasets import list_records, task_info
from s5cli.data.datasets.lvu import TASKS, annotations_dir
from s5cli.errors import UserError
from s5cli.recipe import bundled_recipes_dir
from s5cli.train.job import recipe_objects

RECIPES = bundled_recipes_dir() / "lvu"
SPLITS = ("train", "val", "test")


def copy_task(source: Path, lvu_dir: Path, task: str) -> None:
    """`<lvu_dir>/<task>/{train,val,test}.csv` copied from the real split files (at test time, into tmp)."""
    (lvu_dir / task).mkdir(parents=True)
    for split in SPLITS:
        shutil.copyfile(source / task / f"{split}.csv", lvu_dir / task / f"{split}.csv")


def youtube_ids(path: Path) -> list[str]:
    """The youtube_id column (second to last) of every data line, read independently of the adapter."""
    lines = [line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [fields[-2] for fields in lines[1:]]


@pytest.fixture(scope="module")
def real_lvu(shared_data_dir: Path) -> Path:
    return shared_data_dir / "lvu_1.0"


@pytest.fixture
def lvu_root(tmp_path: Path, real_lvu: Path) -> Path:
    """A data.root laid out as the recipes describe: clips beside lvu_1.0/relationship/{train,val,test}.csv."""
    root = tmp_path / "lvu"
    copy_task(real_lvu, root / "lvu_1.0", "relationship")
    for split in SPLITS:
        for youtube_id in youtube_ids(real_lvu / "relationship" / f"{split}.csv"):
            (root / f"{youtube_id}.mp4").touch()  # listing never decodes them
    return root


@pytest.mark.parametrize("task", TASKS)
def test_bundled_recipe_leaves_annotations_to_the_root(task: str) -> None:
    # The recipe comment says "default: <root>/lvu_1.0": that holds only if the recipe sets no other path.
    text = (RECIPES / f"{task}.yaml").read_text(encoding="utf-8")
    assert yaml.safe_load(text)["data"]["annotations"] is None
    assert "(default: <root>/lvu_1.0)" in text
    recipe = recipe_objects(f"lvu/{task}", [], None, check_paths=False)  # still validates
    assert recipe.data.annotations is None and recipe.data.task == task


@pytest.mark.parametrize("task", TASKS)
def test_data_root_alone_finds_its_lvu_1_0(task: str, tmp_path: Path, real_lvu: Path) -> None:
    root = tmp_path / "lvu"
    copy_task(real_lvu, root / "lvu_1.0", task)
    recipe = recipe_objects(str(RECIPES / f"{task}.yaml"), [f"data.root={root}"], None)  # checks the paths
    assert annotations_dir(recipe.data, task) == root / "lvu_1.0"


def test_help_example_lists_the_records(lvu_root: Path, real_lvu: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `s5 extract --help`'s LVU example, with ~ pointing at the temporary folder holding lvu/.
    example = next(line.split() for line in (extract.__doc__ or "").splitlines() if "recipes/lvu/" in line)
    recipe_path = next(word for word in example if word.startswith("recipes/lvu/"))
    overrides = [word for word in example if re.fullmatch(r"data\.\w+=.*", word)]
    assert overrides == ["data.root=~/lvu"]
    monkeypatch.setenv("HOME", str(lvu_root.parent))
    recipe = recipe_objects(recipe_path, overrides, None)
    info = task_info(recipe.data)
    assert (info.kind, info.num_outputs) == ("classification", 4)
    for split in ("train", "val"):
        records = list_records(recipe.data, split)
        assert [r.video_id for r in records] == youtube_ids(real_lvu / "relationship" / f"{split}.csv")
        assert records.missing == []


def test_explicit_annotations_win_over_the_root(lvu_root: Path, tmp_path: Path, real_lvu: Path) -> None:
    other = tmp_path / "elsewhere" / "lvu_1.0"
    copy_task(real_lvu, other, "relationship")
    (lvu_root / "lvu_1.0" / "relationship" / "train.csv").write_text("not an LVU file\n", encoding="utf-8")
    recipe = recipe_objects("lvu/relationship", [f"data.root={lvu_root}", f"data.annotations={other}"], None)
    assert annotations_dir(recipe.data, "relationship") == other
    assert task_info(recipe.data).num_outputs == 4  # the root's broken copy is not read
    # A root without lvu_1.0 is fine when data.annotations names the folder.
    shutil.rmtree(lvu_root / "lvu_1.0")
    recipe = recipe_objects("lvu/relationship", [f"data.root={lvu_root}", f"data.annotations={other}"], None)
    assert [r.video_id for r in list_records(recipe.data, "test")] == youtube_ids(real_lvu / "relationship" / "test.csv")


def test_annotations_may_name_a_split_file(tmp_path: Path, real_lvu: Path) -> None:
    """A split file is a natural thing to point at (Breakfast and COIN take one); LVU refused it with a
    doubled path (`.../genre/train.csv/genre/train.csv`)."""
    split_file = real_lvu / "relationship" / "train.csv"
    recipe = recipe_objects("lvu/relationship", [f"data.root={tmp_path}", f"data.annotations={split_file}"], None)
    assert annotations_dir(recipe.data, "relationship") == real_lvu
    assert task_info(recipe.data).num_outputs == 4


def test_neither_root_lvu_1_0_nor_annotations_names_the_field_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        recipe_objects("lvu/relationship", [f"data.root={tmp_path}"], None)
    message = str(info.value)
    assert str(tmp_path / "lvu_1.0") in message and "data/lvu" not in message
    assert "set data.annotations to the lvu_1.0 folder" in message and "\n" not in message
    missing = tmp_path / "absent" / "lvu_1.0"
    with pytest.raises(UserError, match=rf"{re.escape(str(missing))} not found: set data\.annotations"):
        recipe_objects("lvu/relationship", [f"data.root={tmp_path}", f"data.annotations={missing}"], None)


def test_adapter_error_says_the_default_was_tried(tmp_path: Path, real_lvu: Path) -> None:
    # lvu_1.0 exists under the root but lacks the task: the message says why that folder was read.
    copy_task(real_lvu, tmp_path / "lvu_1.0", "genre")
    data = {"dataset": "lvu", "task": "relationship", "root": str(tmp_path), "annotations": None}
    with pytest.raises(UserError, match=r"data\.annotations is null, so <data\.root>/lvu_1\.0"):
        task_info(data)
