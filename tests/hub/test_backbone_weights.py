"""Backbone weights named by a Hub id come through s5cli's Hub download: cached, one request, one-line errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save

from s5cli.errors import RunFailure, UserError
from s5cli.models.backbone import PRESETS, build_backbone
from tests.hub.fake_hub import FakeHub
from tests.models.test_backbone import timm_vit_state_dict

REPO = "timm/vit_tiny_test.fake"


@pytest.fixture
def weights() -> dict[str, torch.Tensor]:
    config = PRESETS["vit_tiny_test"]
    return timm_vit_state_dict(config.dim, config.depth, config.image_size // 16)


def test_a_hub_id_loads_the_weights_and_their_normalisation(hub: FakeHub, weights, capsys) -> None:
    config = {"pretrained_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}
    hub.commit(REPO, {"model.safetensors": save(weights), "config.json": json.dumps(config).encode()}, branch="v1")
    model = build_backbone("vit_tiny_test", f"hf-hub:{REPO}@v1")
    assert model.mean == (0.5, 0.5, 0.5) and model.std == (0.25, 0.25, 0.25)
    torch.testing.assert_close(model.norm.weight, weights["norm.weight"])
    assert [p for p in hub.paths_requested() if p.endswith("model.safetensors")]  # fetched from the fake Hub
    # A second build reads the cached file (the hf:// form names the same repo).
    seen = len(hub.requests)
    again = build_backbone("vit_tiny_test", f"hf://{REPO}@v1")
    torch.testing.assert_close(again.norm.weight, weights["norm.weight"])
    assert capsys.readouterr().err == ""
    assert len(hub.requests) > seen  # online, each file's freshness is checked with the Hub


def test_a_missing_repo_is_a_user_error_naming_the_weights(hub: FakeHub) -> None:
    with pytest.raises(UserError) as info:
        build_backbone("vit_tiny_test", "timm/missing")
    assert str(info.value).startswith("backbone weights timm/missing: Hub repo timm/missing not found")


def test_an_unreachable_hub_is_one_line_after_one_request(hub: FakeHub, weights, monkeypatch, capsys) -> None:
    # Port 9 (discard) on this machine: nothing listens, so the connection is refused at once.
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(RunFailure) as info:
        build_backbone("vit_tiny_test", REPO)
    message = str(info.value)
    assert message.startswith(f"backbone weights {REPO}: cannot reach the Hub for {REPO}@main file "
                              "'model.safetensors' and it is not cached")
    assert "\n" not in message and "Retry" not in capsys.readouterr().err  # no five retries with backoff
    # Once cached (here: downloaded while the Hub answered), an unreachable Hub only costs a warning.
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    hub.commit(REPO, {"model.safetensors": save(weights)})
    build_backbone("vit_tiny_test", REPO)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    model = build_backbone("vit_tiny_test", REPO)
    torch.testing.assert_close(model.norm.weight, weights["norm.weight"])
    assert "cannot reach the Hub" in capsys.readouterr().err


def test_weights_whose_config_could_not_be_fetched_say_the_normalisation_may_differ(
    hub: FakeHub, weights, monkeypatch, capsys
) -> None:
    """The repo says it has no config.json: the preset normalisation, no word. Offline with none cached it
    cannot be known: the preset is used with a warning (it used to change the tokens silently)."""
    hub.commit(REPO, {"model.safetensors": save(weights)})
    build_backbone("vit_tiny_test", REPO)
    assert "config.json" not in capsys.readouterr().err
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = build_backbone("vit_tiny_test", REPO)
    assert model.mean == tuple(PRESETS["vit_tiny_test"].mean)
    err = " ".join(capsys.readouterr().err.split())
    assert "config.json (the normalisation the weights were trained with) could not be fetched" in err
