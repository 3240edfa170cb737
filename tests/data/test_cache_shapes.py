"""Token-cache entries of another (tokens per frame, width) than the settings give count as damaged.

Why: such an entry (hand-made, or copied in from other settings) passed the cache's checks and stopped
`s5 finetune` mid-epoch with torch's "stack expects each tensor to be equal size".
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from s5cli.data.cache import FeatureCache
from s5cli.data.cache_settings import ExtractionSettings

SETTINGS = ExtractionSettings("patch_pool", None, 10, None, 64, "float32")  # 1 + (64 / 16)^2 = 17 tokens x 96-d


@pytest.mark.parametrize(("backbone", "image_size", "shape"), [
    ("patch_pool", 64, (17, 96)),
    ("vit_tiny_test", 64, (17, 32)),
    ("vit_small_patch16_224", 224, (197, 384)),
    ("vit_base_patch16_224", 256, (257, 768)),
])
def test_settings_give_the_shape_their_backbone_makes(backbone: str, image_size: int, shape: tuple[int, int]) -> None:
    from s5cli.models.backbone import build_backbone

    assert ExtractionSettings(backbone, None, 4, None, image_size).token_shape() == shape
    if backbone in ("patch_pool", "vit_tiny_test"):  # cheap enough to run: the real backbone agrees
        with torch.no_grad():
            tokens = build_backbone(backbone, image_size=image_size)(torch.rand(1, 3, image_size, image_size))
        assert tuple(tokens.shape[1:]) == shape


@pytest.mark.parametrize("shape", [(10, 17, 50), (10, 5, 96)])
def test_an_entry_of_another_width_or_token_count_is_reported_and_missing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], shape: tuple[int, int, int]) -> None:
    cache = FeatureCache(tmp_path, SETTINGS)
    cache.save("bikes_1", torch.randn(shape))
    assert not cache.has("bikes_1")  # extraction redoes it, as any damaged entry
    err = capsys.readouterr().err
    assert "corrupt cache entry" in err and "bikes_1.safetensors" in err
    assert f"has {shape[1]} tokens x {shape[2]}-d a frame" in err and "settings give 17 x 96-d" in err


def test_an_entry_of_the_settings_shape_is_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = FeatureCache(tmp_path, SETTINGS)
    cache.save("bikes_1", torch.randn(10, 17, 96))
    assert cache.has("bikes_1")
    assert capsys.readouterr().err == ""


def test_an_unknown_backbone_checks_no_shape(tmp_path: Path) -> None:
    settings = ExtractionSettings("someone_elses_net", None, 4, None, 64)
    assert settings.token_shape() is None
    cache = FeatureCache(tmp_path, settings)
    cache.save("v", torch.randn(2, 3, 4))
    assert cache.has("v")
