"""Seeded generator of the bundled synthetic long-form task: real mp4 files plus JSON ground truth.

Each video is mostly clutter (slowly drifting low-saturation gratings and grey distractor shapes) with a few
sparse *events*: a saturated coloured glyph filling one grid cell for a few consecutive frames. Events never
overlap in time, so the first and the last are well defined; the label is `first_type * E + last_type`.
Labels are balanced within a split, and everything is a pure function of the knobs (same seed, same videos).

Videos are encoded with PyAV (libx264, yuv420p, near-lossless CRF, byte-identical from one process to the
next; mpeg4 when a PyAV build lacks libx264): PyAV is already a dependency of the package (its wheels bundle
FFmpeg and libx264), so no ffmpeg binary is needed, and frames go from numpy straight to the encoder without
temporary image files. H.264 in mp4 is what decord (the decode path of real datasets) reads best. Colours
are chosen to survive 4:2:0 chroma subsampling: one grid cell is 16 px, i.e. an 8x8 chroma block, and
glyphs fill most of it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from s5cli.errors import UserError
from s5cli.io import atomic_write_json, atomic_write_path

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
# Saturated, mutually distant colours (RGB); clutter stays near grey so these are the only vivid things.
PALETTE: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (235, 25, 25)),
    ("green", (20, 210, 40)),
    ("blue", (30, 60, 245)),
    ("yellow", (245, 225, 10)),
    ("magenta", (230, 30, 220)),
    ("cyan", (10, 215, 225)),
    ("orange", (250, 125, 0)),
    ("purple", (125, 30, 235)),
)
SHAPES = ("square", "disc", "diamond", "cross")
# Version 2: libx264 without macroblock-tree rate control, whose output varied between processes (see
# `write_mp4`). The version is part of the cache key, so videos written by version 1 are never reused.
FORMAT = "s5cli-synthetic/2"


@dataclass(frozen=True)
class SyntheticSpec:
    """The knobs of the synthetic task (mirrors the recipe's data.synthetic section)."""

    seed: int = 0
    num_train: int = 400
    num_val: int = 100
    num_test: int = 100
    frames: int = 32
    size: int = 96
    grid: int = 6
    num_event_types: int = 3
    events_per_video: int = 3
    clutter: float = 0.5
    fps: float = 8.0
    # One clutter movie for every video (like one kitchen for all of Breakfast's cooks): videos then differ
    # only in their events, so telling two videos apart (LSMCL's pretext task) needs the events.
    shared_background: bool = False

    def __post_init__(self) -> None:
        checks = [
            (self.frames >= 2, "frames", "at least 2"),
            (self.grid >= 1, "grid", "at least 1"),
            # decord (the decode path) misreads some tiny frame widths (16, 24, 48, 72 px; dmlc/decord#336).
            (self.size >= 64 and self.size % 16 == 0, "size", "a multiple of 16, at least 64"),
            (
                self.size % self.grid == 0 and self.size // self.grid >= 8,
                "grid",
                "a divisor of size, cells >= 8 px",
            ),
            (1 <= self.num_event_types <= len(PALETTE), "num_event_types", f"between 1 and {len(PALETTE)}"),
            (self.events_per_video >= 1, "events_per_video", "at least 1"),
            (0.0 <= self.clutter <= 1.0, "clutter", "between 0 and 1"),
            (self.fps > 0, "fps", "positive"),
            (min(self.num_train, self.num_val, self.num_test) >= 0, "num_train/num_val/num_test", ">= 0"),
        ]
        for ok, name, allowed in checks:
            if not ok:
                got = ", ".join(f"{part}={getattr(self, part)}" for part in name.split("/"))
                raise UserError(f"data.synthetic.{name} must be {allowed} (got {got})")
        needed = self.events_per_video * self.min_event_frames + self.events_per_video - 1
        if needed > self.frames:
            raise UserError(
                f"data.synthetic.frames={self.frames} is too short for events_per_video={self.events_per_video} "
                f"(needs at least {needed} frames)"
            )

    @property
    def num_classes(self) -> int:
        """E * E classes: the ordered pair (first event type, last event type)."""
        return self.num_event_types**2

    @property
    def min_event_frames(self) -> int:
        return max(2, self.frames // 12)

    @property
    def max_event_frames(self) -> int:
        return max(self.min_event_frames, self.frames // (2 * self.events_per_video))

    def count(self, split: str) -> int:
        """Number of videos in a split."""
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}[split]

    def knobs(self) -> dict[str, Any]:
        """Every knob by name; `shared_background` only when set, since it came later: folders and markers
        of default-task videos made before it stay valid."""
        values = asdict(self)
        if not self.shared_background:
            del values["shared_background"]
        return values

    def key(self) -> str:
        """Short stable hash of every knob and of the file format (names the default cache folder and is
        part of every video id, so a format change never reuses old videos or their cached tokens)."""
        text = json.dumps({"format": FORMAT, **self.knobs()}, sort_keys=True)
        return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def spec_from_section(section: Any) -> SyntheticSpec:
    """Build the spec from a recipe's data.synthetic section (any object or dict with the knob fields)."""
    if section is None:
        return SyntheticSpec()
    values: dict[str, Any] = {}
    for spec_field in fields(SyntheticSpec):
        value = (
            section.get(spec_field.name)
            if isinstance(section, dict)
            else getattr(section, spec_field.name, None)
        )
        if value is not None:
            values[spec_field.name] = value
    spec = SyntheticSpec(**values)
    # Normalise numeric types so the key does not depend on 8 vs 8.0 in a YAML file.
    return SyntheticSpec(**{**asdict(spec), "clutter": float(spec.clutter), "fps": float(spec.fps)})


def class_name(label: int, num_event_types: int) -> str:
    """Human-readable name of a label, e.g. 'red...blue' (first...last)."""
    first, last = divmod(label, num_event_types)
    return f"{PALETTE[first][0]}...{PALETTE[last][0]}"


def _rng(spec: SyntheticSpec, split: str, index: int | None = None) -> np.random.Generator:
    entropy = [spec.seed, SPLIT_CODES[split]] + ([] if index is None else [index])
    return np.random.default_rng(entropy)


def split_labels(spec: SyntheticSpec, split: str) -> list[int]:
    """Balanced labels of a split (every reachable class equally often, seeded order)."""
    count = spec.count(split)
    types = spec.num_event_types
    if spec.events_per_video == 1:
        reachable = [t * types + t for t in range(types)]  # one event is both the first and the last
    else:
        reachable = list(range(types * types))
    labels = np.array([reachable[i % len(reachable)] for i in range(count)], dtype=np.int64)
    return [int(x) for x in _rng(spec, split).permutation(labels)]


def video_id(spec: SyntheticSpec, split: str, index: int) -> str:
    """Id (and file stem) of a synthetic video, e.g. `train_00012-3f2a9c1b`.

    The knob hash is part of the id because the feature cache is keyed by video id and extraction settings
    only: without it, videos regenerated with other knobs would silently reuse stale cached tokens.
    """
    return f"{split}_{index:05d}-{spec.key()[:8]}"


def plan_video(spec: SyntheticSpec, split: str, index: int, label: int) -> dict[str, Any]:
    """Ground truth of one video: label and non-overlapping events (type, frames [start, end), cell)."""
    rng = _rng(spec, split, index)
    count, types = spec.events_per_video, spec.num_event_types
    first, last = divmod(label, types)
    kinds = (
        [first]
        + [int(t) for t in rng.integers(0, types, size=max(0, count - 2))]
        + ([last] if count > 1 else [])
    )
    lengths = rng.integers(spec.min_event_frames, spec.max_event_frames + 1, size=count)
    while lengths.sum() + count - 1 > spec.frames:  # shrink the longest until they fit with 1-frame gaps
        lengths[int(np.argmax(lengths))] -= 1
    free = spec.frames - int(lengths.sum()) - (count - 1)
    gaps = rng.multinomial(free, [1.0 / (count + 1)] * (count + 1))
    events = []
    cursor = int(gaps[0])
    for i in range(count):
        start = cursor
        end = start + int(lengths[i])
        row, col = (int(v) for v in rng.integers(0, spec.grid, size=2))
        events.append({"type": int(kinds[i]), "start": start, "end": end, "row": row, "col": col})
        cursor = end + 1 + int(gaps[i + 1])
    return {
        "format": FORMAT,
        "video_id": video_id(spec, split, index),
        "label": int(label),
        "frames": spec.frames,
        "size": spec.size,
        "grid": spec.grid,
        "fps": spec.fps,
        "num_event_types": types,
        "events": events,
    }


def _shape_masks(cell: int) -> np.ndarray:
    """Boolean masks (len(SHAPES), cell, cell) of the glyph shapes, leaving a 1 px margin."""
    y, x = np.mgrid[0:cell, 0:cell].astype(np.float32)
    centre = (cell - 1) / 2.0
    dy, dx = np.abs(y - centre), np.abs(x - centre)
    half = cell / 2.0 - 1.0
    square = (dy <= half) & (dx <= half)
    disc = dy**2 + dx**2 <= (half + 0.5) ** 2
    diamond = dy + dx <= half * 1.35
    cross = ((dy <= half * 0.45) | (dx <= half * 0.45)) & square
    return np.stack([square, disc, diamond, cross])


def render_video(spec: SyntheticSpec, truth: dict[str, Any], split: str, index: int) -> np.ndarray:
    """RGB frames (T, size, size, 3) uint8 of one planned video: clutter, then the event glyphs on top."""
    # Own stream: clutter draws do not shift the event plan. Shared background: the same stream for all.
    rng = np.random.default_rng([spec.seed, 1_000_003]) if spec.shared_background else _rng(
        spec, split, index + 1_000_003
    )
    frames, size, cell = spec.frames, spec.size, spec.size // spec.grid
    t = np.arange(frames, dtype=np.float32)[:, None, None]
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    # Drifting gratings: moving texture with a faint tint (low saturation). float32 throughout and one
    # element-wise mixing into RGB (numpy float64 scalars would otherwise promote and cost ~15x the time; a
    # BLAS tensordot spins its threads badly on a busy 2-core machine).
    waves = np.empty((3, frames, size, size), dtype=np.float32)
    tints = np.empty((3, 3), dtype=np.float32)
    for k in range(3):
        angle = rng.uniform(0, np.pi)
        wavelength = rng.uniform(10, 40)
        speed = rng.uniform(0.5, 2.0) * rng.choice([-1, 1])
        ramp = (np.float32(np.cos(angle)) * x + np.float32(np.sin(angle)) * y) * np.float32(
            2 * np.pi / wavelength
        )
        np.subtract(ramp[None], t * np.float32(speed * 0.4), out=waves[k])
        np.sin(waves[k], out=waves[k])
        tints[k] = (1.0 + rng.uniform(-0.12, 0.12, size=3)) * 40.0 * spec.clutter
    channels = []
    for c in range(3):
        channel = waves[0] * tints[0, c]
        for k in (1, 2):
            channel += waves[k] * tints[k, c]
        channels.append(channel + np.float32(120.0))
    canvas = np.stack(channels, axis=-1)
    # Grey distractor shapes of glyph size, drifting and wrapping around.
    masks = _shape_masks(cell)
    for _ in range(round(spec.clutter * 5)):
        shape = masks[rng.integers(0, len(SHAPES))]
        grey = rng.uniform(50, 200)
        colour = grey + rng.uniform(-12, 12, size=3)
        y0, x0 = rng.uniform(0, size, size=2)
        vy, vx = rng.uniform(-2.0, 2.0, size=2)
        for f in range(frames):
            top, left = int(y0 + vy * f) % size, int(x0 + vx * f) % size
            rows, cols = (np.arange(cell) + top) % size, (np.arange(cell) + left) % size
            patch = canvas[f][np.ix_(rows, cols)]
            patch[shape] = colour
            canvas[f][np.ix_(rows, cols)] = patch
    np.clip(canvas, 0, 255, out=canvas)
    video = canvas.astype(np.uint8)
    for event in truth["events"]:
        shape = masks[event["type"] % len(SHAPES)]
        top, left = event["row"] * cell, event["col"] * cell
        region = video[event["start"] : event["end"], top : top + cell, left : left + cell]
        region[:, shape] = PALETTE[event["type"]][1]
    return video


def _codec() -> str:
    import av

    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except Exception:  # a PyAV build without libx264
        return "mpeg4"


def write_mp4(video: np.ndarray, path: Path, fps: float) -> None:
    """Encode RGB frames (T, H, W, 3) uint8 to an mp4 file, atomically."""
    import av

    codec = _codec()
    with atomic_write_path(path) as tmp, av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=Fraction(str(fps)).limit_denominator(1000))
        stream.width, stream.height = video.shape[2], video.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            # Near-lossless, one thread: frames are tiny, so per-video threading only adds overhead.
            # mbtree=0: with macroblock-tree rate control the same frames encoded to different bitstreams
            # in different processes once torch was imported (a third of the videos differed, up to 14
            # grey levels), so the bundled task was not the same data from one clone to the next. Without
            # it the encode is a pure function of the frames; files are ~25 % larger (~11 KB a video).
            stream.options = {"crf": "16", "preset": "veryfast", "threads": "1", "x264-params": "mbtree=0"}
        else:
            stream.bit_rate = 2_000_000
        for frame in video:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def load_ground_truth(path: str | Path) -> dict[str, Any]:
    """Read a video's JSON sidecar (path of the .json or of the .mp4 beside it)."""
    path = Path(path)
    with open(path.with_suffix(".json"), encoding="utf-8") as handle:
        return json.load(handle)


def event_mask(truth: dict[str, Any]) -> np.ndarray:
    """Boolean (T, grid, grid): which cells show an event glyph in which frame."""
    mask = np.zeros((truth["frames"], truth["grid"], truth["grid"]), dtype=bool)
    for event in truth["events"]:
        mask[event["start"] : event["end"], event["row"], event["col"]] = True
    return mask


def _check_root(spec: SyntheticSpec, root: Path) -> None:
    """Refuse a root that holds videos generated with other knobs (they would be silently reused)."""
    marker = root / "synthetic.json"
    wanted = {"format": FORMAT, **spec.knobs()}
    if marker.is_file():
        try:
            found = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            found = None
        if isinstance(found, dict) and found.get("format") != FORMAT and found.get("format"):
            raise UserError(
                f"{root} holds synthetic videos of an older format ({found.get('format')}, now {FORMAT}): "
                "delete the folder or use another data.root, and the videos are generated again"
            )
        if found != wanted:
            raise UserError(
                f"{root} holds synthetic videos made with other settings ({marker}): "
                "use another data.root or leave it unset (a folder per settings is then used)"
            )
    else:
        # A folder of someone's own videos named as data.root of the synthetic task (a recipe without
        # `dataset:` is one) got 600 generated videos written among them.
        present = sorted(entry.name for entry in root.iterdir() if not entry.name.startswith("."))
        if present:
            raise UserError(
                f"{root} holds files that are not synthetic videos (e.g. {present[0]}) and no synthetic.json: "
                "the synthetic task generates its videos into a folder of its own; if these are your videos, "
                "set data.dataset (lvu, breakfast or coin), else use another data.root"
            )
        atomic_write_json(marker, wanted)


def generate_split(
    spec: SyntheticSpec, root: Path, split: str, show_progress: bool = True
) -> list[dict[str, Any]]:
    """Write every missing video of a split under `<root>/<split>/`; return the ground truths in order."""
    if split not in SPLIT_CODES:
        raise UserError(f"unknown split {split!r}: use one of {', '.join(SPLIT_CODES)}")
    root.mkdir(parents=True, exist_ok=True)
    _check_root(spec, root)
    folder = root / split
    truths = [plan_video(spec, split, i, label) for i, label in enumerate(split_labels(spec, split))]
    todo = [
        i
        for i, truth in enumerate(truths)
        if not (
            (folder / f"{truth['video_id']}.mp4").is_file()
            and (folder / f"{truth['video_id']}.json").is_file()
        )
    ]
    if not todo:
        return truths
    progress = None
    if show_progress and len(todo) > 20:
        from rich.progress import Progress

        from s5cli.cli.console import stderr

        description = f"generating {len(todo)} synthetic {split} videos"
        if stderr.is_terminal:
            progress = Progress(console=stderr, transient=True)
            progress.start()
            task = progress.add_task(description, total=len(todo))
        else:  # a log gets one line: a transient bar draws nothing there, and its end printed a blank line
            stderr.print(f"{description} under {folder}")
    try:
        for i in todo:
            truth = truths[i]
            write_mp4(render_video(spec, truth, split, i), folder / f"{truth['video_id']}.mp4", spec.fps)
            # The sidecar is written last: its presence marks a finished video.
            atomic_write_json(folder / f"{truth['video_id']}.json", truth)
            if progress is not None:
                progress.advance(task)
    finally:
        if progress is not None:
            progress.stop()
    return truths
