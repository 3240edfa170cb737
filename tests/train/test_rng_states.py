"""Generator states: this process's own GPU saved, restored onto any rank, older every-GPU states still read."""

from __future__ import annotations

import torch

from s5cli.train.rng_states import restore_rng, rng_state


class FakeGpus:
    """`torch.cuda` with four GPUs whose generator states are recorded, the current one being `current`;
    `initialized=False`: this process has not touched CUDA yet, and reading a GPU's state would make a context."""

    def __init__(self, monkeypatch, current: int, initialized: bool = True) -> None:
        self.current, self.restored, self.initialized, self.states_read = current, [], initialized, 0
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: self.initialized)
        monkeypatch.setattr(torch.cuda, "current_device", self._current_device)
        monkeypatch.setattr(torch.cuda, "get_rng_state", self._get_rng_state)
        monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": self.restored.append(state))

    def _initialise(self) -> None:
        self.initialized = True

    def _current_device(self) -> int:
        self._initialise()
        return self.current

    def _get_rng_state(self, device: str = "cuda") -> torch.Tensor:
        self._initialise()
        self.states_read += 1
        return torch.full((4,), self.current, dtype=torch.uint8)


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


def test_a_process_that_never_used_cuda_neither_saves_nor_initialises_it(monkeypatch) -> None:
    """`--device cpu` on a GPU machine: no CUDA generator in the checkpoint and no CUDA context made, on
    save or on resume (also of an older every-GPU checkpoint)."""
    gpus = FakeGpus(monkeypatch, current=0, initialized=False)
    tensors, _ = rng_state()
    assert sorted(tensors) == ["rng.torch"] and gpus.states_read == 0
    restore_rng({**tensors, "rng.cuda.0": torch.full((4,), 7, dtype=torch.uint8)}, {})
    assert not gpus.initialized and [s.tolist() for s in gpus.restored] == [[7] * 4]
