"""TokenDataset over a fake feature cache: training clips, evaluation windows, missing entries."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader

from s5cli.data.datasets.base import VideoRecord
from s5cli.data.datasets.token_dataset import (
    TokenDataset,
    collate_samples,
    fit_length,
    num_windows,
    window_start,
)
from s5cli.errors import UserError


class FakeCache:
    """In-memory cache: tokens whose value at [t, s, d] is 1000 * video + t (so frames are recognisable)."""

    def __init__(self, lengths: dict[str, int], tokens: int = 3, dim: int = 4) -> None:
        self.store = {
            video_id: (torch.arange(length, dtype=torch.float16)[:, None, None] + 1000 * i)
            .expand(length, tokens, dim)
            .clone()
            for i, (video_id, length) in enumerate(lengths.items())
        }
        self.loads = 0

    def has(self, video_id: str) -> bool:
        return video_id in self.store

    def load(self, video_id: str) -> tuple[torch.Tensor, dict[str, str]]:
        self.loads += 1
        if video_id not in self.store:
            raise FileNotFoundError(video_id)
        return self.store[video_id], {"frames": str(self.store[video_id].shape[0])}


def records(*ids: str, label: int | float = 1) -> list[VideoRecord]:
    return [VideoRecord(video_id, Path(f"/videos/{video_id}.mp4"), label) for video_id in ids]


def frame_numbers(tokens: torch.Tensor) -> list[int]:
    return [int(x) % 1000 for x in tokens[:, 0, 0]]


def test_window_arithmetic() -> None:
    assert [num_windows(n, 4) for n in (1, 4, 5, 8, 9)] == [1, 1, 2, 2, 3]
    assert num_windows(100, None) == 1
    assert [window_start(10, 4, w) for w in range(3)] == [0, 4, 6]  # last window ends at the last frame
    padded = fit_length(torch.arange(3.0)[:, None, None], 5)
    assert padded[:, 0, 0].tolist() == [0, 1, 2, 2, 2]


def test_eval_mode_returns_every_window_of_every_video() -> None:
    cache = FakeCache({"a": 10, "b": 4, "c": 2})
    dataset = TokenDataset(records("a", "b", "c"), cache, frames=4, training=False)
    assert len(dataset) == 3 + 1 + 1
    samples = [dataset[i] for i in range(len(dataset))]
    assert [(s.video_id, s.window) for s in samples] == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("c", 0)]
    assert [frame_numbers(s.tokens) for s in samples] == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [6, 7, 8, 9],
        [0, 1, 2, 3],
        [0, 1, 1, 1],  # shorter than a window: last frame repeated
    ]
    assert all(s.tokens.shape == (4, 3, 4) and s.tokens.dtype == torch.float32 for s in samples)


def test_a_window_stride_starts_a_window_every_stride_frames() -> None:
    """eval.window_stride 1 on 1 fps LVU tokens: a 60 s window starting every second (ViS4mer's protocol)."""
    assert [num_windows(n, 4, 1) for n in (1, 4, 5, 10)] == [1, 1, 2, 7]
    assert [num_windows(n, 4, 4) for n in range(1, 20)] == [num_windows(n, 4) for n in range(1, 20)]
    assert [window_start(10, 4, w, 3) for w in range(3)] == [0, 3, 6]
    cache = FakeCache({"a": 7, "b": 3})
    dataset = TokenDataset(records("a", "b"), cache, frames=4, training=False, stride=1)
    samples = [dataset[i] for i in range(len(dataset))]
    assert [frame_numbers(s.tokens) for s in samples if s.video_id == "a"] == [
        [0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 5], [3, 4, 5, 6],
    ]
    assert [frame_numbers(s.tokens) for s in samples if s.video_id == "b"] == [[0, 1, 2, 2]]
    with pytest.raises(UserError, match="stride"):
        TokenDataset(records("a"), cache, frames=4, stride=0)


def test_training_mode_takes_random_clips_inside_the_video() -> None:
    cache = FakeCache({"a": 20})
    dataset = TokenDataset(records("a"), cache, frames=5, training=True)
    assert len(dataset) == 1
    starts = set()
    for epoch in range(60):
        frames = frame_numbers(dataset.training_clip(0, seed=0, epoch=epoch).tokens)
        assert frames == list(range(frames[0], frames[0] + 5))
        starts.add(frames[0])
    assert starts <= set(range(16)) and len(starts) > 8  # another clip nearly every epoch


def test_a_training_clip_depends_on_seed_epoch_and_video_only() -> None:
    """Not on torch's global RNG (which the model draws from) nor on the order clips are asked for: S5 and S4
    see the same clips, and DataLoader workers load what the trainer would have."""
    dataset = TokenDataset(records("a", "b", "c"), FakeCache({"a": 40, "b": 40, "c": 40}), frames=5, training=True)

    def starts(seed: int, epoch: int, order: list[int]) -> dict[int, int]:
        return {i: frame_numbers(dataset.training_clip(i, seed, epoch).tokens)[0] for i in order}

    torch.manual_seed(0)
    first = starts(7, 3, [0, 1, 2])
    torch.manual_seed(123)
    torch.rand(10)
    assert starts(7, 3, [2, 0, 1]) == first
    assert len({tuple(starts(seed, epoch, [0, 1, 2]).values()) for seed in range(3) for epoch in range(3)}) == 9
    view = dataset.epoch_clips(seed=7, epoch=3)
    assert len(view) == 3 and [frame_numbers(view[i].tokens)[0] for i in range(3)] == list(first.values())
    loaded = list(DataLoader(view, batch_size=None, num_workers=2))  # other processes, the same clips
    assert [frame_numbers(sample.tokens)[0] for sample in loaded] == list(first.values())
    assert frame_numbers(dataset[1].tokens) == frame_numbers(dataset.training_clip(1, 0, 0).tokens)


def test_whole_sequence_when_frames_is_none() -> None:
    dataset = TokenDataset(records("a"), FakeCache({"a": 7}), frames=None)
    assert len(dataset) == 1 and dataset[0].tokens.shape[0] == 7


def test_missing_cache_entries_are_skipped_and_counted() -> None:
    cache = FakeCache({"a": 4, "c": 4})
    dataset = TokenDataset(records("a", "b", "c", "d"), cache, frames=4)
    assert dataset.missing == ["b", "d"] and dataset.num_missing == 2
    assert [dataset[i].video_id for i in range(len(dataset))] == ["a", "c"]


def test_cache_without_has_uses_load() -> None:
    class LoadOnly:
        def __init__(self) -> None:
            self.inner = FakeCache({"a": 6})

        def load(self, video_id: str):
            return self.inner.load(video_id)

    dataset = TokenDataset(records("a", "zz"), LoadOnly(), frames=3)
    assert dataset.missing == ["zz"] and len(dataset) == 2


def test_frame_count_read_from_safetensors_header(tmp_path: Path) -> None:
    class FileCache:
        def path(self, video_id: str) -> Path:
            return tmp_path / f"{video_id}.safetensors"

        def has(self, video_id: str) -> bool:
            return self.path(video_id).is_file()

        def load(self, video_id: str):
            raise AssertionError("building the eval index must not load tensors")

    save_file({"tokens": torch.zeros(9, 2, 2)}, str(tmp_path / "v.safetensors"))
    dataset = TokenDataset(records("v"), FileCache(), frames=4)
    assert len(dataset) == 3


def test_collate_into_a_batch() -> None:
    cache = FakeCache({"a": 8, "b": 8})
    dataset = TokenDataset(records("a", "b", label=0.5), cache, frames=4)
    batch = next(iter(DataLoader(dataset, batch_size=4, collate_fn=collate_samples)))
    assert batch.tokens.shape == (4, 4, 3, 4)
    assert batch.labels.dtype == torch.float32 and batch.labels.tolist() == [0.5] * 4
    assert batch.video_ids == ["a", "a", "b", "b"] and batch.windows.tolist() == [0, 1, 0, 1]
    int_batch = collate_samples([TokenDataset(records("a"), cache, frames=4)[0]])
    assert int_batch.labels.dtype == torch.long


def test_whole_videos_of_different_lengths_are_refused_in_one_batch() -> None:
    """No clip length (frames=None) serves whole videos: two lengths in a batch were a torch.stack traceback."""
    dataset = TokenDataset(records("a", "b"), FakeCache({"a": 5, "b": 7}), frames=None)
    with pytest.raises(UserError, match=r"cannot batch clips of \[5, 7\] frames \(a, b\): set data\.frames"):
        collate_samples([dataset[0], dataset[1]])
    assert collate_samples([dataset[1]]).tokens.shape == (1, 7, 3, 4)


def test_a_dataloader_pins_a_whole_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """DataLoader(pin_memory=True) pins what its batches' `pin_memory` returns; a dataclass without one would
    reach the GPU copy unpinned. (Page-locked memory needs CUDA: the pinning itself is stood in for here.)"""
    from torch.utils.data._utils.pin_memory import pin_memory

    pinned: list[torch.Tensor] = []

    def fake_pin(self: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        copy = self.clone()
        pinned.append(copy)
        return copy

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    dataset = TokenDataset(records("a", "b"), FakeCache({"a": 6, "b": 6}), frames=4)
    batch = collate_samples([dataset[0], dataset[1]])
    out = pin_memory(batch)
    assert isinstance(out, type(batch)) and out.video_ids == batch.video_ids
    assert [id(t) for t in pinned] == [id(out.tokens), id(out.labels), id(out.windows)]
    assert torch.equal(out.tokens, batch.tokens) and torch.equal(out.labels, batch.labels)


def test_bad_frames_is_user_error() -> None:
    with pytest.raises(UserError, match="frames"):
        TokenDataset(records("a"), FakeCache({"a": 3}), frames=0)


def test_feature_cache_windows_read_only_their_frames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """LVU windows start every second: each reads its own frames from the file, not the whole video, and
    gets exactly the numbers of slicing the whole video."""
    from s5cli.data.cache import FeatureCache
    from s5cli.data.cache_settings import ExtractionSettings

    cache = FeatureCache(tmp_path, ExtractionSettings("patch_pool", None, None, 1.0, 64, "float16"))
    whole = torch.randn(9, 17, 96).half()  # the shape patch_pool gives at 64 px
    cache.save("a", whole)
    reads: list[slice | None] = []
    original = FeatureCache.load

    def recording_load(self, video_id, frames=None):
        reads.append(frames)
        return original(self, video_id, frames)

    monkeypatch.setattr(FeatureCache, "load", recording_load)
    windows = TokenDataset(records("a"), cache, frames=4, training=False, stride=1)
    assert [s.tokens.tolist() for s in windows] == [whole[i : i + 4].float().tolist() for i in range(6)]
    assert reads == [slice(i, i + 4) for i in range(6)]
    reads.clear()
    clip = TokenDataset(records("a"), cache, frames=4, training=True)[0].tokens
    assert len(reads) == 1 and torch.equal(clip, whole[reads[0]].float())
