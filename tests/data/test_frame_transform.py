"""Frames to the backbone's input: the centre crop of the resized frame, and ImageNet normalisation."""

from __future__ import annotations

import numpy as np
import torch

from s5cli.data.frame_transform import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RESIZE_CHUNK_FRAMES,
    preprocess,
    resized_crops,
)


def test_preprocess_resizes_shorter_side_crops_centre_and_normalises():
    frames = np.zeros((2, 72, 128, 3), dtype=np.uint8)
    frames[..., 2] = 200  # blue everywhere ...
    frames[:, :, :20, 0] = 255  # ... with red bands at both sides that the centre crop must drop
    frames[:, :, -20:, 0] = 255
    images = preprocess(frames, 32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    assert images.shape == (2, 3, 32, 32)
    assert images.dtype == torch.float32
    assert images[:, 0].abs().max() < 1e-6
    torch.testing.assert_close(images[:, 2], torch.full((2, 32, 32), 200 / 255))


def test_preprocess_uses_imagenet_statistics_by_default():
    frames = np.full((1, 16, 16, 3), 128, dtype=np.uint8)
    images = preprocess(frames, 16)
    expected = [(128 / 255 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    torch.testing.assert_close(images[0, :, 0, 0], torch.tensor(expected))


def test_crops_of_more_frames_than_a_chunk_match_frame_by_frame_crops(monkeypatch) -> None:
    """`resized_crops` works a chunk at a time into one output: a ragged last chunk included, every frame
    gets the crop it gets alone."""
    from s5cli.data import frame_transform

    frames = np.random.default_rng(0).integers(0, 256, size=(11, 40, 60, 3), dtype=np.uint8)
    monkeypatch.setattr(frame_transform, "RESIZE_CHUNK_FRAMES", 4)  # 11 frames: chunks of 4, 4 and 3
    crops = resized_crops(frames, 24)
    assert crops.dtype == torch.uint8 and crops.shape == (11, 3, 24, 24)
    alone = torch.cat([resized_crops(frames[i : i + 1], 24) for i in range(11)])
    assert torch.equal(crops, alone)
    assert RESIZE_CHUNK_FRAMES > 4  # the default chunk held all 11: the numbers do not depend on it either
    monkeypatch.setattr(frame_transform, "RESIZE_CHUNK_FRAMES", RESIZE_CHUNK_FRAMES)
    assert torch.equal(resized_crops(frames, 24), crops)
