"""Breakfast adapter on the real split files of ../shared/data/Breakfast with a tree of placeholder videos."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from s5cli.data.datasets import base, list_records, task_info
from s5cli.data.datasets.base import AnnotationError
from s5cli.errors import UserError


def data_rows(path: Path) -> list[list[str]]:
    """Rows of a split file without its header, read independently of the adapter."""
    with open(path, newline="") as handle:
        return [row for row in csv.reader(handle) if row][1:]


@pytest.fixture(scope="module")
def breakfast_dir(shared_data_dir: Path) -> Path:
    return shared_data_dir / "Breakfast"


@pytest.fixture(scope="module")
def video_root(breakfast_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Placeholder videos: even rows in the original nested tree (.avi), odd rows flat (.mp4)."""
    root = tmp_path_factory.mktemp("breakfast_videos")
    for split in ("train", "test"):
        for i, row in enumerate(data_rows(breakfast_dir / f"{split}.csv")):
            person, camera, video = row[0].split("-")
            if i % 2 == 0:
                (root / person / camera).mkdir(parents=True, exist_ok=True)
                (root / person / camera / f"{video}.avi").touch()
            else:
                (root / f"{row[0]}.mp4").touch()
    return root


def breakfast_data(root: Path, annotations: Path, val_fraction: float = 0.0) -> dict:
    return {"dataset": "breakfast", "root": root, "annotations": annotations, "val_fraction": val_fraction}


def test_every_line_of_every_split_is_parsed(breakfast_dir: Path, video_root: Path) -> None:
    data = breakfast_data(video_root, breakfast_dir)
    info = task_info(data)
    assert (info.kind, info.num_outputs) == ("classification", 10)
    assert info.class_names[0] == "cereals" and info.class_names[9] == "salat"
    for split in ("train", "test"):
        rows = data_rows(breakfast_dir / f"{split}.csv")
        records = list_records(data, split)
        assert len(records) == len(rows) > 300
        assert records.missing == []
        assert [r.video_id for r in records] == [row[0] for row in rows]
        assert [r.label for r in records] == [int(row[3]) for row in rows]
        assert all(0 <= r.label < 10 for r in records)
        assert [r.duration for r in records] == [float(row[1]) for row in rows]
        for i, record in enumerate(records):
            person, camera, video = record.video_id.split("-")
            expected = (
                video_root / person / camera / f"{video}.avi"
                if i % 2 == 0
                else video_root / f"{record.video_id}.mp4"
            )
            assert record.path == expected
    # Without val_fraction, val is the test split.
    assert [r.video_id for r in list_records(data, "val")] == [r.video_id for r in list_records(data, "test")]


def test_val_fraction_holds_out_part_of_train(breakfast_dir: Path, video_root: Path) -> None:
    data = breakfast_data(video_root, breakfast_dir, val_fraction=0.1)
    train = {r.video_id for r in list_records(data, "train")}
    val = {r.video_id for r in list_records(data, "val")}
    all_train = {row[0] for row in data_rows(breakfast_dir / "train.csv")}
    assert not train & val
    assert train | val == all_train
    assert 0.05 < len(val) / len(all_train) < 0.2
    # Whole people are held out, as in the test split: no session reaches val from another of its cameras.
    def people(ids: set[str]) -> set[str]:
        return {video_id.split("-")[0] for video_id in ids}

    assert people(val) and not people(val) & people(train)
    sessions = {video_id.split("-")[2] for video_id in val}
    assert not any(video_id.split("-")[2] in sessions for video_id in train)
    # Stable: the same split every time.
    assert {r.video_id for r in list_records(data, "val")} == val


def test_a_held_out_split_counts_only_its_own_missing_videos(breakfast_dir: Path, tmp_path: Path) -> None:
    rows = data_rows(breakfast_dir / "train.csv")
    for row in rows[::2]:  # half of train on disk
        (tmp_path / f"{row[0]}.mp4").touch()
    data = breakfast_data(tmp_path, breakfast_dir, val_fraction=0.1)
    train, val = list_records(data, "train"), list_records(data, "val")
    assert sorted(train.missing + val.missing) == sorted(row[0] for row in rows[1::2])
    assert {r.video_id.split("-")[0] for r in val} >= {m.split("-")[0] for m in val.missing}


def test_missing_videos_are_skipped_and_counted(breakfast_dir: Path, tmp_path: Path) -> None:
    rows = data_rows(breakfast_dir / "test.csv")
    for row in rows[:5]:
        (tmp_path / f"{row[0]}.webm").touch()
    records = list_records(breakfast_data(tmp_path, breakfast_dir), "test")
    assert [r.video_id for r in records] == [row[0] for row in rows[:5]]
    assert len(records.missing) == len(rows) - 5


def test_upper_case_suffixes_are_found_in_both_layouts(breakfast_dir: Path, tmp_path: Path) -> None:
    rows = data_rows(breakfast_dir / "test.csv")
    person, camera, video = rows[0][0].split("-")
    (tmp_path / person / camera).mkdir(parents=True)
    (tmp_path / person / camera / f"{video}.AVI").touch()
    (tmp_path / f"{rows[1][0]}.MP4").touch()
    records = list_records(breakfast_data(tmp_path, breakfast_dir), "test")
    assert [r.path.suffix for r in records] == [".AVI", ".MP4"]
    assert [r.video_id for r in records] == [rows[0][0], rows[1][0]]


def test_missing_root_is_one_line_error(breakfast_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError) as caught:
        list_records(breakfast_data(tmp_path / "absent", breakfast_dir), "train")
    assert "absent" in str(caught.value) and "\n" not in str(caught.value)


def test_empty_root_names_the_layouts(breakfast_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="P03_cereals"):
        list_records(breakfast_data(tmp_path, breakfast_dir), "train")


def test_a_split_without_any_video_on_disk_lists_its_own_videos_as_missing(breakfast_dir: Path,
                                                                          tmp_path: Path) -> None:
    """`s5 extract` counts them as not on disk; with a val carved out of train, each split its own share."""
    from s5cli.data.datasets.base import NoVideosError

    data = breakfast_data(tmp_path, breakfast_dir, val_fraction=0.1)
    missing = {}
    for split in ("train", "val", "test"):
        with pytest.raises(NoVideosError) as caught:
            list_records(data, split)
        missing[split] = caught.value.missing
    assert missing["test"] == [row[0] for row in data_rows(breakfast_dir / "test.csv")]
    assert missing["val"] and not set(missing["val"]) & set(missing["train"])
    train_csv = [row[0] for row in data_rows(breakfast_dir / "train.csv")]
    assert sorted(missing["train"] + missing["val"]) == sorted(train_csv)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("file_name,duration,action,class_id\nP03-cam01-P03_tea,5,tea,2\nP03-cam01-P03_milk,5,milk\n", 3),
        ("file_name,duration,action,class_id\nP03-cam01-P03_tea,5,tea,2\n\nP03-cam01-P03_milk,5,milk,x\n", 4),
        ("file_name,duration,action,class_id\nP03_cam01_P03_tea,5,tea,2\n", 2),
    ],
)
def test_malformed_line_names_file_and_line(text: str, line: int, tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text(text)
    (tmp_path / "P03-cam01-P03_tea.mp4").touch()
    with pytest.raises(AnnotationError, match=f"train.csv:{line}:"):
        list_records(breakfast_data(tmp_path, tmp_path), "train")


def test_spreadsheet_encodings_are_read_or_named(tmp_path: Path) -> None:
    """A byte-order mark (Excel's UTF-8) is accepted; a Latin-1 byte names its line and the fix."""
    rows = "file_name,duration,action,class_id\nP03-cam01-P03_tea,5,tea,2\n"
    (tmp_path / "train.csv").write_bytes(b"\xef\xbb\xbf" + rows.encode())
    (tmp_path / "P03-cam01-P03_tea.mp4").touch()
    assert [r.video_id for r in list_records(breakfast_data(tmp_path, tmp_path), "train")] == ["P03-cam01-P03_tea"]
    (tmp_path / "train.csv").write_bytes(rows.encode() + b"P03-cam01-P03_caf\xe9,5,tea,2\n")
    with pytest.raises(AnnotationError, match=r"train\.csv:3: byte 0xe9 is not UTF-8 text; save the file as UTF-8"):
        list_records(breakfast_data(tmp_path, tmp_path), "train")


def test_header_only_split_file_is_an_error(tmp_path: Path) -> None:
    from s5cli.data.datasets.base import NoVideosError

    (tmp_path / "train.csv").write_text("file_name,duration,action,class_id\n")
    with pytest.raises(NoVideosError, match="lists no videos"):
        list_records(breakfast_data(tmp_path, tmp_path), "train")


def test_val_fraction_0_1_holds_out_6_of_the_44_train_people(breakfast_dir: Path, video_root: Path) -> None:
    """What recipes/breakfast.yaml says its val_fraction 0.1 holds out: 6 of 44 people, 176 of 1357 videos."""
    val = list_records(breakfast_data(video_root, breakfast_dir, val_fraction=0.1), "val")
    people = {row[0].split("-")[0] for row in data_rows(breakfast_dir / "train.csv")}
    assert (len({r.video_id.split("-")[0] for r in val}), len(people)) == (6, 44)
    assert (len(val), len(data_rows(breakfast_dir / "train.csv"))) == (176, 1357)


def test_a_carved_val_reports_its_own_missing_videos(breakfast_dir: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    """The warning for val named train and counted all of train.csv ("Breakfast train: 136 of 1357")."""
    rows = data_rows(breakfast_dir / "train.csv")
    for row in rows[::2]:
        (tmp_path / f"{row[0]}.mp4").touch()
    data = breakfast_data(tmp_path, breakfast_dir, val_fraction=0.1)
    val, train = list_records(data, "val"), list_records(data, "train")
    err = " ".join(capsys.readouterr().err.split())
    assert f"Breakfast val: {len(val.missing)} of {len(val) + len(val.missing)} videos not found" in err
    assert f"Breakfast train: {len(train.missing)} of {len(train) + len(train.missing)} videos not found" in err
    assert f"of {len(rows)} videos" not in err and err.count("videos not found") == 2


def test_missing_videos_are_reported_by_the_first_process_only(breakfast_dir: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Under torchrun every rank lists the splits: each printed the same warning. A RANK set by hand (`s5
    extract`'s share of several machines, each with its own copy) is no torchrun group: each names its own."""
    rows = data_rows(breakfast_dir / "test.csv")
    (tmp_path / f"{rows[0][0]}.mp4").touch()
    data = breakfast_data(tmp_path, breakfast_dir)
    expected = f"{len(rows) - 1} of {len(rows)} videos not found"
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    list_records(data, "test")
    assert expected in " ".join(capsys.readouterr().err.split())
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    assert len(list_records(data, "test").missing) == len(rows) - 1
    assert "not found" not in capsys.readouterr().err
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(base, "_WARNED", set())  # said once per process: forget the first process's warning
    list_records(data, "test")
    assert expected in " ".join(capsys.readouterr().err.split())


def test_a_video_listed_twice_in_a_split_names_both_lines(tmp_path: Path) -> None:
    """A second row for a video (perhaps another label) was accepted, and evaluation kept the first label."""
    (tmp_path / "train.csv").write_text("file_name,duration,action,class_id\nP03-cam01-P03_tea,5,tea,2\n"
                                        "P03-cam01-P03_milk,5,milk,1\nP03-cam01-P03_tea,5,tea,3\n")
    (tmp_path / "P03-cam01-P03_tea.mp4").touch()
    with pytest.raises(AnnotationError, match=r"train\.csv:4: video 'P03-cam01-P03_tea' is listed again \(first "
                                              r"on line 2\): keep one of the two lines"):
        list_records(breakfast_data(tmp_path, tmp_path), "train")
