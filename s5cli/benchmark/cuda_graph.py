"""Capture one benchmark step as a CUDA graph, so that replaying it costs one launch instead of hundreds.

Why: at batch 1 on a fast GPU the models' steps are bound by launching operators, not by arithmetic (on
an H200 S5's paper-size inference step, ~140 operators, took 4.3 ms eagerly and 1.5 ms replayed; its
training step 69 and 18 ms: benchmarks/README.md, v20). A captured graph replays the same kernels on the same memory with no Python,
no dispatcher and no per-kernel launch cost: what a deployment with fixed input shapes does, and what
shows the arithmetic each model really needs. Every model of a run is captured alike, the transformer too.

The step must be graph-safe: no host syncs (`.item()`, data-dependent shapes), no CPU-side state that
changes between steps, random numbers from the default CUDA generator (its seed and offset are replayed
correctly), an optimiser built with `capturable=True`. A step that is not fails to capture with a
RuntimeError; the caller then measures it eagerly and says so.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# Eager steps run on a side stream before capture: lazily created state (cuBLAS/cuFFT plans and workspaces,
# kernel caches, the optimiser's state, the allocator's blocks) must exist before the graph records addresses.
CAPTURE_WARMUP_STEPS = 3


def capture_step(step: Callable[[], None], device: torch.device, warmup_step: Callable[[], None] | None = None,
                 warmup: int = CAPTURE_WARMUP_STEPS) -> torch.cuda.CUDAGraph:
    """Run `warmup_step` (default: `step`) `warmup` times on a side stream, then record one call of `step`
    as a CUDA graph.

    Replaying the returned graph (`graph.replay()`) repeats the recorded kernels on the tensors the step
    used: a training step's parameters, gradients and optimiser state are updated in place each time.
    """
    if device.type != "cuda":
        raise ValueError(f"CUDA graphs need a CUDA device, not {device}")
    current = torch.cuda.current_stream(device)
    side = torch.cuda.Stream(device)
    side.wait_stream(current)
    with torch.cuda.stream(side):
        for _ in range(warmup):
            (warmup_step or step)()
    current.wait_stream(side)
    torch.cuda.synchronize(device)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.device(device), torch.cuda.graph(graph):
        step()
    torch.cuda.synchronize(device)
    return graph
