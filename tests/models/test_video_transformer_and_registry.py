"""Video transformer baseline and the model registry."""

from __future__ import annotations

import pytest
import torch

from s5cli.models.registry import UnknownModelError, build_model, canonical_name, model_config_class
from s5cli.models.s5 import S5Config, S5Model


def test_transformer_attends_across_time() -> None:
    """Changing only the last frame changes the first frame's tokens: they attend across time. Read before
    the final pooling (the pooled features change with any token, attention or not)."""
    torch.manual_seed(0)
    model = build_model("vit", dict(d_input=16, d_model=32, depth=2, heads=4), 3).eval()
    x = torch.randn(2, 5, 4, 16)
    x2 = x.clone()
    x2[:, -1] += 1.0
    assert model(x).shape == (2, 3)
    sequences = []
    hook = model.norm.register_forward_pre_hook(lambda module, args: sequences.append(args[0]))
    with torch.no_grad():
        model.forward_features(x)
        model.forward_features(x2)
    hook.remove()
    first_frame = [seq[:, :4] for seq in sequences]  # (B, T·S, D), frame-major: frame 0's 4 tokens
    assert not torch.allclose(first_frame[0], first_frame[1])


def test_registry_builds_by_name_and_alias() -> None:
    model = build_model("s5", S5Config(d_input=16, d_model=32, n_blocks=2, d_state=8), 2)
    assert isinstance(model, S5Model)
    assert canonical_name("ViS4mer") == "s4"
    assert model_config_class("vit").__name__ == "VideoTransformerConfig"


def test_unknown_names_and_settings_are_explained() -> None:
    with pytest.raises(UnknownModelError, match="did you mean 's5'"):
        model_config_class("s55")
    with pytest.raises(TypeError, match="keep_ration"):
        build_model("s5", {"keep_ration": 0.5}, 2)
