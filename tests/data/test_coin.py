"""COIN adapter on a small hand-written COIN.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from s5cli.data.datasets import list_records, task_info
from s5cli.data.datasets.base import AnnotationError
from s5cli.errors import UserError

DATABASE = {
    "-0Xwn_Ax-Ts": {"recipe_type": 3, "class": "MakeCoffee", "subset": "training", "duration": 120.5},
    "a1b2c3d4e5f": {"recipe_type": 0, "class": "ChangeTire", "subset": "training", "duration": 60},
    "zzzzzzzzzzz": {"recipe_type": 3, "class": "MakeCoffee", "subset": "testing", "duration": 33.0},
    "_underscore": {"recipe_type": 5, "class": "PlantTree", "subset": "testing"},
    "notondisk00": {"recipe_type": 1, "class": "WashDog", "subset": "training", "duration": 10.0},
}


@pytest.fixture
def coin(tmp_path: Path) -> dict:
    (tmp_path / "videos").mkdir()
    (tmp_path / "COIN.json").write_text(json.dumps({"database": DATABASE}, indent=1))
    for video_id in ("-0Xwn_Ax-Ts", "zzzzzzzzzzz", "_underscore"):
        (tmp_path / "videos" / f"{video_id}.mp4").touch()
    (tmp_path / "a1b2c3d4e5f.mkv").touch()  # flat layout is accepted too
    return {"dataset": "coin", "root": tmp_path, "annotations": tmp_path / "COIN.json", "val_fraction": 0.0}


def test_records_per_subset(coin: dict) -> None:
    train = list_records(coin, "train")
    assert [(r.video_id, r.label, r.duration) for r in train] == [
        ("-0Xwn_Ax-Ts", 3, 120.5),
        ("a1b2c3d4e5f", 0, 60.0),
    ]
    assert train[1].path.name == "a1b2c3d4e5f.mkv"
    assert train.missing == ["notondisk00"]
    test = list_records(coin, "test")
    assert [(r.video_id, r.label, r.duration) for r in test] == [
        ("zzzzzzzzzzz", 3, 33.0),
        ("_underscore", 5, None),
    ]
    assert [r.video_id for r in list_records(coin, "val")] == [r.video_id for r in test]


def test_task_info_from_the_database(coin: dict) -> None:
    info = task_info(coin)
    assert (info.kind, info.num_outputs) == ("classification", 6)
    assert info.class_names == ["ChangeTire", "WashDog", "class_2", "MakeCoffee", "class_4", "PlantTree"]


def test_annotations_folder_is_accepted(coin: dict) -> None:
    coin["annotations"] = coin["root"]
    assert len(list_records(coin, "test")) == 2


def test_json_syntax_error_names_the_line(coin: dict) -> None:
    coin["annotations"].write_text('{"database": {\n  "x": {"recipe_type": 1,\n  "subset": training}\n}}')
    with pytest.raises(AnnotationError, match=r"COIN.json:3: invalid JSON"):
        list_records(coin, "train")


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"recipe_type": "3", "subset": "training"}, "recipe_type"),
        ({"recipe_type": 3, "subset": "val"}, "subset"),
    ],
)
def test_bad_entry_names_the_video(coin: dict, entry: dict, problem: str) -> None:
    coin["annotations"].write_text(json.dumps({"database": {"badvideo000": entry}}))
    with pytest.raises(AnnotationError, match=f"badvideo000.*{problem}"):
        task_info(coin)


def test_missing_annotations_and_root(coin: dict, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="COIN annotations not found"):
        list_records({**coin, "annotations": tmp_path / "nope.json"}, "train")
    with pytest.raises(UserError, match="does not exist"):
        list_records({**coin, "root": tmp_path / "gone"}, "train")


def test_byte_order_mark_is_accepted_and_latin1_named(coin: dict) -> None:
    path = coin["annotations"]
    text = path.read_bytes()
    path.write_bytes(b"\xef\xbb\xbf" + text)
    assert len(list_records(coin, "test")) == 2
    path.write_bytes(text.replace(b"ChangeTire", b"Chang\xe9Tire"))
    with pytest.raises(AnnotationError, match=r"COIN\.json:\d+: byte 0xe9 is not UTF-8"):
        list_records(coin, "test")


def test_a_subset_without_entries_is_an_error(coin: dict) -> None:
    from s5cli.data.datasets.base import NoVideosError

    coin["annotations"].write_text(json.dumps({"database": {}}))
    with pytest.raises(NoVideosError, match="no entries with subset 'training'"):
        list_records(coin, "train")


def test_a_subset_without_any_video_on_disk_lists_them_as_missing(coin: dict, tmp_path: Path) -> None:
    """`s5 extract` counts them as not on disk (--strict fails), where the skipped split counted none."""
    from s5cli.data.datasets.base import NoVideosError

    empty = tmp_path / "elsewhere"
    empty.mkdir()
    with pytest.raises(NoVideosError) as caught:
        list_records({**coin, "root": empty}, "train")
    assert caught.value.missing == ["-0Xwn_Ax-Ts", "a1b2c3d4e5f", "notondisk00"]
    with pytest.raises(NoVideosError) as caught:
        list_records({**coin, "root": empty, "val_fraction": 0.5}, "val")
    assert caught.value.missing == ["notondisk00"]  # the held-out share alone (`in_holdout`)


def test_the_official_download_layout_one_folder_per_task(coin: dict) -> None:
    """coin-dataset's download script writes videos/<recipe_type>/<youtube_id>.mp4 (ViS4mer globs it)."""
    videos = Path(coin["root"]) / "videos"
    (videos / "1").mkdir()
    (videos / "1" / "notondisk00.mp4").touch()
    (videos / "3").mkdir()
    (videos / "zzzzzzzzzzz.mp4").rename(videos / "3" / "zzzzzzzzzzz.mp4")
    train = list_records(coin, "train")
    assert [r.video_id for r in train] == ["-0Xwn_Ax-Ts", "a1b2c3d4e5f", "notondisk00"] and train.missing == []
    test = list_records(coin, "test")
    assert [r.path.relative_to(videos).as_posix() for r in test] == ["3/zzzzzzzzzzz.mp4", "_underscore.mp4"]
    # data.root may name videos/ itself, as recipes/coin.yaml does.
    inside = list_records({**coin, "root": videos}, "train")
    assert [r.video_id for r in inside] == ["-0Xwn_Ax-Ts", "notondisk00"]


def test_a_carved_val_reports_its_own_missing_videos(coin: dict, capsys: pytest.CaptureFixture) -> None:
    """The warning for val said "COIN train: 1 of 3 videos not found", counting all of training."""
    coin["val_fraction"] = 0.5  # val: notondisk00 alone (`in_holdout`); train: the two on disk
    assert list_records(coin, "val").missing == ["notondisk00"]
    assert list_records(coin, "train").missing == []
    err = " ".join(capsys.readouterr().err.split())
    assert "COIN val: 1 of 1 videos not found" in err and "COIN train" not in err


def test_val_on_the_testing_subset_is_named_for_training() -> None:
    """With val_fraction 0 a run validates on the testing subset: `prepare_splits` warns with this."""
    from s5cli.data.datasets import val_split_warning

    assert val_split_warning({"dataset": "coin", "val_fraction": 0.1}) is None
    assert val_split_warning({"dataset": "coin", "val_fraction": 0.0}) == (
        "data.val_fraction=0: COIN's val split is its test split, so the best checkpoint, the plateau schedule "
        "and early stopping are chosen on test videos: set data.val_fraction (e.g. 0.1) for a held-out val")
