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
