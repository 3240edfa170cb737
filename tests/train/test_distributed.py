"""DistContext's per-step collective, in a real two-process gloo group."""

from __future__ import annotations

import signal

import torch

from s5cli.train.distributed import DistContext

# (rank 0's signal, rank 1's signal) per step, and the signal both ranks must agree on.
ROUNDS = [((0, 0), 0), ((signal.SIGINT, 0), signal.SIGINT), ((signal.SIGINT, signal.SIGTERM), signal.SIGTERM),
          ((0, signal.SIGTERM), signal.SIGTERM)]


def _steps_in_process(rank: int, world: int, store_file: str, results: dict) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=world)
    try:
        ctx = DistContext(rank=rank, world_size=world, local_rank=rank, device=torch.device("cpu"))
        results[rank] = [ctx.after_step(float(rank + 1) * (step + 1), signals[rank])
                         for step, (signals, _) in enumerate(ROUNDS)]
    finally:
        dist.destroy_process_group()


def test_after_step_averages_the_loss_and_agrees_on_the_largest_stop_signal(tmp_path) -> None:
    import torch.multiprocessing as mp

    results = mp.Manager().dict()
    mp.spawn(_steps_in_process, args=(2, str(tmp_path / "store"), results), nprocs=2)
    # losses: rank 0 gives step + 1, rank 1 twice that; the mean is 1.5 (step + 1)
    expected = [(1.5 * (step + 1), agreed) for step, (_, agreed) in enumerate(ROUNDS)]
    assert results[0] == expected and results[1] == expected


def test_after_step_is_the_identity_in_one_process() -> None:
    assert DistContext().after_step(0.25, signal.SIGTERM) == (0.25, signal.SIGTERM)
    assert DistContext().after_step(0.25, 0) == (0.25, 0)
