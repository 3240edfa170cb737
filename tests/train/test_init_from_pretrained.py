"""`train.init`: an LSMCL checkpoint's encoder becomes the model's weights; its head is left to finetuning."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from s5cli.errors import UserError
from s5cli.models.lsmcl import LSMCL, LSMCLConfig
from s5cli.models.registry import build_model
from s5cli.train import checkpoint as ckpt
from s5cli.train.checkpoint_paths import set_latest
from s5cli.train.checkpoint_weights import load_into
from s5cli.train.init_weights import _check_init_tokens, pretrained_state, resolve_init

S5_SMALL = dict(d_input=16, d_model=32, n_blocks=2, d_state=8, guide_channels=8, dropout=0.0)


def init_from_pretrained(model: nn.Module, directory: Path, spec: str, recipe_model: dict | None = None) -> None:
    """What the trainer does with train.init (checked by `init_weights.check_init`, loaded after extraction)."""
    load_into(model, pretrained_state(model, directory, spec, recipe_model), f"train.init={spec}", strict=False)


def _pretrained(folder: Path, num_outputs: int) -> LSMCL:
    """An LSMCL module whose encoder differs from a fresh model, saved as a pretraining run's checkpoint."""
    torch.manual_seed(1)
    module = LSMCL(build_model("s5", S5_SMALL, num_outputs), LSMCLConfig(short_frames=4, long_frames=8, proj_dim=16))
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.1)
    step = ckpt.save_checkpoint(folder / "checkpoints" / "step-0000001", module,
                                {"model_name": "s5", "num_outputs": str(num_outputs), "objective": "lsmcl",
                                 "recipe": json.dumps({})})
    set_latest(folder, step)
    return module


def test_encoder_weights_arrive_and_a_head_of_another_size_is_left_alone(tmp_path: Path) -> None:
    pretrained = _pretrained(tmp_path / "pre", num_outputs=3)
    torch.manual_seed(2)
    model = build_model("s5", S5_SMALL, 9)  # another task: 9 classes, so the pretraining head cannot fit
    head_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("head.")}
    directory = resolve_init(str(tmp_path / "pre"))  # a run folder without best/: its latest checkpoint
    assert directory == tmp_path / "pre" / "checkpoints" / "step-0000001"
    init_from_pretrained(model, directory, "pre")
    encoder = pretrained.encoder.state_dict()
    loaded = model.state_dict()
    body = [k for k in loaded if not k.startswith("head.")]
    assert body and all(torch.equal(loaded[k], encoder[k]) for k in body)
    assert all(torch.equal(loaded[k], v) for k, v in head_before.items())


def test_a_pretraining_head_of_the_same_size_is_left_alone_too(tmp_path: Path) -> None:
    """Pretraining never trains the head: loading it gave every finetuning run the pretraining run's random
    draw, the same whatever --seed, counted as pretrained weights."""
    _pretrained(tmp_path / "pre", num_outputs=3)
    torch.manual_seed(2)
    model = build_model("s5", S5_SMALL, 3)
    head_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("head.")}
    state = pretrained_state(model, resolve_init(str(tmp_path / "pre")), "pre")
    assert head_before and not [k for k in state if k.startswith("head.")]
    init_from_pretrained(model, resolve_init(str(tmp_path / "pre")), "pre")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in head_before.items())


def test_a_checkpoint_of_another_width_is_refused_naming_the_key(tmp_path: Path) -> None:
    _pretrained(tmp_path / "pre", num_outputs=3)
    model = build_model("s5", {**S5_SMALL, "d_model": 64}, 3)
    with pytest.raises(UserError, match=r"train\.init=pre"):
        init_from_pretrained(model, resolve_init(str(tmp_path / "pre")), "pre")


def _saved_with_recipe(folder: Path, name: str, settings: dict) -> nn.Module:
    """A finetuned model saved as its run's checkpoint, its recipe's model section in the metadata."""
    torch.manual_seed(3)
    model = build_model(name, settings, 3)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1)
    recipe = {"model": {"name": name, **settings}}
    step = ckpt.save_checkpoint(folder / "checkpoints" / "step-0000001", model,
                                {"model_name": name, "num_outputs": "3", "objective": "supervised",
                                 "recipe": json.dumps(recipe)})
    set_latest(folder, step)
    return model


def test_a_checkpoint_of_more_blocks_is_refused_naming_the_setting(tmp_path: Path) -> None:
    """Its first block used to load and the others were dropped without a word."""
    _saved_with_recipe(tmp_path / "pre", "s5", S5_SMALL)
    one_block = {**S5_SMALL, "n_blocks": 1}
    model = build_model("s5", one_block, 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UserError, match=r"train\.init=pre does not fit .* model\.n_blocks=2 \(recipe: 1\); "
                                        r"\d+ weights without a place \(e\.g\. decoder\.blocks\.1\."):
        init_from_pretrained(model, resolve_init(str(tmp_path / "pre")), "pre", {"name": "s5", **one_block})
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_an_s5_checkpoint_into_s4_leaves_out_only_the_selection_and_says_so(tmp_path: Path, capsys) -> None:
    trained = _saved_with_recipe(tmp_path / "pre", "s5", S5_SMALL).state_dict()
    decoder = {k: v for k, v in S5_SMALL.items() if k not in ("guide_channels",)}
    model = build_model("s4", decoder, 3)
    init_from_pretrained(model, resolve_init(str(tmp_path / "pre")), "pre", {"name": "s4", **decoder})
    loaded = model.state_dict()
    assert loaded and all(torch.equal(v, trained[k]) for k, v in loaded.items())
    err = " ".join(capsys.readouterr().err.split())
    assert "train.init=pre: its token selection" in err and "(model.name=s4) selects no tokens" in err


@pytest.mark.parametrize("selector", ["random", "uniform"])
def test_a_learned_selection_into_another_selector_names_that_selector(tmp_path: Path, capsys, selector: str) -> None:
    """A random (or uniform) selector selects tokens: it has no learned selector to take the weights, and the
    warning said the model (model.name=s5) "selects no tokens"."""
    _pretrained(tmp_path / "pre", num_outputs=3)
    settings = {**S5_SMALL, "selector": selector}
    init_from_pretrained(build_model("s5", settings, 3), resolve_init(str(tmp_path / "pre")), "pre",
                         {"name": "s5", **settings})
    err = " ".join(capsys.readouterr().err.split())
    assert f"left out, as this model (model.selector={selector}) has no learned selector; the rest is loaded" in err
    assert "selects no tokens" not in err


def test_an_s4_checkpoint_into_s5_names_the_model(tmp_path: Path) -> None:
    decoder = {k: v for k, v in S5_SMALL.items() if k not in ("guide_channels",)}
    _saved_with_recipe(tmp_path / "pre", "s4", decoder)
    with pytest.raises(UserError, match=r"model\.name=s4 \(recipe: s5\); \d+ weights missing \(e\.g\. guide\."):
        init_from_pretrained(build_model("s5", S5_SMALL, 3), resolve_init(str(tmp_path / "pre")), "pre",
                             {"name": "s5", **S5_SMALL})


def _data(**settings) -> SimpleNamespace:
    return SimpleNamespace(**{"backbone": "patch_pool", "backbone_weights": None, "image_size": 32, "resize": "crop",
                              **settings})


def _meta(**data) -> dict[str, str]:
    return {"recipe": json.dumps({"model": {}, "data": {"backbone": "patch_pool", "backbone_weights": None,
                                                        "image_size": 32, **data}})}


def test_one_hub_weights_id_spelled_two_ways_is_the_same_backbone_for_init_and_eval(capsys) -> None:
    """The token cache takes `hf://timm/X` and `timm/X` as one; train.init and `s5 eval` refused a run
    trained on one spelling when the recipe used the other."""
    from s5cli.cli.evaluate import _check_token_settings

    for recipe, stored in (("hf://timm/vit", "timm/vit"), ("timm/vit", "hf-hub:timm/vit")):
        _check_init_tokens(_data(backbone_weights=recipe), _meta(backbone_weights=stored), "pre")
        _check_token_settings(_data(backbone_weights=recipe, frames=8, fps=None, window_seconds=None),
                              {"backbone": "patch_pool", "backbone_weights": stored}, "ckpt")
    assert capsys.readouterr().err == ""
    with pytest.raises(UserError, match=r"data.backbone_weights=timm/other"):
        _check_init_tokens(_data(backbone_weights="hf://timm/vit"), _meta(backbone_weights="timm/other"), "pre")


def test_a_checkpoint_of_another_backbones_tokens_is_refused_and_another_image_size_warned(capsys) -> None:
    with pytest.raises(UserError, match=r"train.init=pre was trained on tokens of data.backbone=vit_base_patch16_224,"
                                        r" this recipe makes them with data.backbone=patch_pool: set data.backbone="):
        _check_init_tokens(_data(), _meta(backbone="vit_base_patch16_224"), "pre")
    with pytest.raises(UserError, match=r"data.backbone_weights=w.safetensors"):
        _check_init_tokens(_data(), _meta(backbone_weights="w.safetensors"), "pre")
    _check_init_tokens(_data(backbone_weights=""), _meta(), "pre")  # unset either way
    assert capsys.readouterr().err == ""
    _check_init_tokens(_data(image_size=64), _meta(), "pre")
    assert "data.image_size=64: train.init=pre was trained on tokens of 32 px frames" in " ".join(
        capsys.readouterr().err.split())
    # A checkpoint saved before data.resize existed was trained on centre crops.
    _check_init_tokens(_data(resize="squash"), _meta(), "pre")
    assert "data.resize=squash: train.init=pre was trained on tokens of frames resized with data.resize=crop" in (
        " ".join(capsys.readouterr().err.split()))
    _check_init_tokens(_data(resize="squash"), _meta(resize="squash"), "pre")
    assert capsys.readouterr().err == ""
    _check_init_tokens(_data(), {"recipe": "not json"}, "pre")  # the weights check names such a checkpoint


def _lvu_recipe(task: str) -> SimpleNamespace:
    return SimpleNamespace(data=_data(dataset="lvu", task=task), model=SimpleNamespace())


@pytest.mark.parametrize(("stored", "warned"), [("genre", True), ("way_speaking", False), (None, False)])
def test_init_from_another_lvu_task_warns_that_its_test_videos_may_have_been_seen(
        monkeypatch: pytest.MonkeyPatch, capsys, stored: str | None, warned: bool) -> None:
    """LVU's tasks share videos (genre's train holds 26 of way_speaking's test videos): weights trained on
    another task have seen inputs of this task's test split, and nothing said so."""
    import s5cli.data.datasets as datasets
    from s5cli import recipe as recipe_module
    from s5cli.train import checkpoint_metadata, init_weights, job

    data = {"dataset": "lvu", "task": stored} if stored else {"dataset": "synthetic"}
    monkeypatch.setattr(checkpoint_metadata, "read_metadata", lambda directory: _meta(**data))
    monkeypatch.setattr(datasets, "task_info", lambda data: SimpleNamespace(num_outputs=5))
    monkeypatch.setattr(job, "build_model_from_recipe", lambda recipe, outputs: nn.Linear(1, outputs))
    monkeypatch.setattr(init_weights, "pretrained_state", lambda *args: {})
    monkeypatch.setattr(recipe_module, "recipe_to_dict", lambda recipe: {"model": {}})
    init_weights.check_init(_lvu_recipe("way_speaking"), Path("runs/genre"), "runs/genre")
    err = " ".join(capsys.readouterr().err.split())
    expected = ("train.init=runs/genre was trained on LVU task genre, this recipe trains data.task=way_speaking: "
                "LVU tasks share videos, so its weights may have seen way_speaking's test videos, so its test "
                "scores are not held out; start from a run of way_speaking or of another dataset")
    assert (expected in err) is warned, err
    if warned:  # under torchrun one rank says so
        monkeypatch.setenv("RANK", "1")
        init_weights.check_init(_lvu_recipe("way_speaking"), Path("runs/genre"), "runs/genre")
        assert "LVU task" not in capsys.readouterr().err


def test_init_from_another_lvu_task_counts_the_test_videos_it_saw(monkeypatch: pytest.MonkeyPatch, capsys,
                                                                  shared_data_dir: Path) -> None:
    """With the split files at hand the warning counts the shared videos, and pairs that share none (10 of
    the 72, e.g. relationship -> scene) are not warned about."""
    from s5cli.train import init_weights

    def recipe(task: str) -> SimpleNamespace:
        return SimpleNamespace(data=_data(dataset="lvu", task=task, annotations=str(shared_data_dir / "lvu_1.0")))

    init_weights._check_init_task(recipe("way_speaking").data, _meta(dataset="lvu", task="genre"), "pre")
    assert ("genre's train and val splits hold 33 of way_speaking's 201 test videos, so its test scores are not "
            "held out") in " ".join(capsys.readouterr().err.split())
    init_weights._check_init_task(recipe("scene").data, _meta(dataset="lvu", task="relationship"), "pre")
    assert capsys.readouterr().err == ""
