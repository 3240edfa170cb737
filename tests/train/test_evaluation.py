"""Loading for evaluation and training: worker counts bounded by the machine, abandoned evaluations."""

from __future__ import annotations

import pytest
import torch

from s5cli.train import evaluation


def test_more_workers_than_usable_cpus_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(evaluation, "usable_cpus", lambda: 2)
    assert evaluation.worker_loading(4, 3)["num_workers"] == 2
    assert evaluation.worker_loading(1, 3) == {"num_workers": 1, "prefetch_factor": 3,
                                               "worker_init_fn": evaluation.leave_stop_signals_to_the_owner}
    assert evaluation.worker_loading(0, 3) == {"num_workers": 0}


def test_a_stop_request_abandons_prediction_after_the_batch_in_hand() -> None:
    from s5cli.data.datasets.token_dataset import Sample

    class Windows(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 6

        def __getitem__(self, i: int):
            return Sample(tokens=torch.zeros(2, 3, 4), label=0, video_id=f"v{i}")

    model = torch.nn.Sequential(torch.nn.Flatten(1), torch.nn.Linear(24, 2))
    asked = []

    def stop_after_two() -> bool:
        asked.append(1)
        return len(asked) == 2

    with pytest.raises(evaluation.EvaluationStopped):
        evaluation.predict(model, Windows(), 2, torch.device("cpu"), stop_requested=stop_after_two)
    assert len(asked) == 2  # two batches of the three were run
    ids, outputs, _ = evaluation.predict(model, Windows(), 2, torch.device("cpu"), stop_requested=lambda: False)
    assert len(ids) == 6 and outputs.shape == (6, 2)


needs_sigmask = pytest.mark.skipif(not hasattr(__import__("signal"), "pthread_sigmask"),
                                   reason="no pthread_sigmask: stop signals are not held back")
_in_worker: dict[str, object] = {}  # what a worker's init saw, read back through its dataset


class _WhatTheWorkerSaw(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> dict[str, object]:
        return dict(_in_worker)


def _worker_loader(init) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(_WhatTheWorkerSaw(), batch_size=1, num_workers=2, worker_init_fn=init,
                                       collate_fn=lambda items: items[0],
                                       multiprocessing_context="fork")


@needs_sigmask
def test_loader_workers_start_with_stop_signals_held_until_they_ignore_them() -> None:
    import signal

    def init(worker_id: int) -> None:
        _in_worker["held"] = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        evaluation.leave_stop_signals_to_the_owner(worker_id)
        _in_worker["after"] = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        _in_worker["handler"] = signal.getsignal(signal.SIGTERM)

    seen = list(evaluation.read_batches(_worker_loader(init)))
    assert len(seen) == 4
    for worker in seen:
        assert {signal.SIGINT, signal.SIGTERM} <= worker["held"]
        assert not {signal.SIGINT, signal.SIGTERM} & worker["after"]
        assert worker["handler"] == signal.SIG_IGN
    assert not {signal.SIGINT, signal.SIGTERM} & signal.pthread_sigmask(signal.SIG_BLOCK, [])  # owner: as before


@needs_sigmask
def test_a_stop_signal_while_a_worker_starts_reaches_the_owner_and_kills_no_worker() -> None:
    """A process group's SIGTERM that lands before a worker's init (here: sent from it, to itself and its
    owner) killed that worker through the trainer's inherited handler: "DataLoader worker exited
    unexpectedly", exit 1 and no stop checkpoint. The worker now drops it; the owner stops as usual."""
    import os
    import signal

    from s5cli.stop_signals import default_action_in_child

    owner, got = os.getpid(), []

    def trainer_handler(signum, frame) -> None:  # as `loop.train` installs it
        if not default_action_in_child(owner, signum):
            got.append(signum)

    def init(worker_id: int) -> None:
        if worker_id == 0:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getppid(), signal.SIGTERM)
        evaluation.leave_stop_signals_to_the_owner(worker_id)

    previous = signal.signal(signal.SIGTERM, trainer_handler)
    try:
        seen = list(evaluation.read_batches(_worker_loader(init)))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert len(seen) == 4
    assert got == [signal.SIGTERM]
