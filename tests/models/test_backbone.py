"""Frozen backbones: timm key layout (written as timm names them), strict loading, pos_embed resampling, PatchPool."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from s5cli.errors import UserError
from s5cli.models.backbone import PRESETS, build_backbone
from s5cli.models.patch_pool import PatchPool
from s5cli.models.vit import VisionTransformer, resample_pos_embed


def timm_vit_state_dict(dim: int, depth: int, grid: int, patch: int = 16, classes: int = 10, seed: int = 1):
    """A state dict named exactly as timm's VisionTransformer names it (incl. its classification head)."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * 0.05

    hidden = 4 * dim
    state = {
        "cls_token": rand(1, 1, dim),
        "pos_embed": rand(1, 1 + grid * grid, dim),
        "patch_embed.proj.weight": rand(dim, 3, patch, patch),
        "patch_embed.proj.bias": rand(dim),
    }
    for i in range(depth):
        block = f"blocks.{i}."
        state.update(
            {
                block + "norm1.weight": 1 + rand(dim),
                block + "norm1.bias": rand(dim),
                block + "attn.qkv.weight": rand(3 * dim, dim),
                block + "attn.qkv.bias": rand(3 * dim),
                block + "attn.proj.weight": rand(dim, dim),
                block + "attn.proj.bias": rand(dim),
                block + "norm2.weight": 1 + rand(dim),
                block + "norm2.bias": rand(dim),
                block + "mlp.fc1.weight": rand(hidden, dim),
                block + "mlp.fc1.bias": rand(hidden),
                block + "mlp.fc2.weight": rand(dim, hidden),
                block + "mlp.fc2.bias": rand(dim),
            }
        )
    state.update(
        {
            "norm.weight": 1 + rand(dim),
            "norm.bias": rand(dim),
            "head.weight": rand(classes, dim),
            "head.bias": rand(classes),
        }
    )
    return state


@pytest.fixture
def tiny_weights(tmp_path):
    config = PRESETS["vit_tiny_test"]
    state = timm_vit_state_dict(config.dim, config.depth, config.image_size // 16)
    path = tmp_path / "vit_tiny.safetensors"
    save_file(state, str(path))
    return path, state


def test_timm_layout_loads_strictly_and_every_tensor_arrives(tiny_weights):
    path, state = tiny_weights
    model = build_backbone("vit_tiny_test", str(path))
    loaded = model.state_dict()
    assert set(loaded) == {k for k in state if not k.startswith("head.")}
    for key, value in loaded.items():
        torch.testing.assert_close(value, state[key], msg=key)


def test_output_is_all_tokens_per_image_and_backbone_is_frozen(tiny_weights):
    model = build_backbone("vit_tiny_test", str(tiny_weights[0]))
    tokens = model(torch.randn(3, 3, 64, 64))
    assert tokens.shape == (3, 1 + 16, 32)
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    # After the final LayerNorm with unit-ish weight, each token has roughly unit spread.
    assert 0.5 < tokens.std(dim=-1).mean() < 2.0


def test_mismatched_keys_are_named(tmp_path, tiny_weights):
    _, state = tiny_weights
    state = dict(state)
    del state["blocks.1.mlp.fc2.bias"]
    state["blocks.0.attn.q_bias"] = torch.zeros(32)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(UserError) as caught:
        build_backbone("vit_tiny_test", str(path))
    message = str(caught.value)
    assert "blocks.1.mlp.fc2.bias" in message and "missing" in message
    assert "blocks.0.attn.q_bias" in message and "unexpected" in message


def test_wrong_shapes_are_named(tmp_path, tiny_weights):
    _, state = tiny_weights
    state = dict(state)
    state["blocks.0.mlp.fc1.weight"] = torch.zeros(64, 32)
    path = tmp_path / "shape.safetensors"
    save_file(state, str(path))
    with pytest.raises(UserError, match=r"blocks\.0\.mlp\.fc1\.weight"):
        build_backbone("vit_tiny_test", str(path))


@pytest.mark.parametrize("name", ["weights.bin", "model.pth", "ckpt.pt"])
def test_pickle_checkpoints_are_refused(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"not loaded")
    with pytest.raises(UserError, match="not safetensors"):
        build_backbone("vit_tiny_test", str(path))


def test_missing_local_file_and_unknown_name_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        build_backbone("vit_tiny_test", str(tmp_path / "nope.safetensors"))
    (tmp_path / "release").mkdir()  # the folder a download left, given for the file in it
    with pytest.raises(UserError, match=r"is a folder: pass the \.safetensors file in it"):
        build_backbone("vit_tiny_test", str(tmp_path / "release"))
    with pytest.raises(UserError, match="vit_small_patch16_224"):
        build_backbone("vit_smal_patch16_224")


def test_pos_embed_is_resampled_to_another_image_size(tiny_weights):
    model = build_backbone("vit_tiny_test", str(tiny_weights[0]), image_size=96)
    assert model.pos_embed.shape == (1, 1 + 36, 32)
    # The class position is kept as it is; the grid is interpolated (corners stay close to the source's).
    source = tiny_weights[1]["pos_embed"]
    torch.testing.assert_close(model.pos_embed[:, 0], source[:, 0])
    assert model(torch.randn(1, 3, 96, 96)).shape == (1, 37, 32)


def test_resampling_to_the_same_grid_is_identity():
    pos = torch.randn(1, 1 + 16, 8)
    assert resample_pos_embed(pos, (4, 4)) is pos
    assert resample_pos_embed(pos, (6, 6)).shape == (1, 37, 8)


def test_random_tiny_vit_is_seeded_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    first = build_backbone("vit_tiny_test")
    assert torch.equal(torch.get_rng_state(), state)
    second = build_backbone("vit_tiny_test")
    images = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(first(images), second(images))


def test_preset_sizes_match_timm_parameter_counts():
    # timm: vit_small_patch16_224 has 22,050,664 parameters with its 1000-class head (385,000 of them).
    small = VisionTransformer(PRESETS["vit_small_patch16_224"])
    assert sum(p.numel() for p in small.parameters()) == 22_050_664 - 385_000
    assert small(torch.randn(1, 3, 224, 224)).shape == (1, 197, 384)


def test_patch_pool_is_parameter_free_deterministic_and_local():
    pool = build_backbone("patch_pool")
    assert list(pool.parameters()) == [] and pool.state_dict() == {}
    images = torch.rand(2, 3, 96, 96)
    tokens = pool(images)
    assert tokens.shape == (2, 37, 96)
    torch.testing.assert_close(tokens, PatchPool()(images))
    torch.testing.assert_close(tokens[:, 0], tokens[:, 1:].mean(dim=1))
    changed = images.clone()
    changed[:, :, :16, 16:32] = 1.0  # patch (row 0, col 1) only
    delta = (pool(changed) - tokens).abs().amax(dim=(0, 2))
    assert delta[2] > 0.1
    assert torch.all(delta[1:2] == 0) and torch.all(delta[3:] == 0)


def test_patch_pool_projection_is_orthonormal_and_keeps_distances():
    pool = PatchPool()
    torch.testing.assert_close(pool.projection @ pool.projection.T, torch.eye(48), atol=1e-5, rtol=0)
    a, b = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    pooled = [torch.nn.functional.avg_pool2d(x, 4).flatten() for x in (a, b)]
    token_distance = (pool(a)[0, 1] - pool(b)[0, 1]).norm()
    torch.testing.assert_close(token_distance, (pooled[0] - pooled[1]).norm(), atol=1e-5, rtol=1e-5)


def test_same_outputs_as_timm_on_the_same_weights(tmp_path):
    """timm's own output for a tiny ViT, stored by tests/models/make_timm_reference.py (timm is not installed
    here: it needs torchvision), against ours loaded from the same weights in timm's layout."""
    reference = load_file(str(Path(__file__).with_name("data") / "timm_vit_tiny.safetensors"))
    weights = {k[len("weights."):]: v for k, v in reference.items() if k.startswith("weights.")}
    save_file(weights, str(tmp_path / "timm_vit_tiny.safetensors"))
    ours = build_backbone("vit_tiny_test", str(tmp_path / "timm_vit_tiny.safetensors"))
    with torch.no_grad():
        features = ours(reference["images"])
    torch.testing.assert_close(features, reference["features"], atol=1e-5, rtol=1e-4)
    assert features.std() > 0.5  # every token differs: a wrong block or position embedding would show


def test_the_real_vit_presets_normalise_as_their_weights_were_trained():
    """timm's ViT-S/B/L/16 (ImageNet-21k, augreg) weights expect mean = std = 0.5; the presets said ImageNet's
    mean/std, which a weights file without a config.json (or a Hub repo without one) was then normalised
    with. vit_tiny_test, a random test network, keeps its normalisation and so its tokens."""
    from s5cli.models.vit import IMAGENET_MEAN, IMAGENET_STD

    for name in ("vit_small_patch16_224", "vit_base_patch16_224", "vit_large_patch16_224"):
        assert (PRESETS[name].mean, PRESETS[name].std) == ((0.5,) * 3, (0.5,) * 3), name
    assert (PRESETS["vit_tiny_test"].mean, PRESETS["vit_tiny_test"].std) == (IMAGENET_MEAN, IMAGENET_STD)


def test_local_weights_without_a_config_use_the_preset_normalisation_and_say_so_once(tmp_path, monkeypatch, capsys):
    import json
    from dataclasses import replace

    # ViT-S's preset as it is but for its size, so a test builds it in a moment.
    small = replace(PRESETS["vit_small_patch16_224"], image_size=64, dim=32, depth=2, heads=2)
    monkeypatch.setitem(PRESETS, "vit_small_patch16_224", small)
    path = tmp_path / "vit_s.safetensors"
    save_file(timm_vit_state_dict(32, 2, 4), str(path))
    model = build_backbone("vit_small_patch16_224", str(path))
    assert (model.mean, model.std) == ((0.5,) * 3, (0.5,) * 3)
    build_backbone("vit_small_patch16_224", str(path))
    err = " ".join(capsys.readouterr().err.split())
    assert err.count("warning:") == 1
    assert (f"backbone weights {path}: no config.json beside it: normalising frames with the vit_small_patch16_224 "
            "preset's mean (0.5, 0.5, 0.5) / std (0.5, 0.5, 0.5); if the weights were trained with others, put a "
            "config.json beside them") in err
    # A config.json stating both: its values, no warning.
    path.with_name("config.json").write_text(json.dumps({"pretrained_cfg": {"mean": [0.25] * 3, "std": [0.5] * 3}}))
    assert build_backbone("vit_small_patch16_224", str(path)).mean == (0.25,) * 3
    # vit_tiny_test is a random test network: no trained weights whose normalisation could be lost.
    build_backbone("vit_tiny_test", str(path))
    assert "warning" not in capsys.readouterr().err
