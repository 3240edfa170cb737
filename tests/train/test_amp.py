"""Mixed precision: which dtype on which GPU, whether a GradScaler is needed, and the recipe's switch.

No GPU here: `torch.cuda.get_device_capability` is faked, and only the autocast contexts' settings are read.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from s5cli.train.evaluation import amp_dtype, autocast, needs_grad_scaler

T4, A100 = torch.device("cuda", 0), torch.device("cuda", 1)


@pytest.fixture
def two_gpus(monkeypatch) -> None:
    """cuda:0 a T4 (compute capability 7.5, bfloat16 only emulated), cuda:1 an A100 (8.0)."""
    capability = {0: (7, 5), 1: (8, 0)}
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability[torch.device(device).index])


def test_bfloat16_only_where_the_gpu_computes_it(two_gpus) -> None:
    # torch.cuda.is_bf16_supported() says True on a T4 (it counts emulation) and asks the current device.
    assert amp_dtype(T4) == torch.float16 and amp_dtype(A100) == torch.bfloat16


def test_a_grad_scaler_only_for_float16_autocast(two_gpus) -> None:
    assert needs_grad_scaler(T4) and not needs_grad_scaler(A100)
    assert not needs_grad_scaler(T4, enabled=False)  # train.amp: false trains in float32
    assert not needs_grad_scaler(torch.device("cpu"))


def test_autocast_follows_the_recipe_switch(two_gpus) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CUDA is not available": only the settings are read here
        on, off = autocast(A100), autocast(A100, enabled=False)
    assert on.device == "cuda" and on.fast_dtype == torch.bfloat16
    assert off.device == "cuda" and not off._enabled  # train.amp=false used to be ignored
    assert not autocast(torch.device("cpu"))._enabled  # AMP on GPU only


def _scaled_step(scaler: torch.amp.GradScaler, gradient: float) -> tuple[bool, torch.Tensor]:
    from s5cli.train.step import optimizer_step

    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    scaler.scale((weight * gradient).sum()).backward()
    return optimizer_step(scaler, optimizer), weight.detach()


def test_a_step_the_float16_scaler_skips_is_reported_as_not_taken() -> None:
    # A CPU GradScaler stands in for the CUDA one: the same skip-and-halve rule on inf/NaN gradients.
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    taken, weight = _scaled_step(scaler, 2.0)
    assert taken and torch.allclose(weight, torch.full((3,), 0.8)) and scaler.get_scale() == 1024.0
    skipped, weight = _scaled_step(scaler, float("inf"))
    assert not skipped and torch.equal(weight, torch.ones(3)) and scaler.get_scale() == 512.0
    taken, _ = _scaled_step(torch.amp.GradScaler("cpu", enabled=False), float("inf"))
    assert taken  # without a scaler (float32, bfloat16) every step is taken, as optimizer.step() does


def test_skipped_steps_leave_the_lr_schedule_and_the_momentum_copies_alone(tmp_path, monkeypatch) -> None:
    """Training as with float16 on a GPU, on the CPU: a scaler is used and two steps get inf gradients."""
    from typer.testing import CliRunner

    from s5cli.cli.app import app
    from s5cli.models.s5 import S5Model
    from s5cli.train import loop
    from s5cli.train import step as train_step
    from tests.train.test_finetune_e2e import RECIPE, tiny

    real_scaler, real_backward, real_step, real_ema = (
        torch.amp.GradScaler, train_step.backward_batch, train_step.optimizer_step, S5Model.momentum_update)
    monkeypatch.setattr(loop, "needs_grad_scaler", lambda device, enabled=True: True)
    monkeypatch.setattr(torch.amp, "GradScaler",
                        lambda device, enabled=True: real_scaler("cpu", init_scale=1024.0))
    calls, taken, ema_updates = [], [], []

    def backward(setup, module, scaler, clips, micro):
        loss = real_backward(setup, module, scaler, clips, micro)
        calls.append(len(calls) + 1)
        if len(calls) in (2, 3):  # what a float16 overflow does: an inf in a gradient
            next(p for p in module.parameters() if p.grad is not None).grad.view(-1)[0] = float("inf")
        return loss

    monkeypatch.setattr(train_step, "backward_batch", backward)
    monkeypatch.setattr(train_step, "optimizer_step",
                        lambda scaler, opt: taken.append(real_step(scaler, opt)) or taken[-1])
    monkeypatch.setattr(S5Model, "momentum_update", lambda self: ema_updates.append(1) or real_ema(self))
    args = tiny(tmp_path, **{"optim.schedule": "cosine", "optim.warmup_steps": 100, "optim.lr": 1e-3})
    result = CliRunner().invoke(app, ["finetune", RECIPE, *args, "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert taken == [True, False, False, True, True, True]  # 2 epochs x 3 batches; steps 2 and 3 skipped
    assert len(ema_updates) == 4
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in records if "loss" in r]
    # Warmup: step i uses lr = (advances before it + 1) / 101 x 1e-3 (what is logged); a skipped step
    # does not advance it.
    advances = [sum(taken[:i]) for i in range(len(taken))]
    assert lrs == pytest.approx([(a + 1) / 101 * 1e-3 for a in advances])
