"""CUDA-graph steps of `s5 benchmark`: replay instead of eager steps, an eager fallback that says why, and (on
a GPU) replays that compute what eager steps compute."""

from __future__ import annotations

import io
import json

import pytest
import torch

import s5cli.benchmark.cuda_graph as cuda_graph
from s5cli.benchmark.worker import serve
from s5cli.benchmark.workload import MODEL_LABELS, PreparedStep, Workload

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _tiny(label: str, mode: str = "infer", device: str = "cpu", **changes) -> Workload:
    changes = {"cuda_graphs": True, **changes}
    return Workload(label=label, mode=mode, frames=4, tokens_per_frame=6, dim=16, batch=2, device=device, **changes)


def test_capture_refuses_a_cpu_device() -> None:
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device, not cpu"):
        PreparedStep(_tiny("s4"))


class _FakeGraph:
    def __init__(self) -> None:
        self.replays = 0

    def replay(self) -> None:
        self.replays += 1


def test_a_captured_step_is_replayed_not_run_eagerly(monkeypatch: pytest.MonkeyPatch) -> None:
    warmups: list[int] = []

    def capture(step, device, warmup_step=None):
        warmup_step()  # the eager warm-up runs the model ...
        warmups.append(1)
        return _FakeGraph()  # ... the captured step is not run by capture itself

    monkeypatch.setattr(cuda_graph, "capture_step", capture)
    prepared = PreparedStep(_tiny("s5"))
    calls: list[int] = []
    prepared.model.register_forward_hook(lambda *args: calls.append(1))
    for _ in range(3):
        prepared.run()
    assert warmups == [1] and calls == []  # three replays, no eager forward
    assert prepared.graph.replays == 3 and prepared.graph_error is None


def test_a_failed_capture_falls_back_to_an_eager_step_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    def capture(step, device, warmup_step=None):
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")

    monkeypatch.setattr(cuda_graph, "capture_step", capture)
    out = io.StringIO()
    assert serve(_tiny("s5"), ["step", "quit"], out) == 0
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    built = events[0]
    assert built["event"] == "built" and built["cuda_graph"] is False
    assert built["graph_error"] == "RuntimeError: operation not permitted when stream is capturing"
    assert [e["event"] for e in events[1:]] == ["warmup", "step", "done"]  # measured eagerly all the same


def test_running_out_of_memory_while_capturing_is_not_a_capture_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker reports it as over budget (as for an eager step) instead of retrying without a graph."""
    def capture(step, device, warmup_step=None):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(cuda_graph, "capture_step", capture)
    out = io.StringIO()
    assert serve(_tiny("s4"), ["step", "quit"], out) == 0
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["over_budget"]
    assert events[0]["reason"] == "out of memory"


@needs_cuda
@pytest.mark.parametrize("label", ["s5", "s4", "transformer"])
@pytest.mark.parametrize("amp", [False, True])
def test_a_replayed_inference_step_gives_the_eager_logits(label: str, amp: bool) -> None:
    graphed = PreparedStep(_tiny(label, device="cuda", amp=amp))
    assert graphed.graph is not None, graphed.graph_error
    eager = PreparedStep(_tiny(label, device="cuda", amp=amp, cuda_graphs=False))
    eager.model.load_state_dict(graphed.model.state_dict())
    graphed.run()
    eager.run()
    torch.testing.assert_close(graphed.output.float(), eager.output.float(), rtol=1e-3, atol=1e-3)


def _update(model: torch.nn.Module, start: list[torch.Tensor]) -> torch.Tensor:
    """All of the model's parameters minus `start`, as one flat vector."""
    return torch.cat([(p.detach() - s).flatten() for p, s in zip(model.parameters(), start, strict=True)])


@needs_cuda
def test_replayed_training_steps_update_the_weights_as_eager_steps_do(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three replays and three eager steps of S4 from the same start move the weights the same way.

    S4 without dropout: replays and eager steps draw different random numbers (with the default dropout
    the updates parted, cosine 0.992 on an H200). Compared as whole updates, not weight by weight: AdamW
    divides each gradient by its own running magnitude, so a parameter whose gradient is ~0 takes a
    full-size step in the direction of its rounding noise, which differs between any two runs.
    """
    monkeypatch.setitem(MODEL_LABELS, "s4", ("s4", {"dropout": 0.0}))
    graphed = PreparedStep(_tiny("s4", "train", device="cuda"))
    assert graphed.graph is not None, graphed.graph_error
    eager = PreparedStep(_tiny("s4", "train", device="cuda", cuda_graphs=False))
    eager.model.load_state_dict(graphed.model.state_dict())  # the capture's warm-up steps moved the weights
    eager.optimizer.load_state_dict(graphed.optimizer.state_dict())
    start = [p.detach().clone() for p in eager.model.parameters()]
    for _ in range(3):
        graphed.run()
        eager.run()
    graph_update, eager_update = _update(graphed.model, start), _update(eager.model, start)
    assert eager_update.norm() > 0
    # H200: cosine 0.9997. A replay that skipped the optimiser step, or a parameter group of it (the SSM
    # group's rate is 10x the others'), would be far off in direction or size.
    assert torch.nn.functional.cosine_similarity(graph_update, eager_update, dim=0) > 0.999
    assert (graph_update.norm() / eager_update.norm() - 1).abs() < 1e-2


@needs_cuda
def test_s5_training_step_captures_and_keeps_learning() -> None:
    graphed = PreparedStep(_tiny("s5", "train", device="cuda", amp=True))
    assert graphed.graph is not None, graphed.graph_error
    before = {name: p.detach().clone() for name, p in graphed.model.named_parameters()}
    for _ in range(2):
        graphed.run()
    graphed.synchronize()
    after = dict(graphed.model.named_parameters())
    moved = [name for name, p in after.items() if not torch.equal(p.detach(), before[name])]
    assert moved and all(torch.isfinite(p).all() for p in after.values())
    guide = [name for name in moved if name.startswith("guide.")]
    assert guide  # the momentum update is part of the captured step
