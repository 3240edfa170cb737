"""DistContext's per-step collective, in a real two-process gloo group."""

from __future__ import annotations

import math
import signal

import pytest
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
        # A non-finite loss on one rank: every rank's mean is non-finite, so all stop at the same step.
        results[f"nan{rank}"] = ctx.after_step(float("nan") if rank == 1 else 1.0, 0)
        # LSMCL's contrastive top-1 rides in the same collective: the ranks' mean, the signal unchanged.
        results[f"top1{rank}"] = ctx.after_step(1.0, signal.SIGINT if rank else 0, 0.5 if rank else 0.25)
    finally:
        dist.destroy_process_group()


def _spawn_two(body, tmp_path) -> dict:
    """Run `body(rank, 2, store_file, results)` in two processes; their `results` entries, copied out.
    The manager process ends here: a leaked one made later tests' child-process checks fail."""
    import torch.multiprocessing as mp

    with mp.Manager() as manager:
        shared = manager.dict()
        mp.spawn(body, args=(2, str(tmp_path / "store"), shared), nprocs=2)
        return dict(shared)


def test_after_step_averages_the_loss_and_agrees_on_the_largest_stop_signal(tmp_path) -> None:
    results = _spawn_two(_steps_in_process, tmp_path)
    # losses: rank 0 gives step + 1, rank 1 twice that; the mean is 1.5 (step + 1)
    expected = [(1.5 * (step + 1), agreed, None) for step, (_, agreed) in enumerate(ROUNDS)]
    assert results[0] == expected and results[1] == expected
    for rank in (0, 1):
        loss, stop, top1 = results[f"nan{rank}"]
        assert math.isnan(loss) and stop == 0 and top1 is None
        assert results[f"top1{rank}"] == (1.0, signal.SIGINT, 0.375)


def test_after_step_is_the_identity_in_one_process() -> None:
    assert DistContext().after_step(0.25, signal.SIGTERM) == (0.25, signal.SIGTERM, None)
    assert DistContext().after_step(0.25, 0, 0.5) == (0.25, 0, 0.5)


class _FakeCuda:
    """`torch.cuda` as seen on a machine with `gpus` GPUs (4 unless told), recording which device is made current."""

    def __init__(self, monkeypatch, gpus: int = 4) -> None:
        self.current: list[torch.device] = []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
        monkeypatch.setattr(torch.cuda, "set_device", self.current.append)


def test_a_cuda_device_with_an_index_becomes_the_current_device(monkeypatch) -> None:
    from s5cli.train.distributed import pick_device

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    cuda = _FakeCuda(monkeypatch)
    assert pick_device("cuda:2") == torch.device("cuda", 2)
    assert cuda.current == [torch.device("cuda", 2)]  # else pin-memory and memory stats use GPU 0
    assert pick_device("cuda") == torch.device("cuda") and pick_device(None) == torch.device("cuda")
    assert pick_device("cpu") == torch.device("cpu")
    assert cuda.current == [torch.device("cuda", 2)]  # no index, or the CPU: the current device stays


def test_under_torchrun_each_process_gets_its_own_gpu(monkeypatch) -> None:
    """`torchrun ... -m s5cli extract` picks its device with pick_device alone (no process group)."""
    from s5cli.train.distributed import pick_device

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    cuda = _FakeCuda(monkeypatch)
    for requested in (None, "cuda", "cuda:0"):
        assert pick_device(requested) == torch.device("cuda", 1)
    assert cuda.current == [torch.device("cuda", 1)] * 3
    assert pick_device("cpu") == torch.device("cpu")


def test_more_torchrun_processes_than_gpus_is_a_one_line_error_naming_the_fix(monkeypatch) -> None:
    # Seen on a one-GPU machine: rank 1 of `torchrun --nproc-per-node 2` failed deep inside CUDA.
    from s5cli.errors import UserError
    from s5cli.train.distributed import pick_device

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    cuda = _FakeCuda(monkeypatch, gpus=1)
    for requested in (None, "cuda"):
        with pytest.raises(UserError, match=r"local rank 1 but this machine has 1 GPU\(s\).*--nproc-per-node 1.*--device cpu"):
            pick_device(requested)
    assert cuda.current == [] and pick_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert pick_device(None) == torch.device("cuda", 0)


def test_extraction_before_training_runs_on_the_run_device(monkeypatch) -> None:
    import s5cli.data.datasets as datasets
    import s5cli.data.extract as extract
    from s5cli.train.data import prepare_splits

    seen = {}
    monkeypatch.setattr(datasets, "list_records", lambda data, split, show_progress=True: [split])
    monkeypatch.setattr(extract, "ensure_cached", lambda data, **kwargs: seen.update(kwargs))
    gpu = torch.device("cuda", 1)  # a device object only: nothing runs on it
    assert prepare_splits({}, ("train",), DistContext(device=gpu)) == {"train": ["train"]}
    assert seen["device"] == gpu  # it defaulted to the CPU: hours of ViT-L for LVU on a GPU machine


def test_collectives_wait_an_hour_or_what_the_environment_says(monkeypatch) -> None:
    """NCCL's own default (10 minutes) aborted jobs whose ranks waited longer at a barrier (extraction shares,
    rank 0's validation)."""
    from datetime import timedelta

    import pytest

    from s5cli.errors import UserError
    from s5cli.train.distributed import TIMEOUT_ENV, collective_timeout

    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    assert collective_timeout() == timedelta(minutes=60)
    monkeypatch.setenv(TIMEOUT_ENV, "150")
    assert collective_timeout() == timedelta(minutes=150)
    for bad in ("ten", "0", "-5", "inf", "nan"):
        monkeypatch.setenv(TIMEOUT_ENV, bad)
        with pytest.raises(UserError, match=f"{TIMEOUT_ENV}='{bad}' is not a number of minutes"):
            collective_timeout()


def _prepare_in_process(rank: int, world: int, store_file: str, results: dict) -> None:
    from datetime import timedelta

    import torch.distributed as dist

    import s5cli.data.datasets as datasets
    import s5cli.data.extract as extract
    from s5cli.errors import RunFailure
    from s5cli.train.data import prepare_splits

    def extract_share(data, **kwargs) -> None:
        if rank == 1:
            raise RunFailure("every video of this share failed to decode")

    datasets.list_records = lambda data, split, show_progress=True: []
    extract.ensure_cached = extract_share
    # A short timeout: without the agreement rank 0 would wait at the barrier for rank 1 until it expired.
    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=30))
    try:
        prepare_splits({}, ("train",), DistContext(rank=rank, world_size=world, local_rank=rank))
        results[rank] = "went on"
    except RunFailure as error:
        results[rank] = str(error)
    finally:
        dist.destroy_process_group()


def test_an_extraction_failure_on_one_rank_stops_every_rank(tmp_path) -> None:
    results = _spawn_two(_prepare_in_process, tmp_path)
    assert results[1] == "every video of this share failed to decode"
    assert results[0] == "rank 1: every video of this share failed to decode"


def test_auto_is_the_best_device_for_every_command_and_a_typo_names_it() -> None:
    from s5cli.errors import UserError
    from s5cli.train.distributed import check_device

    best = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    assert check_device("auto").type == check_device("AUTO").type == check_device(None).type == best.type
    with pytest.raises(UserError, match="--device 'gpu' is not a device: use cpu, cuda, cuda:N or auto"):
        check_device("gpu")
