"""The token-cache key of a local backbone weights file follows its contents; every other key is unchanged."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from s5cli.data import weights_fingerprint as fingerprint_module
from s5cli.data.cache import FeatureCache
from s5cli.data.cache_settings import ExtractionSettings
from s5cli.data.encode import settings_from_data
from s5cli.data.extract import extract_records
from s5cli.models.backbone import PRESETS
from s5cli.models.vit import VisionTransformer
from tests.data.test_extract import data_section, make_records


def write_tiny_vit(path: Path, seed: int) -> Path:
    """timm-layout weights for `vit_tiny_test`, different for each seed."""
    from dataclasses import replace

    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    model = VisionTransformer(replace(PRESETS["vit_tiny_test"], init_seed=seed))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def tiny(weights: str | None) -> ExtractionSettings:
    return ExtractionSettings("vit_tiny_test", weights, 4, None, 64)


def test_keys_without_a_local_weights_file_are_the_ones_earlier_versions_computed(tmp_path, monkeypatch):
    # Computed by the code before weights files were fingerprinted: caches made then must stay found.
    monkeypatch.chdir(tmp_path)
    assert ExtractionSettings("vit_tiny_test", None, 8, None, 64, "float32", "squash").key() == "13effd7af7ad"
    hub = ExtractionSettings("vit_small_patch16_224", "timm/vit_small_patch16_224.augreg_in21k@abc123", None,
                             8.0, 224, "bfloat16")
    assert hub.key() == "63fd02611cb5"
    assert "backbone_weights_sha256" not in hub.metadata()


def test_one_hub_id_spelled_three_ways_is_one_cache(tmp_path, monkeypatch):
    """`timm/X`, `hf://timm/X` and `hf-hub:timm/X` load the same weights (`resolve_weights`) but gave three
    keys; the bare id (the bundled recipes' spelling) keeps the key earlier versions gave it."""
    monkeypatch.chdir(tmp_path)
    hub_id = "timm/vit_small_patch16_224.augreg_in21k@abc123"
    spellings = [hub_id, f"hf://{hub_id}", f"hf-hub:{hub_id}", f" hf://{hub_id} "]
    keys = {ExtractionSettings("vit_small_patch16_224", w, None, 8.0, 224, "bfloat16").key() for w in spellings}
    assert keys == {"63fd02611cb5"}
    assert tiny("hf://timm/other").key() != tiny("timm/vit_small_patch16_224.augreg_in21k").key()


def test_overwriting_the_weights_file_at_the_same_path_changes_the_key(tmp_path):
    weights = write_tiny_vit(tmp_path / "weights.safetensors", seed=1)
    before = tiny(str(weights)).key()
    write_tiny_vit(weights, seed=2)
    os.utime(weights, ns=(1, 1))  # even with another mtime only, the contents decide
    after = tiny(str(weights)).key()
    assert after != before
    write_tiny_vit(weights, seed=1)
    assert tiny(str(weights)).key() == before  # the same network again: its tokens are found again


def test_a_relative_weights_path_in_two_folders_gives_two_keys(tmp_path, monkeypatch):
    for name, seed in (("a", 1), ("b", 2)):
        write_tiny_vit(tmp_path / name / "weights.safetensors", seed)
    keys = []
    for name in ("a", "b"):
        monkeypatch.chdir(tmp_path / name)
        keys.append(tiny("weights.safetensors").key())
    assert keys[0] != keys[1]
    # The same file named another way is the same network: one cache.
    assert tiny(str(tmp_path / "b" / "weights.safetensors")).key() == keys[1]


def test_the_normalisation_of_a_config_beside_the_weights_is_part_of_the_key(tmp_path):
    weights = write_tiny_vit(tmp_path / "w" / "model.safetensors", seed=1)
    plain = tiny(str(weights)).key()
    config = weights.with_name("config.json")
    config.write_text(json.dumps({"pretrained_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3}}))
    half = tiny(str(weights)).key()
    config.write_text(json.dumps({"pretrained_cfg": {"mean": [0.5] * 3, "std": [0.25] * 3}}))
    quarter = tiny(str(weights)).key()
    assert len({plain, half, quarter}) == 3
    # What the backbone does not read does not split the cache.
    config.write_text(json.dumps({"pretrained_cfg": {"mean": [0.5] * 3, "std": [0.25] * 3}, "note": "x"}))
    assert tiny(str(weights)).key() == quarter


def test_weights_are_hashed_once_per_process_and_a_slow_hash_says_so(tmp_path, monkeypatch, capsys):
    weights = write_tiny_vit(tmp_path / "weights.safetensors", seed=3)
    monkeypatch.setattr(fingerprint_module, "HASH_NOTICE_SECONDS", -1.0)
    fingerprint_module._file_sha256.cache_clear()
    settings = tiny(str(weights))
    keys = {settings.key() for _ in range(5)}
    cache = FeatureCache(tmp_path / "cache", settings)
    cache.save("v", torch.zeros(1, 17, 32))
    assert len(keys) == 1 and cache.folder.name in keys
    assert fingerprint_module._file_sha256.cache_info().misses == 1
    assert "hashing backbone weights" in " ".join(capsys.readouterr().err.split())
    assert cache.load("v")[1]["backbone_weights_sha256"] == settings.metadata()["backbone_weights_sha256"]


@pytest.mark.parametrize("text", [None, "timm/vit_small_patch16_224.augreg_in21k", "missing.safetensors"])
def test_no_local_file_means_no_fingerprint(tmp_path, monkeypatch, text):
    monkeypatch.chdir(tmp_path)
    assert fingerprint_module.local_weights_fingerprint(text) is None


def test_extract_does_not_reuse_tokens_of_the_weights_before_they_changed(tmp_path):
    weights = write_tiny_vit(tmp_path / "weights.safetensors", seed=1)
    data = data_section(tmp_path, backbone="vit_tiny_test", backbone_weights=str(weights), frames=2)
    records = make_records(tmp_path / "videos", 2)

    def run() -> tuple[int, int, torch.Tensor]:
        settings = settings_from_data(data)
        cache = FeatureCache(data.cache_dir, settings)
        report = extract_records(records, settings, cache, decode_threads=1, show_progress=False)
        return report.extracted, report.reused, cache.load("-vid00")[0]

    extracted, reused, old = run()
    assert (extracted, reused) == (2, 0)
    write_tiny_vit(weights, seed=2)  # a new network at the same path
    extracted, reused, new = run()
    assert (extracted, reused) == (2, 0)
    assert not torch.equal(old, new)


def test_an_unreadable_weights_file_is_one_line_naming_it(tmp_path, monkeypatch):
    from s5cli.errors import UserError

    weights = write_tiny_vit(tmp_path / "weights.safetensors", seed=4)
    fingerprint_module._file_sha256.cache_clear()

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(weights))

    monkeypatch.setattr(fingerprint_module, "open", denied, raising=False)
    with pytest.raises(UserError, match=r"data\.backbone_weights=.*cannot read .*weights\.safetensors \(Permission"):
        tiny(str(weights)).key()


def test_keys_of_real_vit_presets_without_a_stated_normalisation_are_new(tmp_path, monkeypatch):
    """Weights without a config.json beside them were normalised with ImageNet's mean/std, under a key that
    held none; the real ViT presets now use their weights' 0.5 / 0.5, so those tokens must not be found.
    Keys marked "earlier" were computed by the code before: every setting whose tokens stay keeps its key."""
    monkeypatch.chdir(tmp_path)
    weights = tmp_path / "w" / "weights.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"not really weights")  # the key reads the bytes only, and these never change

    def key(name: str, weights: str | None, frames: int | None = None, fps: float | None = 1.0) -> str:
        return ExtractionSettings(name, weights, frames, fps, 224).key()

    assert key("vit_small_patch16_224", str(weights)) != "5cda197b4a57"  # earlier: ImageNet-normalised tokens
    assert key("vit_large_patch16_224", str(weights)) != "651cfee853e8"
    assert key("vit_small_patch16_224", None, 16, None) != "e04124e5ba8f"  # a random preset's input too
    assert key("vit_tiny_test", str(weights)) == "e04eb0700809"  # earlier, and the same tokens: kept
    assert key("vit_tiny_test", None, 16, None) == "5387cb003be7"
    assert key("patch_pool", None, 16, None) == ExtractionSettings("patch_pool", None, 16, None, 224).key()
    # A config.json stating what the preset now uses is the same normalisation: the same tokens, one cache.
    unstated = key("vit_small_patch16_224", str(weights))
    config = weights.with_name("config.json")
    config.write_text(json.dumps({"pretrained_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3}}))
    assert key("vit_small_patch16_224", str(weights)) == unstated == "92a0ff049b5c"  # earlier key of that config
    config.write_text(json.dumps({"pretrained_cfg": {"mean": [0.5] * 3}}))  # std: the preset's, now 0.5
    assert key("vit_small_patch16_224", str(weights)) == unstated
