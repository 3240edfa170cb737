"""LVU adapter on the real split files of ../shared/data/lvu_1.0 with a tree of placeholder videos."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from s5cli.data.datasets import list_records, task_info
from s5cli.data.datasets.base import AnnotationError
from s5cli.data.datasets.lvu import CLASSIFICATION_TASKS, REGRESSION_TASKS, TASKS
from s5cli.errors import UserError

SPLITS = ("train", "val", "test")


def data_lines(path: Path) -> list[list[str]]:
    """Fields of every data line (header dropped), read independently of the adapter."""
    lines = [line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines[1:]


@pytest.fixture(scope="module")
def lvu_dir(shared_data_dir: Path) -> Path:
    return shared_data_dir / "lvu_1.0"


@pytest.fixture(scope="module")
def video_root(lvu_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Zero-byte placeholder videos for every clip of every task (listing never decodes them)."""
    root = tmp_path_factory.mktemp("lvu_videos")
    ids = {
        fields[-2]
        for task in TASKS
        for split in SPLITS
        for fields in data_lines(lvu_dir / task / f"{split}.csv")
    }
    for i, youtube_id in enumerate(sorted(ids)):
        # Mostly mp4, a few other containers the adapter must accept.
        suffix = (".mp4", ".mp4", ".mp4", ".mkv", ".webm")[i % 5]
        (root / f"{youtube_id}{suffix}").touch()
    return root


def lvu_data(root: Path, annotations: Path, task: str) -> dict:
    return {"dataset": "lvu", "root": root, "annotations": annotations, "task": task}


@pytest.mark.parametrize("task", TASKS)
def test_every_line_of_every_split_is_parsed(task: str, lvu_dir: Path, video_root: Path) -> None:
    data = lvu_data(video_root, lvu_dir, task)
    info = task_info(data)
    records = {split: list_records(data, split) for split in SPLITS}
    for split in SPLITS:
        lines = data_lines(lvu_dir / task / f"{split}.csv")
        assert len(records[split]) == len(lines) > 0
        assert records[split].missing == []
        assert [r.video_id for r in records[split]] == [fields[-2] for fields in lines]
        assert all(r.path.stem == r.video_id and r.path.is_file() for r in records[split])
    if task in CLASSIFICATION_TASKS:
        assert info.kind == "classification"
        all_ids = {
            int(fields[0]) for split in SPLITS for fields in data_lines(lvu_dir / task / f"{split}.csv")
        }
        assert info.num_outputs == max(all_ids) + 1
        assert len(info.class_names) == info.num_outputs
        for split in SPLITS:
            labels = [r.label for r in records[split]]
            assert all(isinstance(x, int) and 0 <= x < info.num_outputs for x in labels)
        assert {r.label for r in records["train"]} | {r.label for r in records["test"]} | {
            r.label for r in records["val"]
        } == all_ids
    else:
        assert (info.kind, info.num_outputs) == ("regression", 1)
        train = [float(r.label) for r in records["train"]]
        assert abs(sum(train) / len(train)) < 1e-9
        for split in SPLITS:
            assert all(math.isfinite(float(r.label)) for r in records[split])


@pytest.mark.parametrize("task", REGRESSION_TASKS)
def test_regression_targets_follow_the_formula(task: str, lvu_dir: Path, video_root: Path) -> None:
    def raw(fields: list[str]) -> float:
        if task == "like_ratio":
            likes, dislikes = int(fields[0]), int(fields[1])
            return likes / (likes + dislikes) * 10
        return math.log(int(fields[0]))

    train_raw = [raw(fields) for fields in data_lines(lvu_dir / task / "train.csv")]
    mean = sum(train_raw) / len(train_raw)
    test_lines = data_lines(lvu_dir / task / "test.csv")
    records = list_records(lvu_data(video_root, lvu_dir, task), "test")
    for fields, record in zip(test_lines, records, strict=True):
        assert record.label == pytest.approx(raw(fields) - mean, abs=1e-9)
    # Centring is not a no-op: the raw targets are far from zero.
    assert abs(mean) > 1


def test_durations_come_from_the_durations_file(lvu_dir: Path, video_root: Path) -> None:
    durations = dict(
        line.split(",")
        for line in (lvu_dir / "lvu_durations.csv").read_text().splitlines()[1:]
        if line.strip()
    )
    records = list_records(lvu_data(video_root, lvu_dir, "scene"), "val")
    with_duration = [r for r in records if r.video_id in durations]
    assert with_duration
    assert all(r.duration == float(durations[r.video_id]) for r in with_duration)


def test_missing_videos_are_skipped_and_counted(lvu_dir: Path, tmp_path: Path) -> None:
    lines = data_lines(lvu_dir / "relationship" / "train.csv")
    present = [fields[-2] for fields in lines[::2]]
    for youtube_id in present:
        (tmp_path / f"{youtube_id}.mp4").touch()
    records = list_records(lvu_data(tmp_path, lvu_dir, "relationship"), "train")
    assert [r.video_id for r in records] == present
    assert records.missing == [fields[-2] for fields in lines[1::2]]


def test_no_video_at_all_names_the_root(lvu_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=str(tmp_path)):
        list_records(lvu_data(tmp_path, lvu_dir, "genre"), "train")


def test_a_split_without_any_video_on_disk_lists_them_as_missing(lvu_dir: Path, tmp_path: Path) -> None:
    """`s5 extract` counts them as not on disk (--strict fails), where the skipped split counted none."""
    from s5cli.data.datasets.base import NoVideosError

    with pytest.raises(NoVideosError) as caught:
        list_records(lvu_data(tmp_path, lvu_dir, "genre"), "test")
    assert caught.value.missing == [fields[-2] for fields in data_lines(lvu_dir / "genre" / "test.csv")]


def test_missing_root_is_one_line_error(lvu_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError) as caught:
        list_records(lvu_data(tmp_path / "nowhere", lvu_dir, "genre"), "train")
    message = str(caught.value)
    assert "nowhere" in message and "\n" not in message


def test_missing_annotations_is_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="annotations"):
        list_records(lvu_data(tmp_path, tmp_path / "no_lvu", "genre"), "train")


def test_a_task_folder_missing_from_a_real_lvu_folder_names_the_tasks_there(tmp_path: Path) -> None:
    folder = tmp_path / "lvu_1.0"
    for task in ("genre", "year"):
        (folder / task).mkdir(parents=True)
        (folder / task / "train.csv").write_text("")
    with pytest.raises(UserError) as info:
        list_records(lvu_data(tmp_path, folder, "scene"), "train")
    assert str(info.value) == (f"LVU task 'scene' has no split files: expected {folder / 'scene' / 'train.csv'} "
                               "(data.annotations holds genre, year); copy the scene/ folder of lvu_1.0 there, or "
                               "pick one of those")


def test_the_folder_above_lvu_1_0_is_told_to_name_lvu_1_0(shared_data_dir: Path, video_root: Path) -> None:
    """The folder above lvu_1.0 (which also holds Breakfast/train.csv) was said to hold the LVU task
    'Breakfast', with the advice to copy genre/ into it."""
    with pytest.raises(UserError) as info:
        list_records(lvu_data(video_root, shared_data_dir, "genre"), "train")
    assert str(info.value) == (f"LVU annotations not found: expected {shared_data_dir / 'genre' / 'train.csv'} "
                               f"(data.annotations); {shared_data_dir / 'lvu_1.0'} holds the split files: set "
                               f"data.annotations={shared_data_dir / 'lvu_1.0'}")


def test_only_lvu_task_folders_count_as_tasks(tmp_path: Path) -> None:
    """A Breakfast-style folder with train.csv files is no LVU task folder."""
    (tmp_path / "Breakfast").mkdir()
    (tmp_path / "Breakfast" / "train.csv").write_text("")
    with pytest.raises(UserError) as info:
        list_records(lvu_data(tmp_path, tmp_path, "genre"), "train")
    assert str(info.value) == (f"LVU annotations not found: expected {tmp_path / 'genre' / 'train.csv'} "
                               "(data.annotations); set data.annotations to the lvu_1.0 folder")


def test_unknown_task_suggests_the_closest(lvu_dir: Path, video_root: Path) -> None:
    with pytest.raises(UserError, match="did you mean 'genre'"):
        task_info(lvu_data(video_root, lvu_dir, "genra"))


def _write_task(folder: Path, task: str, train: str, other: str | None = None) -> Path:
    (folder / task).mkdir(parents=True)
    (folder / task / "train.csv").write_text(train)
    for split in ("val", "test"):
        (folder / task / f"{split}.csv").write_text(other if other is not None else train)
    return folder


@pytest.mark.parametrize(
    ("task", "text", "line"),
    [
        (
            "genre",
            "class_id class_name youtube_id imdb_id\n0 Comedy aaa tt1\n1 Drama bbb tt2\nx Drama ccc tt3\n",
            4,
        ),
        ("genre", "class_id class_name youtube_id imdb_id\n0 Comedy aaa tt1\n1 bbb\n", 3),
        ("view_count", "view_count youtube_id imdb_id\n10 aaa tt1\n12 bbb tt2 extra\n", 3),
        ("like_ratio", "like_count dislike_count youtube_id imdb_id\n1 2 aaa tt1\n\n0 0 bbb tt2\n", 4),
    ],
)
def test_malformed_line_names_file_and_line(task: str, text: str, line: int, tmp_path: Path) -> None:
    annotations = _write_task(tmp_path / "lvu_1.0", task, text)
    (tmp_path / "aaa.mp4").touch()
    with pytest.raises(AnnotationError) as caught:
        list_records(lvu_data(tmp_path, annotations, task), "train")
    assert f"train.csv:{line}:" in str(caught.value)
    assert caught.value.line == line


def test_class_names_with_spaces_and_task_folder_as_annotations(tmp_path: Path) -> None:
    text = "class_id class_name youtube_id imdb_id\n0 Science Fiction -ab_c tt1\n2 Film noir --x tt2\n"
    annotations = _write_task(tmp_path / "lvu_1.0", "genre", text)
    (tmp_path / "-ab_c.mp4").touch()
    (tmp_path / "--x.avi").touch()
    data = lvu_data(tmp_path, annotations / "genre", "genre")
    records = list_records(data, "train")
    assert [(r.video_id, r.label, r.path.name) for r in records] == [
        ("-ab_c", 0, "-ab_c.mp4"),
        ("--x", 2, "--x.avi"),
    ]
    assert task_info(data).class_names == ["Science Fiction", "class_1", "Film noir"]


def test_missing_videos_are_reported_once(
    lvu_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    lines = data_lines(lvu_dir / "scene" / "test.csv")
    (tmp_path / f"{lines[0][-2]}.mp4").touch()
    data = lvu_data(tmp_path, lvu_dir, "scene")
    list_records(data, "test")
    list_records(data, "test")
    err = capsys.readouterr().err
    assert err.count(f"{len(lines) - 1} of {len(lines)} videos not found") == 1
    assert "scene/test" in err


def test_blank_first_line_still_skips_the_header_and_latin1_is_named(tmp_path: Path) -> None:
    text = "\nclass_id class_name youtube_id imdb_id\n0 Comedy aaa tt1\n"
    annotations = _write_task(tmp_path / "lvu_1.0", "genre", text)
    (tmp_path / "aaa.mp4").touch()
    assert [r.video_id for r in list_records(lvu_data(tmp_path, annotations, "genre"), "train")] == ["aaa"]
    split_file = annotations / "genre" / "train.csv"
    split_file.write_bytes(text.encode() + b"1 Caf\xe9 bbb tt2\n")
    with pytest.raises(AnnotationError, match=r"train\.csv:4: byte 0xe9 is not UTF-8 text"):
        list_records(lvu_data(tmp_path, annotations, "genre"), "train")


def test_a_folder_or_dangling_link_named_like_a_video_does_not_hide_the_real_file(tmp_path: Path) -> None:
    from s5cli.data.datasets.base import index_videos

    (tmp_path / "a.mp4").mkdir()
    (tmp_path / "a.mkv").write_bytes(b"x")
    (tmp_path / "b.mp4").symlink_to(tmp_path / "gone.mp4")
    (tmp_path / "b.webm").write_bytes(b"x")
    assert index_videos(tmp_path) == {"a": tmp_path / "a.mkv", "b": tmp_path / "b.webm"}


@pytest.mark.parametrize(
    ("task", "text", "problem"),
    [
        ("genre", "O Comedy aaa tt1\n1 Drama bbb tt2\n", "class_id 'O' is not a whole number"),
        ("like_ratio", "l0 2 aaa tt1\n1 2 bbb tt2\n", "like_count 'l0' is not a whole number"),
        # another task's header is no header of this one
        ("view_count", "class_id class_name youtube_id imdb_id\n10 aaa tt1\n", "got 4 fields"),
    ],
)
def test_a_typo_in_the_first_row_is_reported_not_taken_for_a_header(task: str, text: str, problem: str,
                                                                     tmp_path: Path) -> None:
    """Any first line that did not start with a number was skipped as the header: a typo dropped the video."""
    annotations = _write_task(tmp_path / "lvu_1.0", task, text)
    (tmp_path / "aaa.mp4").touch()
    with pytest.raises(AnnotationError, match=rf"train\.csv:1: .*{problem}"):
        list_records(lvu_data(tmp_path, annotations, task), "train")


def test_a_header_of_another_spelling_names_the_releases_header(tmp_path: Path) -> None:
    """`label name youtube_id imdb_id` (accepted before only the release's header was skipped) said only
    "class_id 'label' is not a whole number"; a later bad row says nothing of headers."""
    from s5cli.data.datasets.lvu import parse_split_file

    (tmp_path / "train.csv").write_text("label name youtube_id imdb_id\n0 Comedy aaa tt1\n")
    with pytest.raises(AnnotationError, match=r"train\.csv:1: class_id 'label' is not a whole number \(a header "
                                              r"line\? the release's is 'class_id class_name youtube_id imdb_id'\)"):
        parse_split_file(tmp_path / "train.csv", "genre")
    (tmp_path / "train.csv").write_text("0 Comedy aaa tt1\nx Comedy bbb tt2\n")
    with pytest.raises(AnnotationError, match=r"train\.csv:2: class_id 'x' is not a whole number$"):
        parse_split_file(tmp_path / "train.csv", "genre")


def test_the_release_headers_are_skipped_and_a_headerless_file_is_read(lvu_dir: Path, tmp_path: Path) -> None:
    from s5cli.data.datasets.lvu import header_of, parse_split_file

    for task in TASKS:  # every real file starts with its task's header
        for split in SPLITS:
            assert (lvu_dir / task / f"{split}.csv").read_text().split("\n", 1)[0].split() == header_of(task)
    (tmp_path / "train.csv").write_text("0 Comedy aaa tt1\n")
    assert [row.youtube_id for row in parse_split_file(tmp_path / "train.csv", "genre")] == ["aaa"]


def test_a_video_listed_twice_in_a_split_names_both_lines(tmp_path: Path) -> None:
    """Evaluation merges windows by video id and kept the first label; tasks sharing videos stay fine."""
    text = "class_id class_name youtube_id imdb_id\n0 Comedy aaa tt1\n1 Drama bbb tt2\n\n1 Drama aaa tt1\n"
    annotations = _write_task(tmp_path / "lvu_1.0", "genre", text, other="0 Comedy aaa tt1\n1 Drama bbb tt2\n")
    (tmp_path / "aaa.mp4").touch()
    data = lvu_data(tmp_path, annotations, "genre")
    assert [r.video_id for r in list_records(data, "test")] == ["aaa"]  # the same video in another split
    with pytest.raises(AnnotationError, match=r"genre/train\.csv:5: video 'aaa' is listed again \(first on line "
                                              r"2\): keep one of the two lines"):
        list_records(data, "train")


def test_an_unreadable_durations_row_is_skipped_with_one_warning(lvu_dir: Path, video_root: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    """Nothing but the records reads the durations, and one bad row stopped every LVU command."""
    import shutil

    folder = tmp_path / "lvu_1.0"
    shutil.copytree(lvu_dir / "scene", folder / "scene")
    lines = (lvu_dir / "lvu_durations.csv").read_text().splitlines()
    (folder / "lvu_durations.csv").write_text("\n".join([lines[0], "abcdefghijk,NA", *lines[1:], "x,1,2"]) + "\n")
    data = lvu_data(video_root, folder, "scene")
    records = list_records(data, "val")
    list_records(data, "train")
    assert records and all(r.duration is not None for r in records if r.video_id != "abcdefghijk")
    err = " ".join(capsys.readouterr().err.split())
    assert err.count("lvu_durations.csv:2: 'abcdefghijk,NA' and 1 other row skipped") == 1, err


def test_a_split_file_missing_beside_train_says_to_copy_it(tmp_path: Path) -> None:
    """data.annotations is right when the task folder holds train.csv: the message sent users to set it."""
    folder = tmp_path / "lvu_1.0"
    (folder / "genre").mkdir(parents=True)
    (folder / "genre" / "train.csv").write_text("class_id class_name youtube_id imdb_id\n0 Comedy aaa tt1\n")
    (tmp_path / "aaa.mp4").touch()
    with pytest.raises(UserError) as caught:
        list_records(lvu_data(tmp_path, folder, "genre"), "val")
    assert str(caught.value) == (f"LVU split file {folder / 'genre' / 'val.csv'} not found, though "
                                 f"{folder / 'genre'} holds train.csv: copy genre/val.csv from the LVU release "
                                 "(lvu_1.0) into that folder")
