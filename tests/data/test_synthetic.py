"""The bundled synthetic task: seeded plans, real mp4 files, visible events, on-demand generation."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest

from s5cli.data.cache_lock import in_use
from s5cli.data.datasets import list_records, task_info
from s5cli.data.datasets.synthetic import synthetic_root
from s5cli.data.synthetic_video import (
    PALETTE,
    SyntheticSpec,
    event_mask,
    generate_split,
    load_ground_truth,
    plan_video,
    spec_from_section,
    split_labels,
)
from s5cli.errors import UserError

SMALL = {"seed": 3, "num_train": 9, "num_val": 3, "num_test": 0, "frames": 16, "size": 64, "grid": 4}


def decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def plans(spec: SyntheticSpec, split: str) -> list[dict]:
    return [plan_video(spec, split, i, label) for i, label in enumerate(split_labels(spec, split))]


def test_same_seed_same_plans_other_seed_differs() -> None:
    spec = SyntheticSpec(seed=7, num_train=50)
    assert plans(spec, "train") == plans(SyntheticSpec(seed=7, num_train=50), "train")
    other = plans(SyntheticSpec(seed=8, num_train=50), "train")
    assert [p["events"] for p in other] != [p["events"] for p in plans(spec, "train")]
    # Splits draw from their own streams: val is not a copy of (a prefix of) train.
    spec = SyntheticSpec(seed=7, num_train=100, num_val=100)
    val, train = plans(spec, "val"), plans(spec, "train")
    assert len(val) == len(train) == 100
    assert [p["events"] for p in val] != [p["events"] for p in train]


@pytest.mark.parametrize(
    "knobs",
    [{}, {"frames": 60, "events_per_video": 5, "num_event_types": 4}, {"frames": 8, "events_per_video": 2}],
)
def test_events_are_ordered_disjoint_and_define_the_label(knobs: dict) -> None:
    spec = SyntheticSpec(num_train=64, **knobs)
    labels = split_labels(spec, "train")
    counts = Counter(labels)
    assert set(counts) == set(range(spec.num_classes))
    assert max(counts.values()) - min(counts.values()) <= 1  # balanced
    for plan in plans(spec, "train"):
        events = plan["events"]
        assert len(events) == spec.events_per_video
        assert plan["label"] == events[0]["type"] * spec.num_event_types + events[-1]["type"]
        for before, after in itertools.pairwise(events):
            assert before["end"] < after["start"]  # at least one frame apart
        assert events[0]["start"] >= 0 and events[-1]["end"] <= spec.frames
        assert all(e["end"] - e["start"] >= 2 for e in events)
        assert all(0 <= e["row"] < spec.grid and 0 <= e["col"] < spec.grid for e in events)


def test_single_event_labels_are_on_the_diagonal() -> None:
    spec = SyntheticSpec(num_train=12, events_per_video=1)
    assert set(split_labels(spec, "train")) == {0, 4, 8}


@pytest.mark.parametrize(
    ("knobs", "field"),
    [
        ({"clutter": 1.5}, "clutter"),
        ({"size": 48}, "size"),
        ({"size": 100}, "size"),
        ({"grid": 5}, "grid"),
        ({"frames": 5, "events_per_video": 3}, "frames"),
    ],
)
def test_bad_knobs_are_user_errors(knobs: dict, field: str) -> None:
    with pytest.raises(UserError, match=field):
        SyntheticSpec(**knobs)


def test_written_videos_show_the_events_after_compression(tmp_path: Path) -> None:
    spec = SyntheticSpec(seed=1, num_train=3, num_val=0, num_test=0, clutter=1.0)
    truths = generate_split(spec, tmp_path, "train", show_progress=False)
    cell = spec.size // spec.grid
    for truth in truths:
        path = tmp_path / "train" / f"{truth['video_id']}.mp4"
        assert load_ground_truth(path) == truth
        video = decode(path).astype(np.float32)
        assert video.shape == (spec.frames, spec.size, spec.size, 3)
        # Mean colour per grid cell, like the patch_pool backbone sees it.
        cells = video.reshape(spec.frames, spec.grid, cell, spec.grid, cell, 3).mean(axis=(2, 4))
        saturation = cells.max(axis=-1) - cells.min(axis=-1)
        mask = event_mask(truth)
        assert saturation[mask].min() > 90  # events are vivid ...
        assert saturation[~mask].max() < 50  # ... and nothing else is
        for event in truth["events"]:
            colour = cells[event["start"] : event["end"], event["row"], event["col"]].mean(axis=0)
            distances = [np.linalg.norm(colour - np.array(rgb)) for _, rgb in PALETTE[: spec.num_event_types]]
            assert int(np.argmin(distances)) == event["type"]


def test_list_records_generates_once_and_reuses(tmp_path: Path) -> None:
    data = {"dataset": "synthetic", "root": tmp_path / "syn", "synthetic": SMALL}
    records = list_records(data, "train")
    assert len(records) == 9
    assert in_use(tmp_path / "syn")  # `s5 cache clean` leaves videos alone while a job uses them
    key = SyntheticSpec(**SMALL).key()[:8]
    assert [r.video_id for r in records] == [f"train_{i:05d}-{key}" for i in range(9)]
    assert all(r.path.is_file() and r.path.with_suffix(".json").is_file() for r in records)
    assert [r.label for r in records] == [
        json.loads(r.path.with_suffix(".json").read_text())["label"] for r in records
    ]
    assert records[0].duration == pytest.approx(16 / 8)
    stamps = {r.path: r.path.stat().st_mtime_ns for r in records}
    # A deleted video is regenerated, identical in its ground truth; the others are left alone.
    truth = records[4].path.with_suffix(".json").read_text()
    records[4].path.unlink()
    again = list_records(data, "train")
    assert [r.label for r in again] == [r.label for r in records]
    assert records[4].path.is_file() and records[4].path.with_suffix(".json").read_text() == truth
    assert all(path.stat().st_mtime_ns == stamp for path, stamp in stamps.items() if path != records[4].path)
    assert not list((tmp_path / "syn" / "train").glob(".*"))  # no temporary files left behind
    assert len(list_records(data, "val")) == 3
    # The decode path of real datasets (decord) reads the files too.
    import decord

    reader = decord.VideoReader(str(records[0].path))
    assert len(reader) == 16 and reader[0].shape == (64, 64, 3)


def test_generation_says_one_line_in_a_log_and_nothing_when_quiet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 21 videos: over the 20 from which generation shows progress. Under capsys stderr is no terminal.
    knobs = {**SMALL, "num_train": 21}
    quiet = {"dataset": "synthetic", "root": tmp_path / "quiet", "synthetic": knobs}
    assert len(list_records(quiet, "train", show_progress=False)) == 21
    assert capsys.readouterr().err == ""  # `-q`: not even the blank line a stopped transient bar printed
    shown = {"dataset": "synthetic", "root": tmp_path / "shown", "synthetic": knobs}
    list_records(shown, "train")
    assert capsys.readouterr().err.splitlines() == [
        f"generating 21 synthetic train videos under {tmp_path / 'shown' / 'train'}"]
    list_records(shown, "train")  # nothing left to generate: nothing to say
    assert capsys.readouterr().err == ""


def test_same_seed_gives_identical_files_labels(tmp_path: Path) -> None:
    first = list_records({"dataset": "synthetic", "root": tmp_path / "a", "synthetic": SMALL}, "val")
    second = list_records({"dataset": "synthetic", "root": tmp_path / "b", "synthetic": SMALL}, "val")
    assert [load_ground_truth(r.path) for r in first] == [load_ground_truth(r.path) for r in second]
    assert np.array_equal(decode(first[0].path), decode(second[0].path))


# Generates in a fresh process that has imported torch, as `s5 finetune` does: with libx264's macroblock-tree
# rate control (the previous encoding), a third of these videos came out different from process to process.
_GENERATE_IN_FRESH_PROCESS = """
import sys
from pathlib import Path
import torch  # noqa: F401  (present in every s5 process; the old encoding only varied with it loaded)
from s5cli.data.synthetic_video import SyntheticSpec, generate_split
generate_split(SyntheticSpec(num_train=0, num_val=9, num_test=0), Path(sys.argv[1]), "val", show_progress=False)
"""


def test_videos_are_byte_identical_across_processes(tmp_path: Path) -> None:
    roots = [tmp_path / f"run{i}" for i in range(2)]
    for root in roots:
        subprocess.run([sys.executable, "-c", _GENERATE_IN_FRESH_PROCESS, str(root)], check=True)
    contents = [{p.name: p.read_bytes() for p in sorted((root / "val").glob("*.mp4"))} for root in roots]
    assert len(contents[0]) == 9
    for other in contents[1:]:
        assert other.keys() == contents[0].keys()
        differing = [name for name in other if other[name] != contents[0][name]]
        assert not differing, f"videos encoded differently in another process: {differing}"


def test_root_of_an_older_format_is_refused_with_the_fix(tmp_path: Path) -> None:
    list_records({"dataset": "synthetic", "root": tmp_path, "synthetic": SMALL}, "val")
    marker = tmp_path / "synthetic.json"
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "format": "s5cli-synthetic/1"}))
    with pytest.raises(UserError, match=r"older format \(s5cli-synthetic/1.*delete the folder"):
        list_records({"dataset": "synthetic", "root": tmp_path, "synthetic": SMALL}, "val")


def test_format_version_is_part_of_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    import s5cli.data.synthetic_video as synthetic_video

    before = SyntheticSpec(**SMALL).key()
    monkeypatch.setattr(synthetic_video, "FORMAT", "s5cli-synthetic/999")
    assert SyntheticSpec(**SMALL).key() != before


def test_root_made_with_other_knobs_is_refused(tmp_path: Path) -> None:
    list_records({"dataset": "synthetic", "root": tmp_path, "synthetic": SMALL}, "val")
    with pytest.raises(UserError, match="other settings"):
        list_records({"dataset": "synthetic", "root": tmp_path, "synthetic": {**SMALL, "seed": 4}}, "val")


def test_a_root_of_other_files_gets_no_synthetic_videos(tmp_path: Path) -> None:
    """A folder of the user's own videos named as the synthetic task's root (a recipe without `dataset:`)."""
    (tmp_path / "abc.mp4").write_bytes(b"someone's film")
    with pytest.raises(UserError, match=r"holds files that are not synthetic videos \(e.g. abc.mp4\).*set data.dataset"):
        list_records({"dataset": "synthetic", "root": tmp_path, "synthetic": SMALL}, "val")
    assert sorted(entry.name for entry in tmp_path.iterdir() if not entry.name.startswith(".")) == ["abc.mp4"]


def test_default_root_depends_on_every_knob() -> None:
    base = synthetic_root({"dataset": "synthetic", "root": None, "synthetic": SMALL})
    assert base.parts[:2] == (".s5cache", "synthetic")
    assert synthetic_root({"root": None, "synthetic": SMALL}) == base
    assert synthetic_root({"root": None, "synthetic": {**SMALL, "clutter": 0.2}}) != base
    # 8 and 8.0 are the same knob value.
    assert synthetic_root({"root": None, "synthetic": {**SMALL, "fps": 8}}) == synthetic_root(
        {"root": None, "synthetic": {**SMALL, "fps": 8.0}}
    )


def test_spec_from_an_object_section() -> None:
    class Section:
        seed, num_train, num_val, num_test, frames = 1, 2, 3, 4, 20
        size, grid, num_event_types, events_per_video, clutter, fps = 64, 4, 2, 2, 0.0, 4

    spec = spec_from_section(Section())
    assert (spec.frames, spec.size, spec.grid, spec.num_classes, spec.clutter) == (20, 64, 4, 4, 0.0)


def test_task_info_and_unknown_dataset() -> None:
    info = task_info({"dataset": "synthetic", "synthetic": {"num_event_types": 4}})
    assert (info.kind, info.num_outputs, len(info.class_names)) == ("classification", 16, 16)
    assert info.class_names[1] == "red...green"
    with pytest.raises(UserError, match="did you mean 'synthetic'"):
        task_info({"dataset": "synthetik"})


def test_video_ids_change_with_the_knobs() -> None:
    # The token cache is keyed by video id: other knobs must never map onto the same ids.
    ids = {plan_video(SyntheticSpec(**SMALL), "train", 0, 0)["video_id"]}
    ids.add(plan_video(SyntheticSpec(**{**SMALL, "clutter": 0.9}), "train", 0, 0)["video_id"])
    ids.add(plan_video(SyntheticSpec(**{**SMALL, "seed": 11}), "train", 0, 0)["video_id"])
    assert len(ids) == 3 and all(i.startswith("train_00000-") for i in ids)


def test_shared_background_videos_differ_only_where_events_are() -> None:
    from s5cli.data.synthetic_video import render_video

    def two_videos(shared: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        spec = SyntheticSpec(**SMALL, shared_background=shared)
        truths = plans(spec, "train")[:2]
        videos = [render_video(spec, truth, "train", i).astype(int) for i, truth in enumerate(truths)]
        cell = spec.size // spec.grid
        events = np.logical_or(*(event_mask(t) for t in truths))  # (T, grid, grid)
        background = ~events.repeat(cell, axis=1).repeat(cell, axis=2)  # (T, size, size)
        return videos[0], videos[1], background

    first, second, background = two_videos(shared=True)
    assert np.array_equal(first[background], second[background])
    assert not np.array_equal(first, second)  # the events differ
    first, second, background = two_videos(shared=False)
    assert np.abs(first[background] - second[background]).mean() > 5  # own clutter per video
    assert synthetic_root({"root": None, "synthetic": {**SMALL, "shared_background": True}}) != synthetic_root(
        {"root": None, "synthetic": SMALL}
    )
