"""Cache trees for the `s5 cache` tests, built with the real writers (`FeatureCache.save`, the synthetic
marker of `_check_root`, `atomic_write_path`), so a change in what they write shows up in the tests."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from s5cli.data.cache import FeatureCache
from s5cli.data.cache_lock import LOCK_NAME, release_all
from s5cli.data.cache_settings import ExtractionSettings
from s5cli.data.synthetic_video import FORMAT, SyntheticSpec, _check_root, video_id
from s5cli.io import atomic_write_path

OLD_SYNTHETIC = "s5cli-synthetic/1"
SPEC = SyntheticSpec(num_train=2, num_val=1, num_test=1, frames=16, size=64, grid=4)
OLD_SPEC = SyntheticSpec(seed=7, num_train=2, num_val=1, num_test=1, frames=16, size=64, grid=4)
SETTINGS = ExtractionSettings("patch_pool", None, 16, None, 64, "float32")
HOURS_AGO = time.time() - 2 * 3600


def write_videos(root: Path, spec: SyntheticSpec, marker_format: str = FORMAT) -> list[str]:
    """A synthetic folder as the generator leaves it: marker, then `<split>/<id>.mp4|.json` (fake bytes)."""
    if marker_format == FORMAT:
        root.mkdir(parents=True)
        _check_root(spec, root)  # the real marker writer
    else:  # what an older version wrote: same marker, older format
        root.mkdir(parents=True)
        (root / "synthetic.json").write_text(json.dumps({"format": marker_format, **spec.knobs()}))
    ids = []
    for split in ("train", "val", "test"):
        for index in range(spec.count(split)):
            ids.append(video_id(spec, split, index))
            (root / split).mkdir(exist_ok=True)
            (root / split / f"{ids[-1]}.mp4").write_bytes(b"v" * 100)
            (root / split / f"{ids[-1]}.json").write_text("{}")
    return ids


def write_tokens(cache_dir: Path, ids: list[str], settings: ExtractionSettings = SETTINGS) -> Path:
    """Real token files (tiny tensors) through `FeatureCache.save`; returns the settings folder."""
    cache = FeatureCache(cache_dir, settings)
    for name in ids:
        cache.save(name, torch.zeros(2, 3, 4))
    release_all()  # as the job that wrote them leaves them when it ends: not in use
    return cache.folder


def leftover(path: Path, data: bytes = b"partial") -> Path:
    """A temporary file named exactly as `atomic_write_path` names it, left as if its writer was killed."""
    with atomic_write_path(path) as tmp:
        tmp.write_bytes(data)
        name = tmp.name
    path.rename(path.with_name(name))  # the finished file takes its temporary name back
    os.utime(path.with_name(name), (HOURS_AGO, HOURS_AGO))
    return path.with_name(name)


def build_tree(root: Path) -> dict[str, Path]:
    """A cache root with one entry of every kind; returns the interesting paths by name."""
    current = root / "synthetic" / SPEC.key()
    old = root / "synthetic" / OLD_SPEC.key()
    current_ids = write_videos(current, SPEC)
    old_ids = write_videos(old, OLD_SPEC, OLD_SYNTHETIC)
    tokens = write_tokens(root / "features", current_ids + old_ids)
    stale_tokens = root / "features" / "0123456789ab"
    stale_tokens.mkdir()
    (stale_tokens / "settings.json").write_text(json.dumps({"format": "s5cli-tokens/0", "backbone": "vit"}))
    (stale_tokens / "clip.safetensors").write_bytes(b"t" * 1000)
    unknown = root / "features" / "my-notes"
    unknown.mkdir()
    (unknown / "keep.txt").write_text("mine")
    temp = leftover(tokens / "extra.safetensors")
    names = ("current", "old", "tokens", "stale_tokens", "unknown", "temp")
    return dict(zip(names, (current, old, tokens, stale_tokens, unknown, temp), strict=True))


def files_under(folder: Path) -> set[Path]:
    """Cached files under `folder`: in-use marks (`.in-use.lock`) are not cached data and are not counted."""
    return {p for p in folder.rglob("*") if p.is_file() and p.name != LOCK_NAME}
