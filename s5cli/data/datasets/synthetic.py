"""The bundled synthetic task as a dataset: videos are generated on demand (seeded, atomic, cached on disk).

Root: `data.root` when set, otherwise `.s5cache/synthetic/<key of the knobs>` in the working directory, so a
change of any knob never reuses videos made with other settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from s5cli.data.cache_lock import mark_in_use
from s5cli.data.synthetic_video import SyntheticSpec, class_name, generate_split, spec_from_section

from .base import RecordList, TaskInfo, VideoRecord, check_split, data_field

DEFAULT_PARENT = Path(".s5cache") / "synthetic"


def spec_of(data: Any) -> SyntheticSpec:
    """The generator knobs of a DataSection (its `synthetic` sub-section; defaults when absent)."""
    return spec_from_section(data_field(data, "synthetic"))


def synthetic_root(data: Any) -> Path:
    """Folder holding `<split>/<video_id>.mp4|.json` for these knobs."""
    root = data_field(data, "root")
    if root not in (None, ""):
        return Path(root).expanduser()
    return DEFAULT_PARENT / spec_of(data).key()


def list_records(data: Any, split: str, show_progress: bool = True) -> RecordList:
    """Records of one split, generating whichever videos are not on disk yet."""
    check_split(split, "synthetic")
    spec = spec_of(data)
    root = synthetic_root(data)
    mark_in_use(root)  # `s5 cache clean` leaves the videos alone while this process uses them
    truths = generate_split(spec, root, split, show_progress=show_progress)
    duration = spec.frames / spec.fps
    return RecordList(
        VideoRecord(truth["video_id"], root / split / f"{truth['video_id']}.mp4", truth["label"], duration)
        for truth in truths
    )


def task_info(data: Any) -> TaskInfo:
    """E*E-way classification of (first event type, last event type)."""
    spec = spec_of(data)
    names = [class_name(label, spec.num_event_types) for label in range(spec.num_classes)]
    return TaskInfo("classification", spec.num_classes, names)
