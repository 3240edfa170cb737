"""Records, annotation reading and split rules shared by every dataset adapter.

An adapter turns a dataset's annotation files into `VideoRecord`s (one per video: id, path, label). Feature
extraction writes backbone tokens per video id into the feature cache; `token_dataset.TokenDataset` then
serves them to training and evaluation. Nothing here imports torch: listing a split needs none.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s5cli.errors import UserError

# Containers accepted for dataset videos, in order of preference when a video exists in several.
VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg")
SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass
class VideoRecord:
    """One video of a dataset split: where it is and what its label is."""

    video_id: str
    path: Path
    label: int | float
    duration: float | None = None


@dataclass
class TaskInfo:
    """What a dataset asks the model to predict."""

    kind: str  # "classification" | "regression"
    num_outputs: int
    class_names: list[str] | None = None
    # Regression: what the model's output is shifted by from the target's own scale. LVU centres its targets
    # by the train split's mean, and `s5 eval --video` adds it back (a like ratio on 0-10, not around 0).
    target_offset: float = 0.0


class RecordList(list):
    """A list of `VideoRecord`s that also remembers which annotated videos were not found on disk."""

    def __init__(self, records: Iterable[VideoRecord] = (), missing: Iterable[str] = ()) -> None:
        super().__init__(records)
        self.missing: list[str] = list(missing)


class NoVideosError(UserError):
    """A split with nothing to work on: its annotation file lists no videos, or none of them is on disk.

    Training needs every split it reads, so there this is an error; `s5 extract` skips such a split with a
    warning instead, because extracting the splits a user does have is still worth doing.

    `missing`: the ids the split lists that are not on disk (all of them; none for an empty split file).
    Why: `s5 extract` counts them as missing, so `--strict` fails and the summary's "not on disk" is true
    for a split of which nothing was downloaded, where the skipped split used to count as 0 missing.
    """

    def __init__(self, message: str, *, missing: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.missing: list[str] = list(missing)


class AnnotationError(UserError):
    """A malformed annotation file; the message names the file and the line."""

    def __init__(self, path: str | os.PathLike[str], line: int | None, problem: str) -> None:
        self.path = Path(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {problem}")


# How far the largest class id may lie above the ids in use: classes are numbered from 0, so the largest id is
# about the number of distinct ids. Far above it (10x, and above 1,000 so that a subset of COIN's 180 tasks, or
# any real dataset here, never trips it), or above 10,000 at all, it is a typo: `max id + 1` classes would
# allocate a name per id, a head output per id and a confusion matrix of that size squared (a MemoryError,
# or "out of memory" blamed on the frames, for one stray digit).
CLASS_ID_SPREAD = 10
CLASS_ID_FLOOR = 1_000
MAX_CLASS_ID = 10_000


def class_id_limit(distinct: int) -> int:
    """The largest class id taken as real when `distinct` different ids are in use."""
    return min(MAX_CLASS_ID, max(CLASS_ID_FLOOR, CLASS_ID_SPREAD * distinct))


def check_class_ids(labelled: Iterable[tuple[int, str | os.PathLike[str], int | None, str]]) -> None:
    """AnnotationError at the largest class id when it is implausible (`class_id_limit`), else nothing.

    `labelled`: (class id, file, line or None, what holds it, e.g. "class id" or "database['x'].recipe_type")
    for every annotated video; the error names the file and line (or entry) of the largest."""
    items = list(labelled)
    if not items:
        return
    distinct = {item[0] for item in items}
    largest = max(items, key=lambda item: item[0])
    class_id, path, line, what = largest
    if class_id <= class_id_limit(len(distinct)):
        return
    others = max(distinct - {class_id}, default=None)
    compared = (f"far above the other {len(distinct) - 1} class id{'s' * (len(distinct) > 2)} (the largest "
                f"{others})" if others is not None else f"the only class id, far above {class_id_limit(1)}")
    raise AnnotationError(path, line, f"{what} {class_id} is {compared}: class ids number the classes from 0; "
                          "correct the typo")


def read_annotation_text(path: str | os.PathLike[str]) -> str:
    """The text of an annotation file, or AnnotationError naming the line of the first non-UTF-8 byte.

    Split files are often edited in spreadsheets, which write a byte-order mark (dropped here, as
    `utf-8-sig` does) or save in a legacy code page; the latter would otherwise surface as a bare
    UnicodeDecodeError without the file's name.
    """
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise AnnotationError(
            path, line, f"byte 0x{data[error.start]:02x} is not UTF-8 text; save the file as UTF-8"
        ) from None


def data_field(data: Any, name: str, default: Any = None) -> Any:
    """Read a field of a DataSection (or a dict, in tests) with a default."""
    if isinstance(data, dict):
        return data.get(name, default)
    return getattr(data, name, default)


def val_fraction_of(data: Any) -> float:
    """data.val_fraction as a number (0 when unset): the share of train held out as val (Breakfast, COIN)."""
    return float(data_field(data, "val_fraction", 0.0) or 0.0)


def require_root(data: Any, dataset: str) -> Path:
    """The dataset root from the recipe, which must exist as a folder."""
    root = data_field(data, "root")
    if root in (None, ""):
        raise UserError(f"data.root is not set: point it at the folder holding the {dataset} videos")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise UserError(
            f"data.root {path} does not exist or is not a folder: point it at the {dataset} videos"
        )
    return path


def index_videos(folder: Path) -> dict[str, Path]:
    """Map file stem -> path for every video file directly in `folder` (one directory listing, no stats)."""
    rank = {suffix: i for i, suffix in enumerate(VIDEO_SUFFIXES)}
    found: dict[str, Path] = {}
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return found
    for entry in entries:
        stem, suffix = os.path.splitext(entry.name)
        suffix = suffix.lower()
        if suffix not in rank or (entry.name.startswith(".") and entry.name.endswith(".tmp" + suffix)):
            continue
        if not entry.is_file():  # a folder or a dangling link named ID.mp4 hid a real ID.mkv beside it
            continue
        previous = found.get(stem)
        if previous is None or rank[suffix] < rank[previous.suffix.lower()]:
            found[stem] = Path(entry.path)
    return found


def find_video(candidates: Sequence[Path]) -> Path | None:
    """The first existing file among `candidates` (paths without suffix) x VIDEO_SUFFIXES, each suffix in
    lower or upper case (`index_videos` ignores case too; copies from some cameras and Windows tools
    end in .AVI / .MP4, and a case-sensitive file system hid them)."""
    for stem in candidates:
        for suffix in VIDEO_SUFFIXES:
            for spelled in (suffix, suffix.upper()):
                path = stem.with_name(stem.name + spelled)
                if path.is_file():
                    return path
    return None


def in_holdout(video_id: str, fraction: float) -> bool:
    """Stable pseudo-random membership of a video in a held-out fraction (independent of order and seed)."""
    digest = hashlib.sha1(video_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split_with_holdout(
    train: list[VideoRecord], test: list[VideoRecord], split: str, val_fraction: float,
    group: Callable[[str], str] | None = None,
) -> list[VideoRecord]:
    """Datasets without a val split: carve val out of train (`val_fraction` > 0) or evaluate val on test.

    `group` maps a video id to what is held out as a whole (default: the video itself): Breakfast films
    each session with up to five cameras, so holding out single videos left the same session, seen from
    another camera, in train, and validation scored near-copies of training clips.
    """
    if split == "test":
        return test
    if val_fraction <= 0:
        return train if split == "train" else test
    held = [_held_out(record.video_id, val_fraction, group) for record in train]
    if split == "val":
        return [record for record, h in zip(train, held, strict=True) if h]
    return [record for record, h in zip(train, held, strict=True) if not h]


def missing_in_split(missing: list[str], split: str, val_fraction: float,
                     group: Callable[[str], str] | None = None) -> list[str]:
    """The ids of `missing` (train videos not on disk) that `split_with_holdout` would put in `split`:
    so `s5 eval --split val` counts only the val videos it lacks, not every missing train video."""
    if split not in ("train", "val") or val_fraction <= 0:
        return missing
    return [video_id for video_id in missing if _held_out(video_id, val_fraction, group) == (split == "val")]


def _held_out(video_id: str, val_fraction: float, group: Callable[[str], str] | None) -> bool:
    """Whether a train video goes to val: its group (default: the video itself) is in the held-out fraction."""
    return in_holdout(group(video_id) if group else video_id, val_fraction)


def check_split(split: str, dataset: str) -> None:
    """Reject a split name other than train/val/test."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r} for {dataset}: use one of {', '.join(SPLITS)}")


_WARNED: set[tuple[str, ...]] = set()


def first_process() -> bool:
    """Whether this process speaks for all: RANK 0 of a torchrun group, or a process on its own.

    Why: every rank lists the same splits, so a warning about them was printed once per process (eight
    identical lines on an eight-GPU machine). A RANK that is no number is left to the commands that read it.
    """
    from s5cli import torchrun_env

    try:
        # RANK set by hand (`s5 extract`'s share of several machines, each with its own copy of the data)
        # is no torchrun group: each process names its own missing videos.
        return not torchrun_env.launched_by_torchrun() or torchrun_env.rank() == 0
    except UserError:
        return True


def warn_once(key: tuple[str, ...], message: str) -> None:
    """Print `message` as a warning the first time `key` is seen in this process, on the first process only.

    Listing runs once per split and command step (train, then val, then again for extraction): the same
    finding would otherwise be repeated."""
    if key in _WARNED or not first_process():
        return
    _WARNED.add(key)
    from s5cli.cli.console import print_warning

    print_warning(message)


def report_missing(what: str, root: Path, missing: Sequence[str], total: int) -> None:
    """Warn once (per dataset split and count) that some annotated videos are not on disk and are skipped.

    `what` names the split as the command uses it (`Breakfast val`, not the train.csv it was carved from),
    and `total` counts that split's own videos."""
    if not missing:
        return
    examples = ", ".join(missing[:3])
    warn_once(("missing", what, str(root), str(len(missing))),
              f"{what}: {len(missing)} of {total} videos not found under {root}; skipped (e.g. {examples})")


def duplicate_check(path: str | os.PathLike[str]) -> Callable[[str, int], None]:
    """A checker that raises AnnotationError when a video id comes again within one split file.

    Why: a second line for the same video (perhaps with another label) was accepted, so the video weighed
    twice in training, and evaluation, which merges windows by video id, kept whichever label came first."""
    seen: dict[str, int] = {}

    def check(video_id: str, line: int) -> None:
        first = seen.setdefault(video_id, line)
        if first != line:
            raise AnnotationError(path, line, f"video {video_id!r} is listed again (first on line {first}): "
                                  "keep one of the two lines")

    return check


def val_is_test_warning(dataset: str, val_fraction: float) -> str | None:
    """The warning for a training run whose val split is the test split (no `data.val_fraction`), else None.

    Why: validation picks the best checkpoint, steps the plateau schedule and stops early, so with the
    test videos as val every one of those choices is made on the test set that `s5 eval` then scores."""
    if val_fraction > 0:
        return None
    return (f"data.val_fraction=0: {dataset}'s val split is its test split, so the best checkpoint, the plateau "
            "schedule and early stopping are chosen on test videos: set data.val_fraction (e.g. 0.1) for a "
            "held-out val")
