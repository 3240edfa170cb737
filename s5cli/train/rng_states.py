"""Generator states for an exact resume: each torchrun rank's torch/CUDA generators, Python's and NumPy's.

A checkpoint keeps them (trainer_state.safetensors and .json, written by `s5cli.train.checkpoint`) so that a
resumed run draws the same dropout, Gumbel and LSMCL noise as an uninterrupted one. Each rank draws its own
noise (`seeding.rank_seed`) and takes its own state back; checkpoints from fewer processes, or from before
per-rank states, still restore.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from s5cli.seeding import rank_seed

CUDA_RNG = "rng.cuda"  # rank 0's CUDA generator key; older checkpoints saved every GPU's as rng.cuda.N (`restore_rng`)


def torch_rng_state() -> dict[str, torch.Tensor]:
    """This process's torch generators: the CPU's and, with CUDA, its own GPU's (the current device,
    which `pick_device` makes the run's device).

    Only once this process has initialised CUDA: `torch.cuda.get_rng_state` initialises it, so a
    `--device cpu` run on a GPU machine made a CUDA context (hundreds of MiB of GPU memory, and an error
    where another job holds the GPU in exclusive mode) just to save a generator it never drew from."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_initialized():
        tensors["cuda"] = torch.cuda.get_rng_state()
    return tensors


def rank_rng_key(rank: int, generator: str) -> str:
    """trainer_state.safetensors key of rank `rank`'s torch or CUDA generator state; rank 0's are the
    single-process keys (`rng.torch`, `rng.cuda`), so one-process checkpoints read as before."""
    return f"rng.{generator}" if rank == 0 else f"rng.rank{rank}.{generator}"


def rng_state(other_ranks: Sequence[Mapping[str, torch.Tensor]] = ()) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """RNG states of torch (tensors) and of Python / NumPy (JSON).

    `other_ranks`: under torchrun, ranks 1.. `torch_rng_state()`, gathered by the trainer: each rank draws
    its own dropout, Gumbel and LSMCL noise (seeded with `seeding.rank_seed`) and on resume takes its own
    state back (`restore_rng`); keys from `rank_rng_key`. Python's and NumPy's
    generators are rank 0's: every rank seeds them alike and the models do not draw from them.
    Until 2026-11-30 the states of all visible GPUs were saved (`rng.cuda.N`) and restored per index, which
    gave rank k a never-used state and failed on fewer GPUs; such checkpoints are still read."""
    tensors = {}
    for rank, states in enumerate([torch_rng_state(), *other_ranks]):
        tensors.update({rank_rng_key(rank, name): state for name, state in states.items()})
    np_state = np.random.get_state()
    py_state = random.getstate()
    return tensors, {
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }


def saved_processes(tensors: Mapping[str, torch.Tensor]) -> int:
    """How many processes wrote a checkpoint, from its per-rank generator states (1 for checkpoints from
    before those were saved, 2026-11-30, whatever wrote them)."""
    ranks = [key for key in tensors if key.startswith("rng.rank") and key.endswith(".torch")]
    return 1 + len(ranks)


def restore_rng(tensors: Mapping[str, torch.Tensor], state: Mapping[str, Any], rank: int = 0,
                fresh_seed: int = 0) -> None:
    """Undo `rng_state` in rank `rank`. A rank above 0 that the checkpoint has no state for (one written by
    fewer processes, or before per-rank states) seeds its torch and CUDA generators with
    `rank_seed(fresh_seed, rank)` (the trainer passes the run's seed plus the step resumed at).

    Why not rank 0's state, as before: every such rank then drew the same dropout, Gumbel noise and
    LSMCL masks as rank 0. Python's and NumPy's states are rank 0's on every rank, as `rng_state` saves them."""
    if rank and rank_rng_key(rank, "torch") not in tensors:
        torch.manual_seed(rank_seed(fresh_seed, rank))  # the CPU's and every GPU's (lazily: no CUDA context)
    else:
        _restore_torch(tensors, rank)
    _restore_python_numpy(state)


def _restore_torch(tensors: Mapping[str, torch.Tensor], rank: int) -> None:
    """Set the torch and CUDA generators to rank `rank`'s saved states (or an older checkpoint's CUDA ones)."""
    cpu = tensors.get(rank_rng_key(rank, "torch"))
    if cpu is not None:
        torch.set_rng_state(cpu)
    if torch.cuda.is_available():
        # `set_rng_state` waits for CUDA's initialisation (a `--device cpu` resume never makes a context);
        # asking for the current device would initialise it, so old checkpoints read it only when it exists.
        cuda = tensors.get(rank_rng_key(rank, "cuda"))
        if cuda is None:  # older checkpoints: every visible GPU's state as rng.cuda.N (see rng_state)
            current = torch.cuda.current_device() if torch.cuda.is_initialized() else 0
            cuda = tensors.get(f"{CUDA_RNG}.{current}", tensors.get(f"{CUDA_RNG}.0"))
        if cuda is not None:
            torch.cuda.set_rng_state(cuda)


def _restore_python_numpy(state: Mapping[str, Any]) -> None:
    """Set Python's and NumPy's generators to the saved (rank 0's) states."""
    if "python" in state:
        version, inner, gauss = state["python"]
        random.setstate((version, tuple(inner), gauss))
    if "numpy" in state:
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
