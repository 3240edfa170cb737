"""LVU (Wu & Krähenbühl, CVPR 2021): nine long-form movie tasks over YouTube clips.

Annotations: `<annotations>/<task>/{train,val,test}.csv`, space separated with a header line; `<annotations>` is
data.annotations, else `<root>/lvu_1.0` (the bundled recipes leave it null, so data.root alone is enough).
Classification tasks: `class_id class_name... youtube_id imdb_id` (the name may contain spaces, so only the
first field and the last two are positional). `like_ratio`: `like_count dislike_count youtube_id imdb_id`,
target like/(like+dislike)*10. `view_count`: `view_count youtube_id imdb_id`, target ln(view_count).
Regression targets are centred by the mean over the train split file (not scaled; ViS4mer subtracts fixed
constants, 9.1382 and 11.7643, instead); `REGRESSION_TARGETS` says how a prediction reads. Videos:
`<root>/<youtube_id>.<ext>`.
"""

from __future__ import annotations

import csv
import difflib
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s5cli.errors import UserError

from .base import (
    SPLITS,
    VIDEO_SUFFIXES,
    AnnotationError,
    NoVideosError,
    RecordList,
    TaskInfo,
    VideoRecord,
    check_class_ids,
    check_split,
    data_field,
    duplicate_check,
    index_videos,
    read_annotation_text,
    report_missing,
    require_root,
    warn_once,
)

CLASSIFICATION_TASKS = ("relationship", "way_speaking", "scene", "director", "genre", "writer", "year")
REGRESSION_TASKS = ("like_ratio", "view_count")
TASKS = CLASSIFICATION_TASKS + REGRESSION_TASKS
DURATIONS_FILE = "lvu_durations.csv"
# The first line of the release's split files, by task kind (`class_name` may hold spaces in data rows only).
CLASSIFICATION_HEADER = ["class_id", "class_name", "youtube_id", "imdb_id"]
HEADERS = {
    "like_ratio": ["like_count", "dislike_count", "youtube_id", "imdb_id"],
    "view_count": ["view_count", "youtube_id", "imdb_id"],
}

# Past this, e^value overflows a float: no count is shown for such a (diverged) prediction.
_LARGEST_LOG_COUNT = 700.0


@dataclass(frozen=True)
class TargetScale:
    """What a regression task's target is on its own scale (the split file's numbers, before centring), so a
    prediction can be shown as that: `s5 eval --video` printed "predicted value 12.0093" for ln(views)."""

    name: str  # printed before the value: "ln(view count)"
    count: str | None = None  # the target is ln(a count of these): e^value is shown as "~164,000 views"

    def describe(self, value: float) -> str:
        """`value` as a user reads it: "like ratio x10 9.3400", "ln(view count) 12.0093 (~164,000 views)"."""
        text = f"{self.name} {value:.4f}"
        if self.count is None or not value < _LARGEST_LOG_COUNT:
            return text
        return f"{text} (~{_three_figures(math.exp(value)):,} {self.count})"


def _three_figures(number: float) -> int:
    """`number` rounded to three significant figures: a count from a log prediction is no more precise."""
    return round(float(f"{number:.3g}"))


# The one place the regression targets' meaning is written down for users (the parsing below computes them).
REGRESSION_TARGETS = {
    "like_ratio": TargetScale("like ratio x10"),  # like_count / (like_count + dislike_count) x 10, 0..10
    "view_count": TargetScale("ln(view count)", count="views"),  # natural log of the view count
}


def target_scale(data: Any) -> TargetScale | None:
    """The target scale of the recipe's task (None for a classification task)."""
    return REGRESSION_TARGETS.get(data_field(data, "task"))


@dataclass
class LVURow:
    """One parsed line of an LVU split file (target before centring)."""

    youtube_id: str
    imdb_id: str
    target: int | float
    class_name: str | None
    line: int


def _number(text: str, path: Path, line: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise AnnotationError(path, line, f"{what} {text!r} is not a whole number") from None
    if value < 0:
        raise AnnotationError(path, line, f"{what} {value} is negative")
    return value


def parse_split_file(path: Path, task: str) -> list[LVURow]:
    """Parse every line of one LVU split file; a malformed line raises AnnotationError with its number."""
    if not path.is_file():
        raise _missing_split_file(path, task)
    rows: list[LVURow] = []
    check_unique = duplicate_check(path)  # within one file: tasks share videos across files, legitimately
    header_seen = False
    for number, raw in enumerate(read_annotation_text(path).splitlines(), start=1):
        fields = raw.split()
        if not fields:
            continue
        first, header_seen = not header_seen, True
        # Only the release's own header is skipped: taking any first line that does not start with a
        # number for one dropped a data row with a typo in its first field ("O Comedy ..."), unreported.
        if first and fields == header_of(task):
            continue
        try:
            row = _parse_fields(fields, task, path, number)
        except AnnotationError as error:
            if not first:
                raise
            # A header of another spelling ("label name youtube_id imdb_id") reads as a bad first row.
            raise AnnotationError(path, number, f"{error.problem} (a header line? the release's "
                                  f"is '{' '.join(header_of(task))}')") from None
        check_unique(row.youtube_id, number)
        rows.append(row)
    return rows


def header_of(task: str) -> list[str]:
    """The fields of the header line the LVU release's split files of `task` begin with."""
    return HEADERS.get(task, CLASSIFICATION_HEADER)


def _missing_split_file(path: Path, task: str) -> UserError:
    """The error for a split file that is not there, saying which folder to fix.

    Why two cases: with train.csv present the folder is the right one (data.annotations is set well) and
    only this file was not copied; telling the user to set data.annotations sent them to a setting that
    was already right."""
    present = sorted(f"{split}.csv" for split in SPLITS if (path.parent / f"{split}.csv").is_file())
    if present:
        return UserError(f"LVU split file {path} not found, though {path.parent} holds {', '.join(present)}: "
                         f"copy {task}/{path.name} from the LVU release (lvu_1.0) into that folder")
    return UserError(f"LVU split file {path} not found: set data.annotations to the lvu_1.0 folder")


def _parse_fields(fields: list[str], task: str, path: Path, line: int) -> LVURow:
    if task == "view_count":
        if len(fields) != 3:
            raise AnnotationError(
                path, line, f"expected 'view_count youtube_id imdb_id', got {len(fields)} fields"
            )
        views = _number(fields[0], path, line, "view_count")
        if views <= 0:
            raise AnnotationError(path, line, "view_count must be positive (its log is the target)")
        return LVURow(fields[1], fields[2], math.log(views), None, line)
    if task == "like_ratio":
        if len(fields) != 4:
            raise AnnotationError(
                path,
                line,
                f"expected 'like_count dislike_count youtube_id imdb_id', got {len(fields)} fields",
            )
        likes = _number(fields[0], path, line, "like_count")
        dislikes = _number(fields[1], path, line, "dislike_count")
        if likes + dislikes == 0:
            raise AnnotationError(path, line, "like_count + dislike_count is 0: the ratio is undefined")
        return LVURow(fields[2], fields[3], likes / (likes + dislikes) * 10.0, None, line)
    if len(fields) < 4:
        raise AnnotationError(
            path, line, f"expected 'class_id class_name youtube_id imdb_id', got {len(fields)} fields"
        )
    class_id = _number(fields[0], path, line, "class_id")
    return LVURow(fields[-2], fields[-1], class_id, " ".join(fields[1:-2]), line)


def _task(data: Any) -> str:
    task = data_field(data, "task")
    if task in TASKS:
        return task
    if not task:
        raise UserError(f"data.task is not set for LVU: use one of {', '.join(TASKS)}")
    close = difflib.get_close_matches(str(task), TASKS, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"use one of {', '.join(TASKS)}"
    raise UserError(f"unknown LVU task data.task={task!r}", hint=hint)


def annotations_dir(data: Any, task: str) -> Path:
    """The folder holding `<task>/{train,val,test}.csv` (data.annotations, else `<root>/lvu_1.0`)."""
    given = data_field(data, "annotations")
    if given:
        folder = Path(given).expanduser()
        if folder.is_file():  # a split file (`.../lvu_1.0/genre/train.csv`): its task folder
            folder = folder.parent
    else:
        root = data_field(data, "root")
        if not root:
            raise UserError("data.annotations is not set: point it at the lvu_1.0 folder of split files")
        folder = Path(root).expanduser() / "lvu_1.0"
    if (folder / task / "train.csv").is_file():
        return folder
    # Also accept the task folder itself (`.../lvu_1.0/genre`).
    if folder.name == task and (folder / "train.csv").is_file():
        return folder.parent
    # Say where the folder came from: with data.annotations null the user may not know <root>/lvu_1.0 was tried.
    origin = "data.annotations" if given else "data.annotations is null, so <data.root>/lvu_1.0"
    raise _annotations_not_found(folder, task, origin)


def _annotations_not_found(folder: Path, task: str, origin: str) -> UserError:
    """The error for a `folder` without `<task>/train.csv`: the lvu_1.0 folder inside it (the folder above
    lvu_1.0 was given), the tasks it holds (a task folder not copied), or where to point data.annotations."""
    expected = f"expected {folder / task / 'train.csv'} ({origin}"
    inside = _lvu_folder_inside(folder, task)
    if inside is not None:
        return UserError(f"LVU annotations not found: {expected}); {inside} holds the split files: set "
                         f"data.annotations={inside}")
    others = _task_folders(folder)
    if others:  # the lvu_1.0 folder is right; only this task's split files are not in it
        return UserError(f"LVU task {task!r} has no split files: {expected} holds {', '.join(others)}); copy the "
                         f"{task}/ folder of lvu_1.0 there, or pick one of those")
    return UserError(f"LVU annotations not found: {expected}); set data.annotations to the lvu_1.0 folder")


def _task_folders(folder: Path) -> list[str]:
    """The LVU tasks `folder` holds split files of. Only task names count: the folder above lvu_1.0 also
    holds `Breakfast/train.csv`, which was reported as a task of an lvu_1.0 folder."""
    return sorted(task for task in TASKS if (folder / task / "train.csv").is_file())


def _lvu_folder_inside(folder: Path, task: str) -> Path | None:
    """A folder directly inside `folder` that holds `<task>/train.csv` (`lvu_1.0` first), or None."""
    try:
        children = sorted((child for child in folder.iterdir() if child.is_dir()),
                          key=lambda child: (child.name != "lvu_1.0", child.name))
    except OSError:  # missing or unreadable: nothing inside to suggest
        return None
    return next((child for child in children if (child / task / "train.csv").is_file()), None)


def read_durations(path: Path) -> dict[str, float]:
    """`videoid,duration` rows of lvu_durations.csv (seconds); unreadable rows are skipped with one warning.

    Why not an error: the durations only ride along on each `VideoRecord` (nothing in training or
    evaluation reads them), and one bad row (`abcdefghijk,NA`) stopped every LVU command."""
    durations: dict[str, float] = {}
    bad: list[str] = []
    text = read_annotation_text(path)
    for number, row in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
        if not row or (not durations and not bad and row[0].strip() == "videoid"):
            continue
        seconds = _duration(row)
        if seconds is None:
            bad.append(f"{path}:{number}: {','.join(row)!r}")
        else:
            durations[row[0]] = seconds
    if bad:
        others = f" and {len(bad) - 1} other row{'s' * (len(bad) > 2)}" if len(bad) > 1 else ""
        warn_once(("durations", str(path), str(len(bad))),
                  f"{bad[0]}{others} skipped: not 'videoid,duration' with a number of seconds (durations "
                  "are only recorded, not used: correct or remove the rows to silence this)")
    return durations


def _duration(row: list[str]) -> float | None:
    """The seconds of a `videoid,duration` row, or None when the row is not one."""
    if len(row) != 2:
        return None
    try:
        return float(row[1])
    except ValueError:
        return None


def _all_rows(folder: Path, task: str) -> dict[str, list[LVURow]]:
    return {
        split: parse_split_file(folder / task / f"{split}.csv", task)
        for split in ("train", "val", "test")
        if split == "train" or (folder / task / f"{split}.csv").is_file()
    }


def train_mean(folder: Path, task: str) -> float:
    """Mean regression target over the train split file (the centring offset)."""
    rows = parse_split_file(folder / task / "train.csv", task)
    if not rows:
        raise AnnotationError(folder / task / "train.csv", None, "no data lines")
    return sum(float(row.target) for row in rows) / len(rows)


def list_records(data: Any, split: str, show_progress: bool = True) -> RecordList:
    """Records of one LVU split whose video exists under data.root (missing ones are counted in `.missing`)."""
    check_split(split, "LVU")
    task = _task(data)
    folder = annotations_dir(data, task)
    rows = parse_split_file(folder / task / f"{split}.csv", task)
    offset = train_mean(folder, task) if task in REGRESSION_TASKS else 0.0
    root = require_root(data, "LVU")
    durations_path = folder / DURATIONS_FILE
    durations = read_durations(durations_path) if durations_path.is_file() else {}
    videos = index_videos(root)
    records: list[VideoRecord] = []
    missing: list[str] = []
    for row in rows:
        path = videos.get(row.youtube_id)
        if path is None:
            missing.append(row.youtube_id)
            continue
        label: int | float = row.target - offset if task in REGRESSION_TASKS else int(row.target)
        records.append(VideoRecord(row.youtube_id, path, label, durations.get(row.youtube_id)))
    if not rows:
        split_file = folder / task / f"{split}.csv"
        raise NoVideosError(f"{split_file} lists no videos: add its rows or check data.annotations")
    if not records:
        raise NoVideosError(
            f"none of the {len(rows)} LVU {task}/{split} videos is under data.root {root} "
            f"(expected <youtube_id>{'|'.join(VIDEO_SUFFIXES)}, e.g. {root / rows[0].youtube_id}.mp4)",
            missing=missing,
        )
    report_missing(f"LVU {task}/{split}", root, missing, len(rows))
    return RecordList(records, missing)


def task_info(data: Any) -> TaskInfo:
    """Classification (classes = max class id + 1 over all splits) or a single regression output."""
    task = _task(data)
    folder = annotations_dir(data, task)
    if task in REGRESSION_TASKS:
        return TaskInfo("regression", 1, None, target_offset=train_mean(folder, task))
    names: dict[int, str] = {}
    all_rows = _all_rows(folder, task)
    check_class_ids((int(row.target), folder / task / f"{split}.csv", row.line, "class id")
                    for split, rows in all_rows.items() for row in rows)
    for rows in all_rows.values():
        for row in rows:
            names.setdefault(int(row.target), row.class_name or str(row.target))
    num_classes = max(names) + 1 if names else 0
    if num_classes < 2:
        raise AnnotationError(folder / task / "train.csv", None, "fewer than 2 classes in the split files")
    return TaskInfo("classification", num_classes, [names.get(i, f"class_{i}") for i in range(num_classes)])
