"""Safetensors files written by s5cli are byte-reproducible and still read back as the library wrote them."""

from __future__ import annotations

import hashlib
import json
import struct

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from s5cli.data.cache import FeatureCache
from s5cli.data.cache_settings import ExtractionSettings
from s5cli.safetensors_io import save_tensors, sort_metadata
from s5cli.train.checkpoint import MODEL_FILE, save_checkpoint

METADATA = {key: f"value of {key}" for key in ("zeta", "alpha", "mu", "beta", "omega", "kappa")}


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _header(path) -> tuple[int, str]:
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return length, data[8 : 8 + length].decode("utf-8")


def test_same_contents_give_the_same_bytes(tmp_path):
    tensors = {"weight": torch.arange(12.0).view(3, 4), "bias": torch.ones(3, dtype=torch.float16)}
    digests = set()
    for attempt in range(6):  # the library alone gives a new metadata order almost every time
        path = tmp_path / f"run{attempt}.safetensors"
        save_tensors(tensors, path, metadata=METADATA)
        digests.add(_digest(path))
    assert len(digests) == 1
    with safe_open(str(path), framework="pt") as handle:
        assert handle.metadata() == METADATA
        assert torch.equal(handle.get_tensor("weight"), tensors["weight"])
        assert torch.equal(handle.get_tensor("bias"), tensors["bias"])
    _, header = _header(path)
    assert list(json.loads(header)["__metadata__"]) == sorted(METADATA)


def test_sorting_keeps_length_and_offsets_with_awkward_strings(tmp_path):
    metadata = {"z": 'quote " backslash \\ newline \n tab \t', "é": "naïve ünïcode ✓", "a": "\x01 control", "m": "{}"}
    path = tmp_path / "odd.safetensors"
    save_file({"x": torch.randn(5, 7)}, str(path), metadata=metadata)
    length_before, _ = _header(path)
    size_before = path.stat().st_size
    sort_metadata(path)
    length_after, header = _header(path)
    assert (length_after, path.stat().st_size) == (length_before, size_before)
    assert list(json.loads(header)["__metadata__"]) == sorted(metadata)
    with safe_open(str(path), framework="pt") as handle:
        assert handle.metadata() == metadata
        assert handle.get_tensor("x").shape == (5, 7)


@pytest.mark.parametrize("metadata", [None, {"only": "one"}])
def test_nothing_to_sort_leaves_the_file_alone(tmp_path, metadata):
    path = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(2)}, str(path), metadata=metadata)
    before = path.read_bytes()
    assert sort_metadata(path) is False
    assert path.read_bytes() == before


def test_checkpoints_of_the_same_weights_are_identical_files(tmp_path):
    torch.manual_seed(0)
    module = torch.nn.Linear(4, 3)
    meta = {"model_name": "s5", "num_outputs": "3", "objective": "classification", "step": "7", "recipe": "{}"}
    first = save_checkpoint(tmp_path / "a", module, meta)
    second = save_checkpoint(tmp_path / "b", module, meta)
    assert _digest(first / MODEL_FILE) == _digest(second / MODEL_FILE)


def test_token_cache_entries_of_the_same_tokens_are_identical_files(tmp_path):
    tokens = torch.randn(3, 2, 8)
    settings = ExtractionSettings(backbone="vit-tiny", backbone_weights=None, frames=3, fps=None, image_size=32)
    first = FeatureCache(tmp_path / "one", settings).save("clip", tokens, {"source": "clip.mp4", "frames": "3"})
    second = FeatureCache(tmp_path / "two", settings).save("clip", tokens, {"source": "clip.mp4", "frames": "3"})
    assert _digest(first) == _digest(second)
