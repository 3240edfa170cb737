"""Breakfast Actions (Kuehne et al., CVPR 2014): 1,712 cooking videos, 10 activity classes.

Annotations: `<annotations>/{train,test}.csv` with `file_name,duration,action,class_id`, e.g.
`P03-cam01-P03_cereals,56,cereals,0`. The file name encodes the original tree `P03/cam01/P03_cereals.avi`;
a flat copy `P03-cam01-P03_cereals.<ext>` is accepted too. There is no val split: `data.val_fraction` > 0
holds out a stable fraction of train's people (every video of a held-out person, as the test split holds
out people), otherwise val is the test split (as in ViS4mer's protocol).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s5cli.errors import UserError

from .base import (
    AnnotationError,
    NoVideosError,
    RecordList,
    TaskInfo,
    VideoRecord,
    check_class_ids,
    check_split,
    data_field,
    duplicate_check,
    find_video,
    missing_in_split,
    read_annotation_text,
    report_missing,
    require_root,
    split_with_holdout,
    val_fraction_of,
    val_is_test_warning,
)

HEADER = ["file_name", "duration", "action", "class_id"]


@dataclass
class BreakfastRow:
    """One parsed line of a Breakfast split file."""

    file_name: str
    duration: float
    action: str
    class_id: int
    line: int


def parse_split_file(path: Path) -> list[BreakfastRow]:
    """Parse every line of train.csv/test.csv; a malformed line raises AnnotationError with its number."""
    if not path.is_file():
        raise UserError(
            f"Breakfast split file {path} not found: set data.annotations to the Breakfast folder"
        )
    rows: list[BreakfastRow] = []
    check_unique = duplicate_check(path)
    text = read_annotation_text(path)
    for number, fields in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
        if not fields or not "".join(fields).strip():
            continue
        if not rows and [f.strip() for f in fields] == HEADER:
            continue
        if len(fields) != 4:
            raise AnnotationError(
                path, number, f"expected '{','.join(HEADER)}', got {len(fields)} fields"
            )
        name, duration, action, class_id = (f.strip() for f in fields)
        if len(name.split("-")) != 3:
            raise AnnotationError(path, number, f"file_name {name!r} is not PERSON-CAMERA-VIDEO")
        try:
            seconds = float(duration)
            label = int(class_id)
        except ValueError:
            raise AnnotationError(
                path, number, "duration must be a number and class_id a whole number"
            ) from None
        if label < 0:
            raise AnnotationError(path, number, f"class_id {label} is negative")
        check_unique(name, number)  # _ch0/_ch1 stereo rows of one camera are distinct ids
        rows.append(BreakfastRow(name, seconds, action, label, number))
    return rows


def person_of(file_name: str) -> str:
    """`P03` of `P03-cam01-P03_cereals`: who was filmed (every camera of a session shares it)."""
    return file_name.split("-", 1)[0]


def video_candidates(root: Path, file_name: str) -> list[Path]:
    """Paths without suffix where a video may be: `P03/cam01/P03_cereals` and flat `P03-cam01-P03_cereals`."""
    person, camera, video = file_name.split("-")
    return [root / person / camera / video, root / file_name]


def annotations_dir(data: Any) -> Path:
    """The folder holding train.csv and test.csv (data.annotations, else data.root)."""
    given = data_field(data, "annotations") or data_field(data, "root")
    if not given:
        raise UserError(
            "data.annotations is not set: point it at the folder with Breakfast train.csv/test.csv"
        )
    folder = Path(given).expanduser()
    if folder.is_file():
        folder = folder.parent
    if not (folder / "train.csv").is_file():
        raise UserError(
            f"Breakfast annotations not found: expected {folder / 'train.csv'} (set data.annotations)"
        )
    return folder


def _records(rows: list[BreakfastRow], root: Path, what: str) -> RecordList:
    """The rows' videos found under `root` (the others in `.missing`); NoVideosError if there is none."""
    records: list[VideoRecord] = []
    missing: list[str] = []
    for row in rows:
        path = find_video(video_candidates(root, row.file_name))
        if path is None:
            missing.append(row.file_name)
        else:
            records.append(VideoRecord(row.file_name, path, row.class_id, row.duration))
    if not rows:
        raise NoVideosError(f"Breakfast {what}.csv lists no videos: add its rows or check data.annotations")
    if not records:
        person, camera, video = rows[0].file_name.split("-")
        raise NoVideosError(
            f"none of the {len(rows)} Breakfast {what} videos is under data.root {root} "
            f"(expected e.g. {root / person / camera / video}.avi or {root / rows[0].file_name}.mp4)",
            missing=missing,
        )
    return RecordList(records, missing)


def list_records(data: Any, split: str, show_progress: bool = True) -> RecordList:
    """Records of one split whose video exists under data.root (missing ones are counted in `.missing`)."""
    check_split(split, "Breakfast")
    folder = annotations_dir(data)
    root = require_root(data, "Breakfast")
    val_fraction = val_fraction_of(data)
    source = "test" if split == "test" or (split == "val" and val_fraction <= 0) else "train"
    try:
        listed = _records(parse_split_file(folder / f"{source}.csv"), root, source)
    except NoVideosError as error:  # with a val carved out of train.csv: only this split's videos
        error.missing = missing_in_split(error.missing, split, val_fraction, group=person_of)
        raise
    # Held out by person, as the test split is (its people never appear in train): validation then asks the
    # question the test asks, and no session reaches it from another camera of the same recording.
    if source == "train":
        chosen = split_with_holdout(listed, listed, split, val_fraction, group=person_of)
        listed = RecordList(chosen, missing_in_split(listed.missing, split, val_fraction, group=person_of))
    # Counted after carving, under the split's own name: a carved val reported every train video missing.
    what = split if source == "train" else source
    report_missing(f"Breakfast {what}", root, listed.missing, len(listed) + len(listed.missing))
    return listed


def val_split_warning(data: Any) -> str | None:
    """Why validating on this recipe's val split chooses on test videos (no data.val_fraction), else None."""
    return val_is_test_warning("Breakfast", val_fraction_of(data))


def task_info(data: Any) -> TaskInfo:
    """10-way classification (classes = max class id + 1 over train and test), names from the action column."""
    folder = annotations_dir(data)
    names: dict[int, str] = {}
    labelled: list[tuple[int, Path, int | None, str]] = []
    for split in ("train", "test"):
        path = folder / f"{split}.csv"
        if path.is_file():
            for row in parse_split_file(path):
                names.setdefault(row.class_id, row.action)
                labelled.append((row.class_id, path, row.line, "class id"))
    check_class_ids(labelled)
    if len(names) < 2:
        raise AnnotationError(folder / "train.csv", None, "fewer than 2 classes in the split files")
    num_classes = max(names) + 1
    return TaskInfo("classification", num_classes, [names.get(i, f"class_{i}") for i in range(num_classes)])
