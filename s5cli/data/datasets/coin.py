"""COIN (Tang et al., CVPR 2019): 11,827 instructional YouTube videos, 180 tasks (top-1 over the task label).

Annotations: `COIN.json` with `{"database": {youtube_id: {"recipe_type": int, "class": str,
"subset": "training"|"testing", "duration": float, ...}}}`. Videos: `<root>/videos/<id>.<ext>`,
`<root>/<id>.<ext>`, or one folder per task, `<root>/videos/<recipe_type>/<id>.<ext>` or
`<root>/<recipe_type>/<id>.<ext>` (what the dataset's own download script writes, and what ViS4mer reads).
No val split: `data.val_fraction` > 0 holds out a stable fraction of training, otherwise
val is the testing subset.
"""

from __future__ import annotations

import json
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
    index_videos,
    missing_in_split,
    read_annotation_text,
    report_missing,
    require_root,
    split_with_holdout,
    val_fraction_of,
    val_is_test_warning,
)

SUBSETS = {"training": "train", "testing": "test"}


@dataclass
class COINEntry:
    """One video of COIN.json."""

    video_id: str
    label: int
    class_name: str
    split: str  # "train" | "test"
    duration: float | None


def annotations_file(data: Any) -> Path:
    """COIN.json (data.annotations may name the file or its folder; default `<root>/COIN.json`)."""
    given = data_field(data, "annotations") or data_field(data, "root")
    if not given:
        raise UserError("data.annotations is not set: point it at COIN.json")
    path = Path(given).expanduser()
    if path.is_dir():
        path = path / "COIN.json"
    if not path.is_file():
        raise UserError(f"COIN annotations not found: expected {path} (set data.annotations to COIN.json)")
    return path


def parse_annotations(path: Path) -> list[COINEntry]:
    """Every entry of COIN.json's `database`; syntax errors give the line, bad entries the video id."""
    try:
        document = json.loads(read_annotation_text(path))
    except json.JSONDecodeError as error:
        raise AnnotationError(path, error.lineno, f"invalid JSON: {error.msg}") from None
    database = document.get("database") if isinstance(document, dict) else None
    if not isinstance(database, dict):
        raise AnnotationError(path, None, "no 'database' object at the top level")
    entries: list[COINEntry] = []
    for video_id, entry in database.items():
        if not isinstance(entry, dict):
            raise AnnotationError(path, None, f"database[{video_id!r}] is not an object")
        label = entry.get("recipe_type")
        subset = entry.get("subset")
        if not isinstance(label, int) or isinstance(label, bool) or label < 0:
            raise AnnotationError(
                path, None, f"database[{video_id!r}].recipe_type must be a whole number >= 0"
            )
        if subset not in SUBSETS:
            raise AnnotationError(
                path, None, f"database[{video_id!r}].subset is {subset!r}, expected 'training' or 'testing'"
            )
        duration = entry.get("duration")
        entries.append(
            COINEntry(
                video_id,
                label,
                str(entry.get("class", f"class_{label}")),
                SUBSETS[subset],
                float(duration) if isinstance(duration, int | float) else None,
            )
        )
    return entries


def list_records(data: Any, split: str, show_progress: bool = True) -> RecordList:
    """Records of one split whose video exists under data.root (missing ones are counted in `.missing`)."""
    check_split(split, "COIN")
    entries = parse_annotations(annotations_file(data))
    root = require_root(data, "COIN")
    videos = index_videos(root)
    videos.update(index_videos(root / "videos"))
    # The official download script sorts videos into one folder per task (recipe_type): a dataset
    # downloaded that way was reported missing whole. One listing per task present in the annotations.
    # data.root may be the release folder or its videos/ (as the bundled recipe has it).
    for label in sorted({entry.label for entry in entries}):
        for folder in (root / "videos" / str(label), root / str(label)):
            for video_id, path in index_videos(folder).items():
                videos.setdefault(video_id, path)
    val_fraction = val_fraction_of(data)
    source = "train" if split == "train" or (split == "val" and val_fraction > 0) else "test"
    chosen = [entry for entry in entries if entry.split == source]
    records: list[VideoRecord] = []
    missing: list[str] = []
    for entry in chosen:
        path = videos.get(entry.video_id)
        if path is None:
            missing.append(entry.video_id)
        else:
            records.append(VideoRecord(entry.video_id, path, entry.label, entry.duration))
    if not chosen:
        subset = "training" if source == "train" else "testing"
        raise NoVideosError(f"{annotations_file(data)} has no entries with subset '{subset}'")
    if not records:
        raise NoVideosError(
            f"none of the {len(chosen)} COIN {source} videos is under data.root {root} "
            f"(expected e.g. {root / 'videos' / chosen[0].video_id}.mp4 or "
            f"{root / 'videos' / str(chosen[0].label) / chosen[0].video_id}.mp4)",
            missing=missing_in_split(missing, split, val_fraction),  # the videos of this split
        )
    if source == "train":
        records = split_with_holdout(records, records, split, val_fraction)
        missing = missing_in_split(missing, split, val_fraction)
    # Counted after carving, under the split's own name: a carved val reported every train video missing.
    report_missing(f"COIN {split if source == 'train' else source}", root, missing, len(records) + len(missing))
    return RecordList(records, missing)


def val_split_warning(data: Any) -> str | None:
    """Why validating on this recipe's val split chooses on test videos (no data.val_fraction), else None."""
    return val_is_test_warning("COIN", val_fraction_of(data))


def task_info(data: Any) -> TaskInfo:
    """Task classification over recipe_type (classes = max id + 1), names from the `class` field."""
    names: dict[int, str] = {}
    path = annotations_file(data)
    entries = parse_annotations(path)
    check_class_ids((entry.label, path, None, f"database[{entry.video_id!r}].recipe_type") for entry in entries)
    for entry in entries:
        names.setdefault(entry.label, entry.class_name)
    if len(names) < 2:
        raise AnnotationError(path, None, "fewer than 2 classes in the database")
    num_classes = max(names) + 1
    return TaskInfo("classification", num_classes, [names.get(i, f"class_{i}") for i in range(num_classes)])
