"""Generator states: this process's own GPU saved, restored onto any rank, older every-GPU states still read."""

from __future__ import annotations

import torch

from s5cli.train.rng_states import restore_rng, rng_state


class FakeGpus:
    """`torch.cuda` with four GPUs whose generator states are recorded, the current one being `current`."""

    def __init__(self, monkeypatch, current: int) -> None:
        self.current, self.restored = current, []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: self.current)
        monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": torch.full((4,), self.current,
                                                                                          dtype=torch.uint8))
        monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": self.restored.append(state))


def test_the_cuda_generator_saved_is_this_process_gpu_and_restores_onto_any_rank(monkeypatch) -> None:
    gpus = FakeGpus(monkeypatch, current=0)
    tensors, _ = rng_state()
    assert sorted(tensors) == ["rng.cuda", "rng.torch"] and tensors["rng.cuda"].tolist() == [0] * 4
    gpus.current = 3  # rank 3 of a torchrun job resumes rank 0's checkpoint onto its own GPU
    restore_rng(tensors, {})
    assert [s.tolist() for s in gpus.restored] == [[0] * 4]


def test_older_checkpoints_with_every_gpus_state_still_restore(monkeypatch) -> None:
    gpus = FakeGpus(monkeypatch, current=1)
    old = {f"rng.cuda.{i}": torch.full((4,), 10 + i, dtype=torch.uint8) for i in range(2)}
    restore_rng(old, {})
    gpus.current = 5  # more GPUs than the checkpoint saw: this used to be an IndexError
    restore_rng(old, {})
    assert [s.tolist() for s in gpus.restored] == [[11] * 4, [10] * 4]
