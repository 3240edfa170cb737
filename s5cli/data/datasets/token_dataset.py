"""The token dataset: cached backbone tokens of a split's videos served as `Sample`s, as random clips
(training) or as every window of a video (evaluation, so that the LVU protocol can average predictions over
all windows of one video).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from s5cli.data.datasets.base import VideoRecord
from s5cli.data.sampling import uniform_plan
from s5cli.errors import UserError


@dataclass
class Sample:
    """Cached backbone tokens `(T, S, D)` of one clip/window of a video, with its label."""

    tokens: Tensor
    label: int | float
    video_id: str
    window: int = 0


@dataclass
class SampleBatch:
    """A collated batch: tokens `(B, T, S, D)`, labels `(B,)`, ids and window indices."""

    tokens: Tensor
    labels: Tensor
    video_ids: list[str]
    windows: Tensor

    def pin_memory(self) -> SampleBatch:
        """The batch with its tensors in page-locked memory. A DataLoader with `pin_memory=True` (the trainer
        and evaluation on CUDA) calls this; without it a dataclass batch would pass through unpinned, and the
        `non_blocking` copy to the GPU would wait like a plain one."""
        return SampleBatch(self.tokens.pin_memory(), self.labels.pin_memory(), self.video_ids,
                           self.windows.pin_memory())


class TokenCache(Protocol):
    """What `TokenDataset` needs from the feature cache (s5cli.data.cache.FeatureCache satisfies it)."""

    def load(self, video_id: str) -> tuple[Tensor, dict[str, str]]: ...


def _frame_count(cache: Any, video_id: str) -> int:
    """Number of cached frames of a video, read from the safetensors header when possible (no tensor load)."""
    counter = getattr(cache, "num_frames", None)
    if callable(counter):
        return int(counter(video_id))
    path_of = getattr(cache, "path", None)
    if callable(path_of):
        path = Path(path_of(video_id))
        if path.suffix == ".safetensors" and path.is_file():
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                keys = list(handle.keys())
                key = "tokens" if "tokens" in keys else keys[0]
                return int(handle.get_slice(key).get_shape()[0])
    tokens, _ = cache.load(video_id)
    return int(tokens.shape[0])


def _load_frames(cache: Any, video_id: str, start: int, stop: int) -> Tensor:
    """Frames [start, stop) of a cached video: read alone when the cache can (`FeatureCache.load_frames`)."""
    reader = getattr(cache, "load_frames", None)
    if callable(reader):
        return reader(video_id, start, stop)
    tokens, _ = cache.load(video_id)
    return tokens[start:stop]


def _load_rows(cache: Any, video_id: str, rows: Sequence[int]) -> Tensor:
    """Frames `rows` (ascending) of a cached video: read alone when the cache can (`FeatureCache.load_rows`)."""
    reader = getattr(cache, "load_rows", None)
    if callable(reader):
        return reader(video_id, rows)
    tokens, _ = cache.load(video_id)
    return tokens[list(rows)]


def spread_rows(total_frames: int, frames: int, rng: np.random.Generator) -> tuple[int, ...]:
    """A training clip of `frames` of a video's `total_frames` cached frames, drawn without repeats and
    sorted (ViS4mer's random segments); a video with fewer frames gives them all, the last repeated
    (`uniform_plan`'s padding)."""
    if total_frames <= frames:
        return uniform_plan(total_frames, frames).indices
    return tuple(int(row) for row in np.sort(rng.choice(total_frames, size=frames, replace=False)))


def _has(cache: Any, video_id: str) -> bool:
    has = getattr(cache, "has", None)
    if callable(has):
        return bool(has(video_id))
    try:
        cache.load(video_id)
    except (FileNotFoundError, KeyError):
        return False
    return True


def num_windows(total_frames: int, frames: int | None, stride: int | None = None) -> int:
    """How many windows of `frames` frames, starting every `stride` frames (default: `frames`, so
    consecutive), cover `total_frames`; the last one is aligned to the end."""
    if frames is None or total_frames <= frames:
        return 1
    return math.ceil((total_frames - frames) / (stride or frames)) + 1


def window_start(total_frames: int, frames: int, window: int, stride: int | None = None) -> int:
    """First frame of window `window`; the last window ends at the last frame instead of running over."""
    return max(0, min(window * (stride or frames), total_frames - frames))


def fit_length(tokens: Tensor, frames: int) -> Tensor:
    """Cut or pad (repeating the last frame) a `(T, S, D)` sequence to exactly `frames` frames."""
    length = tokens.shape[0]
    if length == frames:
        return tokens
    if length > frames:
        return tokens[:frames]
    pad = tokens[-1:].expand(frames - length, *tokens.shape[1:])
    return torch.cat([tokens, pad], dim=0)


@dataclass
class _Entry:
    record: VideoRecord
    window: int = 0
    total_frames: int = 0
    real_frames: int = 0  # spread clips: cached frames that are not padding (read on first use)


class TokenDataset(Dataset):
    """Cached tokens of dataset records as `Sample`s.

    training=True: one item per video, a clip of `frames` consecutive cached frames at a random start (the
    whole sequence when `frames` is None or the video is shorter, padded by repeating its last frame). The
    start comes from the video's own generator for (seed, epoch) (`training_clip`, `epoch_clips`), never
    from torch's global RNG: the clips do not depend on what the model draws (S5 and S4 see the same clips,
    a resumed run the same as an uninterrupted one), and DataLoader workers can load them.
    training=False: one item per (video, window): windows of `frames` frames starting every `stride` frames
    (default: consecutive) and covering the video, the last one aligned to its end, so evaluation can
    average predictions over all windows of a video.
    spread=True (a recipe's `data.frame_pool`): a clip is `frames` frames spread over the whole cached
    sequence instead of consecutive ones: in training drawn at random without repeats and sorted, for
    evaluation uniformly spaced (`uniform_plan`), one item per video.
    Records without a cache entry are skipped; their ids are in `missing`.
    """

    def __init__(
        self,
        records: Sequence[VideoRecord],
        cache: TokenCache,
        frames: int | None = None,
        training: bool = False,
        dtype: torch.dtype | None = torch.float32,  # None: the cache's own dtype
        stride: int | None = None,
        spread: bool = False,
    ) -> None:
        if spread and frames is None:
            raise ValueError("spread clips need a clip length (frames)")
        if frames is not None and frames < 1:
            raise UserError(f"frames must be at least 1, got {frames}")
        if stride is not None and stride < 1:
            raise UserError(f"window stride must be at least 1 frame, got {stride}")
        self.cache = cache
        self.frames = frames
        self.stride = stride
        self.training = training
        self.spread = spread
        self.dtype = dtype
        self.missing: list[str] = []
        self.records: list[VideoRecord] = []
        for record in records:
            if _has(cache, record.video_id):
                self.records.append(record)
            else:
                self.missing.append(record.video_id)
        self._entries: list[_Entry] = []
        if training:
            self._entries = [_Entry(record) for record in self.records]
        else:
            for record in self.records:
                if spread:  # one clip per video: no window count needs the file
                    self._entries.append(_Entry(record))
                    continue
                total = _frame_count(cache, record.video_id) if frames is not None else 0
                for window in range(num_windows(total, frames, stride)):
                    self._entries.append(_Entry(record, window, total))

    @property
    def num_missing(self) -> int:
        """How many records were skipped because the cache has no tokens for them."""
        return len(self.missing)

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, index: int) -> Sample:
        """Evaluation: window `index`. Training: video `index`'s clip of epoch 0 for seed 0 (the trainer
        reads `epoch_clips(seed, epoch)` instead)."""
        if self.training:
            return self.training_clip(index, seed=0, epoch=0)
        entry = self._entries[index]
        if self.frames is None:
            return self._sample(entry, self.cache.load(entry.record.video_id)[0])
        if self.spread:
            rows = uniform_plan(self._real_frames(entry), self.frames).indices
            return self._sample(entry, _load_rows(self.cache, entry.record.video_id, rows))
        start = window_start(self._total_frames(entry), self.frames, entry.window, self.stride)
        return self._sample(entry, self._clip(entry, start))

    def training_clip(self, index: int, seed: int, epoch: int) -> Sample:
        """Video `index`'s training clip in `epoch` of a run seeded `seed`.

        The start (spread clips: the frames) is drawn from numpy's generator seeded with (seed, epoch,
        index): the same clip whoever asks, in whatever order and process, and another one every epoch.
        """
        if not self.training:
            raise ValueError("training_clip needs a TokenDataset built with training=True")
        entry = self._entries[index]
        if self.frames is None:
            return self._sample(entry, self.cache.load(entry.record.video_id)[0])
        rng = np.random.default_rng([seed % 2**64, epoch, index])  # SeedSequence mixes the three
        if self.spread:
            rows = spread_rows(self._real_frames(entry), self.frames, rng)
            return self._sample(entry, _load_rows(self.cache, entry.record.video_id, rows))
        starts = max(1, self._total_frames(entry) - self.frames + 1)
        return self._sample(entry, self._clip(entry, int(rng.integers(starts))))

    def epoch_clips(self, seed: int, epoch: int) -> EpochClips:
        """The training clips of one epoch as a dataset (item i = `training_clip(i, seed, epoch)`)."""
        return EpochClips(self, seed, epoch)

    def _total_frames(self, entry: _Entry) -> int:
        if not entry.total_frames:  # training entries learn their length on first use (a header read)
            entry.total_frames = _frame_count(self.cache, entry.record.video_id)
        return entry.total_frames

    def _real_frames(self, entry: _Entry) -> int:
        """Cached frames of a spread clip's video that are not padding: a video shorter than the pool was
        cached with its last frame repeated, and drawing over those copies gave a 300-frame video in a
        512-frame pool 27 of 64 rows of one frame."""
        if not entry.real_frames:
            counter = getattr(self.cache, "padded_frames", None)
            padded = int(counter(entry.record.video_id)) if callable(counter) else 0
            entry.real_frames = max(1, self._total_frames(entry) - padded)
        return entry.real_frames

    def _clip(self, entry: _Entry, start: int) -> Tensor:
        assert self.frames is not None
        return fit_length(_load_frames(self.cache, entry.record.video_id, start, start + self.frames), self.frames)

    def _sample(self, entry: _Entry, tokens: Tensor) -> Sample:
        if self.dtype is not None:
            tokens = tokens.to(self.dtype)
        return Sample(tokens=tokens, label=entry.record.label, video_id=entry.record.video_id, window=entry.window)


class EpochClips(Dataset):
    """One epoch's training clips of a `TokenDataset`: stateless, so a DataLoader's worker processes load
    exactly the clips the training process would have."""

    def __init__(self, dataset: TokenDataset, seed: int, epoch: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Sample:
        return self.dataset.training_clip(index, self.seed, self.epoch)


def collate_samples(samples: Sequence[Sample]) -> SampleBatch:
    """Stack samples into a batch (for `DataLoader(collate_fn=collate_samples)`)."""
    lengths = {len(sample.tokens) for sample in samples}
    if len(lengths) > 1:  # whole-video clips (no clip length) of videos of different lengths
        raise UserError(f"cannot batch clips of {sorted(lengths)} frames ({', '.join(s.video_id for s in samples)}): "
                        "set data.frames or data.window_seconds to a clip length, or use batches of 1")
    labels = [sample.label for sample in samples]
    dtype = torch.float32 if any(isinstance(label, float) for label in labels) else torch.long
    return SampleBatch(
        tokens=torch.stack([sample.tokens for sample in samples]),
        labels=torch.tensor(labels, dtype=dtype),
        video_ids=[sample.video_id for sample in samples],
        windows=torch.tensor([sample.window for sample in samples], dtype=torch.long),
    )
