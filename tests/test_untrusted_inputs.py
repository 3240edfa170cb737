"""Files from other people (a shared folder, a downloaded checkpoint or recipe): links are never followed,
lock files never block, and damage is one clear line instead of a traceback or a memory blow-up."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from s5cli.errors import UserError


def test_a_planted_link_as_the_run_lock_is_refused_and_its_target_kept(tmp_path: Path) -> None:
    from s5cli.train.run_lock import LOCK_NAME, hold_run_folder, release_run_folder

    victim = tmp_path / "notes.txt"
    victim.write_text("IMPORTANT")
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).symlink_to(victim)
    with pytest.raises(UserError, match="is a symbolic link, not a regular file: remove it"):
        hold_run_folder(run)
    release_run_folder(run)
    assert victim.read_text() == "IMPORTANT"


def test_a_fifo_or_link_as_a_cache_lock_neither_blocks_nor_is_followed(tmp_path: Path) -> None:
    from s5cli.data.cache_lock import LOCK_NAME, in_use, mark_in_use, release_all

    fifo_folder, link_folder = tmp_path / "a", tmp_path / "b"
    fifo_folder.mkdir()
    link_folder.mkdir()
    os.mkfifo(fifo_folder / LOCK_NAME)
    (link_folder / LOCK_NAME).symlink_to(tmp_path / "created-elsewhere")
    for folder in (fifo_folder, link_folder):
        mark_in_use(folder)  # returned at once: before, the FIFO hung here
        assert in_use(folder)  # not s5cli's lock: never cleaned on its say-so
    assert not (tmp_path / "created-elsewhere").exists()
    release_all()


def test_a_latest_file_naming_the_run_itself_is_one_line(tmp_path: Path) -> None:
    from s5cli.train.checkpoint_paths import checkpoint_dir

    for text in (".", "./", "././"):
        (tmp_path / "latest").write_text(text + "\n")
        with pytest.raises(UserError, match="does not name a checkpoint of this run"):
            checkpoint_dir(tmp_path)


def test_nested_yaml_aliases_are_refused_quickly(tmp_path: Path) -> None:
    from s5cli.recipe import load_recipe_text
    from s5cli.recipe_yaml import MAX_YAML_ALIASES

    lines = ["x0: &x0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"x{i}: &x{i} [{', '.join([f'*x{i - 1}'] * 10)}]" for i in range(1, 9)]  # 10^9 values
    lines.append("optim: {betas: *x8}")
    with pytest.raises(UserError, match=f"more than {MAX_YAML_ALIASES} aliases"):
        load_recipe_text("\n".join(lines), "bomb.yaml", [])


def test_a_huge_value_in_an_error_message_is_shown_bounded() -> None:
    from s5cli.recipe_validation import show_value

    nested = [[list(range(1000))] * 1000] * 1000
    assert len(show_value(nested)) <= 200
    assert show_value(0.001) == "0.001" and show_value("abc") == "'abc'" and show_value([1, 2]) == "[1, 2]"


@pytest.mark.parametrize(("change", "phrase"), [
    ({"recipe": "not json"}, "recipe is not the JSON mapping s5cli writes"),
    ({"recipe": "[1, 2]"}, "recipe is not the JSON mapping s5cli writes"),
    ({"num_outputs": "abc"}, "num_outputs ('abc') is not a count"),
    ({"num_outputs": "-5"}, "num_outputs ('-5') is not a count"),
    ({"num_outputs": str(10**9)}, "is not a count"),
    ({"model_name": "evil"}, "the model its metadata describes (evil) cannot be built"),
])
def test_damaged_checkpoint_metadata_is_one_line(tmp_path: Path, change: dict, phrase: str) -> None:
    import torch
    from safetensors.torch import save_file

    from s5cli.train.loading import load_trained_model

    recipe = {"model": {"name": "s4", "d_input": 8, "d_model": 8, "n_blocks": 1, "d_state": 4}}
    meta = {"format": "s5cli-checkpoint/1", "model_name": "s4", "num_outputs": "3", "recipe": json.dumps(recipe),
            **change}
    folder = tmp_path / "ckpt"
    folder.mkdir()
    save_file({"x": torch.zeros(1)}, str(folder / "model.safetensors"), metadata=meta)
    with pytest.raises(UserError) as caught:
        load_trained_model(folder)
    assert phrase in str(caught.value) and "\n" not in str(caught.value)


def _tiny_s4_checkpoint(folder: Path, **model_changes) -> None:
    """A real checkpoint of a tiny S4 model whose metadata then claims `model_changes`."""
    from safetensors.torch import save_file

    from s5cli.models.registry import build_model

    settings = {"d_input": 8, "d_model": 8, "n_blocks": 1, "d_state": 4}
    weights = {k: v.contiguous() for k, v in build_model("s4", settings, 3).state_dict().items()}
    recipe = {"model": {"name": "s4", **settings, **model_changes}}
    meta = {"format": "s5cli-checkpoint/1", "model_name": "s4", "num_outputs": "3", "recipe": json.dumps(recipe)}
    folder.mkdir()
    save_file(weights, str(folder / "model.safetensors"), metadata=meta)


@pytest.mark.parametrize(("change", "phrase"), [
    # Without the count check n_blocks=10**9 built blocks for hours before the weights were compared.
    ({"n_blocks": 10**9}, "its metadata's model.n_blocks=1000000000 does not match its weights (16 tensors)"),
    ({"d_model": 16}, "does not fit this model"),
])
def test_metadata_describing_another_model_than_its_weights_is_one_line(
    tmp_path: Path, change: dict, phrase: str
) -> None:
    from s5cli.train.loading import load_trained_model

    _tiny_s4_checkpoint(tmp_path / "ckpt", **change)
    with pytest.raises(UserError) as caught:
        load_trained_model(tmp_path / "ckpt")
    assert phrase in str(caught.value) and "\n" not in str(caught.value)


def test_a_checkpoint_whose_metadata_matches_its_weights_loads(tmp_path: Path) -> None:
    from s5cli.train.loading import load_trained_model

    _tiny_s4_checkpoint(tmp_path / "ckpt")
    model, recipe, _ = load_trained_model(tmp_path / "ckpt")
    assert recipe["model"]["d_model"] == 8 and not model.training
    assert all(p.device.type == "cpu" for p in model.parameters())


@pytest.mark.parametrize("name", ["a\x1b[31mRED\x1b[0m.yaml", "b\nwrote: /etc/passwd.yaml", "a//b.yaml", "a/./b.yaml"])
def test_hub_file_names_with_control_characters_or_folded_parts_are_refused(name: str) -> None:
    from s5cli.hub.paths import check_repo_path

    with pytest.raises(UserError) as caught:
        check_repo_path(name, uploading=True)
    assert "\n" not in str(caught.value) and "\x1b" not in str(caught.value)


def test_backbone_weights_whose_position_embedding_is_no_square_grid_are_one_line() -> None:
    import torch

    from s5cli.models.backbone import build_backbone
    from s5cli.models.backbone_weights import load_timm_state_dict

    model = build_backbone("vit_tiny_test", None, 32)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    width = state["pos_embed"].shape[-1]
    for shape in ((1, 7, width), (1, 1, width)):
        state["pos_embed"] = torch.zeros(shape)
        with pytest.raises(UserError, match="is not \\(1, 1 \\+ a square grid of patches, width\\)"):
            load_timm_state_dict(model, dict(state), "bad.safetensors")


def test_a_trainer_state_with_values_of_the_wrong_type_is_a_damaged_checkpoint(tmp_path: Path) -> None:
    from s5cli.train.checkpoint import TrainerState
    from s5cli.train.resume_point import _check_trainer_fields

    _check_trainer_fields(TrainerState(step=3, best_metric=0.5, best_step=3))
    for bad in ({"step": "abc"}, {"epoch": 1.5}, {"best_metric": "x"}, {"step": True}):
        with pytest.raises(ValueError, match=r"trainer\.\w+ is "):
            _check_trainer_fields(TrainerState(**bad))


@pytest.mark.parametrize(("tensors", "header", "reason"), [
    (None, {"tokens": 5}, "malformed header entry"),
    ({"tokens": ("I64", (2, 3, 4))}, None, "is not a float (frames, tokens, width) tensor"),
    ({"tokens": ("F32", (3, 4))}, None, "is not a float (frames, tokens, width) tensor"),
    ({"tokens": ("F32", (0, 3, 4))}, None, "is not a float (frames, tokens, width) tensor"),
    # 8 bytes an element written: twice what F32 holds, four times F16's; a load failed mid-run on it.
    ({"tokens": ("F16", (4, 3, 4))}, None, "holds 384 bytes, not the [4, 3, 4] F16 its header states"),
])
def test_a_cache_entry_that_is_no_token_tensor_is_damaged_not_a_crash(tmp_path: Path, tensors, header, reason) -> None:
    import math
    import struct

    from s5cli.data.cache_entry_header import verify_safetensors

    if header is None:
        header, offset = {}, 0
        for name, (dtype, shape) in tensors.items():
            size = 8 * max(1, math.prod(shape))
            header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
            offset += size
        data = b"\0" * offset
    else:
        data = b""
    text = json.dumps(header).encode()
    path = tmp_path / "v.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    assert verify_safetensors(path) == (reason if reason.startswith("malformed") else f"'tokens' {reason}")


def test_non_finite_weights_are_refused_not_evaluated(tmp_path: Path) -> None:
    import torch

    from s5cli.train.checkpoint_weights import load_into

    model = torch.nn.Linear(3, 2)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["weight"][0, 0] = float("nan")
    with pytest.raises(UserError, match=r"holds non-finite \(NaN/inf\) weights in 1 tensors \(e.g. weight\)"):
        load_into(model, state, "ckpt")
    assert torch.isfinite(model.weight).all()  # nothing was loaded


def test_stored_class_names_are_printable_and_a_regression_task_has_one_output() -> None:
    from s5cli.train.checkpoint_metadata import stored_task

    task = {"kind": "classification", "num_outputs": 2, "class_names": ["\x1b[2Jcleared", "ok"]}
    assert stored_task({"task": json.dumps(task)})["class_names"] == ["\\x1b[2Jcleared", "ok"]
    assert stored_task({"task": json.dumps({**task, "class_names": [1, 2]})}) is None
    assert stored_task({"task": json.dumps({"kind": "regression", "num_outputs": 9})}) is None
    assert stored_task({"task": json.dumps({"kind": "regression", "num_outputs": 1})})["num_outputs"] == 1
