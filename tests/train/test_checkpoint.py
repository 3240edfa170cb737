"""Checkpoints: safetensors only, exact round trip of weights, optimiser and RNG, clear mismatch errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from s5cli.errors import UserError
from s5cli.models.registry import build_model
from s5cli.train import checkpoint as ckpt
from s5cli.train.checkpoint_metadata import read_metadata
from s5cli.train.checkpoint_paths import checkpoint_dir, latest_checkpoint, run_best_checkpoint, set_latest
from s5cli.train.checkpoint_pruning import prune_checkpoints
from s5cli.train.checkpoint_weights import load_into, load_state
from s5cli.train.resume_point import apply_resume_point, read_resume_point
from s5cli.train.rng_states import restore_rng, saved_processes
from tests.train.test_rng_states import FakeGpus

SMALL = dict(d_input=8, d_model=16, n_blocks=2, d_state=8, guide_channels=4, dropout=0.0)


def _trained_pair():
    torch.manual_seed(0)
    model = build_model("s5", SMALL, 3)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(torch.randn(2, 3, 5, 8)).sum().backward()
    opt.step()
    model.momentum_update()
    return model, opt


def test_round_trip_restores_weights_optimizer_and_rng(tmp_path) -> None:
    model, opt = _trained_pair()
    state = ckpt.TrainerState(step=7, epoch=1, batch_in_epoch=2, best_metric=0.5, best_step=5)
    path = ckpt.save_checkpoint(tmp_path / "c", model, {"model_name": "s5", "num_outputs": "3"}, opt,
                                {"kind": "constant", "state": {}}, state, {"top1": 0.5})
    expected_next = torch.rand(3)  # RNG draw right after saving
    assert sorted(p.name for p in path.iterdir()) == [
        "metrics.json", "model.safetensors", "trainer_state.json", "trainer_state.safetensors"
    ]
    torch.manual_seed(123)
    clone = build_model("s5", SMALL, 3)
    opt2 = torch.optim.AdamW([p for p in clone.parameters() if p.requires_grad], lr=1e-2)
    load_into(clone, load_state(path), "test")
    restored, schedule = apply_resume_point(read_resume_point(path), opt2)
    assert restored == state and schedule["kind"] == "constant"
    for (name, a), b in zip(model.state_dict().items(), clone.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    state_a, state_b = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert sorted(state_a) == sorted(state_b)
    for pid, entries in state_a.items():
        for key, value in entries.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(state_b[pid][key])), (pid, key)
    assert torch.equal(torch.rand(3), expected_next)
    meta = read_metadata(path)
    assert meta["format"] == ckpt.FORMAT and meta["model_name"] == "s5"


def test_each_torchrun_rank_takes_back_its_own_generators(monkeypatch, tmp_path) -> None:
    gpus = FakeGpus(monkeypatch, current=0)
    model, opt = _trained_pair()
    rank1 = {"torch": torch.Generator().manual_seed(11).get_state(), "cuda": torch.full((4,), 21, dtype=torch.uint8)}
    path = ckpt.save_checkpoint(tmp_path / "c", model, {}, opt, {}, ckpt.TrainerState(step=3),
                                other_ranks_rng=[rank1])
    point = read_resume_point(path)
    assert saved_processes(point.tensors) == 2  # what a resume on another process count warns about
    one = ckpt.save_checkpoint(tmp_path / "one", model, {}, opt, {}, ckpt.TrainerState(step=3))
    assert saved_processes(read_resume_point(one).tensors) == 1
    rank0_cpu = point.tensors["rng.torch"]
    restore_rng(point.tensors, point.payload["rng"], rank=1)
    assert torch.equal(torch.get_rng_state(), rank1["torch"]) and gpus.restored[-1].tolist() == [21] * 4
    restore_rng(point.tensors, point.payload["rng"], rank=0)
    assert torch.equal(torch.get_rng_state(), rank0_cpu) and gpus.restored[-1].tolist() == [0] * 4
    # A rank the checkpoint has no state for (written by fewer processes) draws from a seed of its own, not
    # from rank 0's state (tests/train/test_resume_changes.py).
    restored = len(gpus.restored)
    restore_rng(point.tensors, point.payload["rng"], rank=2)
    assert not torch.equal(torch.get_rng_state(), rank0_cpu) and len(gpus.restored) == restored


def test_rank_seeds_keep_rank_0_and_never_meet_another_runs_seed() -> None:
    from s5cli.seeding import MAX_SEED, rank_seed

    assert rank_seed(7, 0) == 7
    seeds = {rank_seed(seed, rank) for seed in (0, 1, MAX_SEED) for rank in range(4)}
    assert len(seeds) == 12 and all(s > MAX_SEED for s in seeds - {0, 1, MAX_SEED})


def test_the_float16_grad_scaler_state_is_saved_and_read_back(tmp_path) -> None:
    model, opt = _trained_pair()
    scaler = {"scale": 2048.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
              "_growth_tracker": 17}
    path = ckpt.save_checkpoint(tmp_path / "c", model, {}, opt, {}, ckpt.TrainerState(step=3),
                                scaler_state=scaler)
    assert read_resume_point(path).payload["grad_scaler"] == scaler
    # No scaler (CPU, bfloat16, train.amp false): GradScaler.state_dict() is empty and nothing is written.
    path = ckpt.save_checkpoint(tmp_path / "d", model, {}, opt, {}, ckpt.TrainerState(step=3),
                                scaler_state=torch.amp.GradScaler("cuda", enabled=False).state_dict())
    assert "grad_scaler" not in read_resume_point(path).payload


def test_checkpoints_with_the_guides_retired_output_projection_still_load() -> None:
    """Earlier builds saved an unused copy of the guide's S4 output projection; those keys are dropped on load."""
    model, _ = _trained_pair()
    assert not any("guide.s4.out_linear" in key for key in model.state_dict())
    old = dict(model.state_dict())
    old["guide.s4.out_linear.weight"] = torch.zeros(16, 16)
    old["guide.s4.out_linear.bias"] = torch.zeros(16)
    clone = build_model("s5", SMALL, 3)
    load_into(clone, old, "old checkpoint")  # strict: any other unexpected key would be refused
    for name, value in model.state_dict().items():
        assert torch.equal(clone.state_dict()[name], value), name


def test_files_are_safetensors_not_pickle(tmp_path) -> None:
    model, opt = _trained_pair()
    path = ckpt.save_checkpoint(tmp_path / "c", model, {}, opt, {}, ckpt.TrainerState())
    for name in ("model.safetensors", "trainer_state.safetensors"):
        with safe_open(str(path / name), framework="pt") as handle:
            assert list(handle.keys())
    json.loads((path / "trainer_state.json").read_text())


def test_other_architecture_names_mismatched_keys(tmp_path) -> None:
    model, _ = _trained_pair()
    path = ckpt.save_checkpoint(tmp_path / "c", model, {"model_name": "s5"})
    vit = build_model("vit", dict(d_input=8, d_model=16, depth=1, heads=2), 3)
    with pytest.raises(UserError, match=r"does not fit this model: missing .* keys"):
        load_into(vit, load_state(path), str(path))
    wider = build_model("s5", {**SMALL, "d_model": 32}, 3)
    with pytest.raises(UserError, match="shape mismatch"):
        load_into(wider, load_state(path), str(path))


def test_pickle_and_missing_checkpoints_are_refused(tmp_path) -> None:
    (tmp_path / "model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(UserError, match="pickle"):
        checkpoint_dir(tmp_path / "model.bin")
    with pytest.raises(UserError, match="does not exist"):
        checkpoint_dir(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"holds no model\.safetensors"):
        checkpoint_dir(tmp_path / "empty")
    (tmp_path / "empty" / "recipe.yaml").write_text("model: {}\n")  # a file in no checkpoint: its folder is none
    with pytest.raises(UserError, match=r"recipe\.yaml is a file, not a checkpoint: pass a checkpoint folder \(with "
                                        r"model\.safetensors\) or a run folder$"):
        checkpoint_dir(tmp_path / "empty" / "recipe.yaml")
    (tmp_path / "empty" / "latest").write_text("checkpoints/step-1\n")  # now a run's recipe given for the run
    with pytest.raises(UserError, match=r"recipe\.yaml is a file: pass the checkpoint or run folder that holds it"):
        checkpoint_dir(tmp_path / "empty" / "recipe.yaml")


@pytest.mark.parametrize("given", [".", "", "/"])
def test_a_nameless_folder_that_is_not_a_checkpoint_is_one_line(tmp_path, monkeypatch, given: str) -> None:
    """`s5 eval -c .` from a project folder (or `-c "$EMPTY"`): `.`, `/` and "" have no name to look for a
    set-aside copy beside, which ended in a ValueError traceback."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"holds no model\.safetensors"):
        checkpoint_dir(given)


def test_failed_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch) -> None:
    model, _ = _trained_pair()
    path = ckpt.save_checkpoint(tmp_path / "best", model, {"model_name": "s5"})
    before = (path / "model.safetensors").read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_tensors", boom)
    with pytest.raises(OSError):
        ckpt.save_checkpoint(tmp_path / "best", model, {"model_name": "s5"})
    assert (path / "model.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["best"]


def test_kill_between_the_two_renames_of_a_replace_is_recovered(tmp_path) -> None:
    model, _ = _trained_pair()
    path = ckpt.save_checkpoint(tmp_path / "best", model, {"model_name": "s5"}, metrics={"top1": 0.5})
    before = (path / "model.safetensors").read_bytes()
    path.rename(tmp_path / ".best.old")  # what a kill -9 after the first rename leaves
    ckpt.recover_interrupted_swap(tmp_path / "best")
    assert (tmp_path / "best" / "model.safetensors").read_bytes() == before
    assert json.loads((tmp_path / "best" / "metrics.json").read_text()) == {"top1": 0.5}
    assert not (tmp_path / ".best.old").exists()


def test_latest_pointer_and_pruning(tmp_path) -> None:
    model, _ = _trained_pair()
    for step in (1, 2, 3):
        path = ckpt.save_checkpoint(tmp_path / "checkpoints" / f"step-{step:07d}", model, {})
        set_latest(tmp_path, path)
    prune_checkpoints(tmp_path, keep_last=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-0000002", "step-0000003"]
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step-0000003"
    assert checkpoint_dir(tmp_path) == tmp_path / "checkpoints" / "step-0000003"


def test_pruning_keeps_the_checkpoint_just_saved_below_a_newer_damaged_one(tmp_path) -> None:
    """After resuming past an unreadable step 8 from step 4, the step-6 checkpoint just saved must stay:
    keeping the highest steps deleted it and kept the damaged one, and the run could not resume at all."""
    model, _ = _trained_pair()
    for step in (4, 6, 8):
        ckpt.save_checkpoint(tmp_path / "checkpoints" / f"step-{step:07d}", model, {})
    prune_checkpoints(tmp_path, keep_last=1, just_saved=tmp_path / "checkpoints" / "step-0000006")
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-0000006", "step-0000008"]


def test_mistyped_run_folder_names_both_readings(tmp_path, monkeypatch) -> None:
    from s5cli.errors import UserError
    from s5cli.train.loading import resolve_checkpoint

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # never reach for the network
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(UserError) as error:
        resolve_checkpoint("runs/synthtic")
    message = str(error.value)
    assert "runs/synthtic: no such local checkpoint folder" in message and "offline" in message.lower()
    assert "\n" not in message
    # With runs/ here, runs/synthtic is a mistyped run folder: no Hub reading (an `hf://` address still is one).
    (tmp_path / "runs").mkdir()
    with pytest.raises(UserError) as error:
        resolve_checkpoint("runs/synthtic")
    assert str(error.value) == ("checkpoint runs/synthtic does not exist: pass a checkpoint folder (with "
                                "model.safetensors) or a run folder (a Hub repo of that name: hf://runs/synthtic)")
    with pytest.raises(UserError, match="offline"):
        resolve_checkpoint("hf://runs/synthtic")
    # `alice/` (a trailing slash) is no repo id: suggesting hf://alice/ sent the user to an address refused too.
    with pytest.raises(UserError) as error:
        resolve_checkpoint("alice/")
    assert "hf://" not in str(error.value) and "checkpoint alice" in str(error.value)


def test_reads_find_a_checkpoint_caught_between_the_two_renames(tmp_path) -> None:
    model, _ = _trained_pair()
    path = ckpt.save_checkpoint(tmp_path / "best", model, {"model_name": "s5"})
    expected = load_state(path)
    path.rename(tmp_path / ".best.old")  # what a kill -9 after the first rename leaves
    assert checkpoint_dir(tmp_path / "best") == tmp_path / ".best.old"
    assert read_metadata(tmp_path / "best")["model_name"] == "s5"
    assert all(torch.equal(v, expected[k]) for k, v in load_state(tmp_path / "best").items())
    assert not (tmp_path / "best").exists()  # a read repairs nothing; the next save or --resume does


def test_a_run_folder_means_its_best_checkpoint_even_mid_replace(tmp_path) -> None:
    from s5cli.train.loading import resolve_checkpoint

    model, _ = _trained_pair()
    step = ckpt.save_checkpoint(tmp_path / "checkpoints" / "step-0000001", model, {})
    set_latest(tmp_path, step)
    assert run_best_checkpoint(tmp_path) is None and resolve_checkpoint(tmp_path) == step
    best = ckpt.save_checkpoint(tmp_path / "best", model, {})
    assert run_best_checkpoint(tmp_path) == best == resolve_checkpoint(tmp_path)
    best.rename(tmp_path / ".best.old")
    assert resolve_checkpoint(tmp_path) == tmp_path / ".best.old"


def test_a_damaged_best_checkpoint_is_refused_not_replaced_by_the_latest(tmp_path) -> None:
    """eval, visualize-mask, push and train.init mean a run's best/: scoring its latest checkpoint instead,
    silently, gave numbers of another checkpoint."""
    from s5cli.train.loading import resolve_checkpoint

    model, _ = _trained_pair()
    step = ckpt.save_checkpoint(tmp_path / "checkpoints" / "step-0000001", model, {})
    set_latest(tmp_path, step)
    best = ckpt.save_checkpoint(tmp_path / "best", model, {})
    (best / ckpt.MODEL_FILE).unlink()
    message = f"{best} holds no model.safetensors (damaged?): pass a checkpoint folder instead, e.g. the latest one, {step}"
    for resolve in (run_best_checkpoint, resolve_checkpoint):
        with pytest.raises(UserError) as caught:
            resolve(tmp_path)
        assert str(caught.value) == message
    assert resolve_checkpoint(step) == step  # the way out the message gives
