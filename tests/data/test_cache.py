"""Feature cache: settings key, fp16 storage with metadata, atomic files, corrupt entries treated as missing."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from s5cli.data.cache import CorruptCacheEntry, FeatureCache
from s5cli.data.cache_settings import ExtractionSettings
from s5cli.errors import UserError

SETTINGS = ExtractionSettings(
    backbone="vit_large_patch16_224",
    backbone_weights="timm/vit_large_patch16_224.augreg_in21k",
    frames=None,
    fps=1.0,
    image_size=224,
    dtype="float16",
)


def test_key_is_stable_short_and_changes_with_every_field():
    key = SETTINGS.key()
    assert len(key) == 12 and all(c in "0123456789abcdef" for c in key)
    assert dataclasses.replace(SETTINGS).key() == key
    changes = {
        "backbone": "vit_base_patch16_224",
        "backbone_weights": None,
        "frames": 60,
        "fps": 2.0,
        "image_size": 256,
        "dtype": "float32",
        "resize": "squash",
    }
    assert set(changes) == {f.name for f in dataclasses.fields(ExtractionSettings)}
    keys = {dataclasses.replace(SETTINGS, **{name: value}).key() for name, value in changes.items()}
    assert key not in keys and len(keys) == len(changes)


def test_integer_and_float_fps_share_a_key():
    assert dataclasses.replace(SETTINGS, fps=1).key() == SETTINGS.key()


def test_unknown_dtype_is_a_user_error():
    with pytest.raises(UserError, match="cache_dtype"):
        dataclasses.replace(SETTINGS, dtype="int8")


def test_save_load_round_trip_in_fp16_with_metadata(tmp_path):
    cache = FeatureCache(tmp_path, SETTINGS)
    tokens = torch.randn(5, *SETTINGS.token_shape())  # (197, 1024): `has` checks the shape against the settings
    path = cache.save("-dQw4w9WgXcQ", tokens, {"source": "clip.mp4"})
    assert path == tmp_path / SETTINGS.key() / "-dQw4w9WgXcQ.safetensors"
    assert cache.has("-dQw4w9WgXcQ") and not cache.has("other")
    loaded, meta = cache.load("-dQw4w9WgXcQ")
    assert loaded.dtype == torch.float16 and loaded.shape == tokens.shape
    torch.testing.assert_close(loaded.float(), tokens, atol=1e-2, rtol=1e-3)
    assert meta["backbone"] == "vit_large_patch16_224"
    assert meta["fps"] == "1.0" and meta["frames"] == "" and meta["image_size"] == "224"
    assert meta["dtype"] == "float16" and meta["source"] == "clip.mp4"
    assert cache.num_frames("-dQw4w9WgXcQ") == 5
    # Only the entry, the settings note and the in-use mark: no temporary files left behind.
    names = {p.name for p in cache.folder.iterdir()}
    assert names == {"-dQw4w9WgXcQ.safetensors", "settings.json", ".in-use.lock"}


def test_float32_storage_is_exact(tmp_path):
    cache = FeatureCache(tmp_path, dataclasses.replace(SETTINGS, dtype="float32"))
    tokens = torch.randn(2, 3, 4)
    cache.save("P03-cam01-P03_cereals", tokens)
    assert torch.equal(cache.load("P03-cam01-P03_cereals")[0], tokens)


def test_other_settings_do_not_see_each_others_files(tmp_path):
    FeatureCache(tmp_path, SETTINGS).save("a", torch.zeros(1, 2, 3))
    assert not FeatureCache(tmp_path, dataclasses.replace(SETTINGS, image_size=256)).has("a")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_entry_is_reported_and_treated_as_missing(tmp_path, capsys, damage):
    cache = FeatureCache(tmp_path, SETTINGS)
    path = cache.save("vid", torch.randn(4, 5, 6))
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) - 10])
    elif damage == "garbage":
        path.write_bytes(b"\x00garbage" * 20)
    else:
        path.write_bytes(b"")
    assert not cache.has("vid")
    with pytest.raises(CorruptCacheEntry) as caught:
        cache.load("vid")
    assert isinstance(caught.value, FileNotFoundError)
    err = capsys.readouterr().err
    assert "corrupt cache entry" in err and "vid.safetensors" in err
    assert err.count("warning:") == 1  # reported once, not on every look


def test_missing_entry_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        FeatureCache(tmp_path, SETTINGS).load("nothing")


@pytest.mark.parametrize("bad_id", ["a/b", "..", ""])
def test_ids_that_are_not_file_names_are_refused(tmp_path, bad_id):
    with pytest.raises(UserError):
        FeatureCache(tmp_path, SETTINGS).path(bad_id)


def test_save_rejects_non_sequence_tensors(tmp_path):
    with pytest.raises(ValueError):
        FeatureCache(tmp_path, SETTINGS).save("x", torch.zeros(3, 4))


def test_num_frames_of_a_file_gone_or_damaged_since_it_was_checked_raises_what_load_raises(tmp_path):
    cache = FeatureCache(tmp_path, SETTINGS)
    path = cache.save("vid", torch.randn(4, 5, 6))
    assert cache.num_frames("vid") == 4
    path.write_bytes(b"\xff" * 8 + b"{}")
    with pytest.raises(CorruptCacheEntry, match=r"corrupt cache entry .*vid\.safetensors"):
        cache.num_frames("vid")
    path.unlink()
    with pytest.raises(FileNotFoundError, match="no cached tokens for video 'vid'"):
        cache.num_frames("vid")
