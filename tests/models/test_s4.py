"""S4 / S4D layer: convolution = recurrence, prefix property, causality, long-sequence gradients."""

from __future__ import annotations

import pytest
import torch

from s5cli.models.s4 import S4Config, S4Layer, ssm_param_groups

KERNELS = [("dplr", "legs"), ("s4d", "lin"), ("s4d", "inv"), ("s4d", "legs")]


def _layer(kind: str, init: str, h: int = 4, n: int = 16, **kw) -> S4Layer:
    torch.manual_seed(0)
    return S4Layer(S4Config(d_model=h, d_state=n, kernel=kind, init=init, **kw)).double()


def _count_kernel_generation(layer: S4Layer, monkeypatch) -> dict[str, int]:
    """Patch `layer` so that every kernel it generates adds one to the returned counter's "n"."""
    calls = {"n": 0}
    generate = layer._generate_kernel

    def counting(*args, **kwargs):
        calls["n"] += 1
        return generate(*args, **kwargs)

    monkeypatch.setattr(layer, "_generate_kernel", counting)
    return calls


@pytest.mark.parametrize(("kind", "init"), KERNELS)
def test_convolution_equals_recurrent_step(kind: str, init: str) -> None:
    layer = _layer(kind, init).eval()
    x = torch.randn(3, 64, 4, dtype=torch.float64)
    conv = layer(x)
    state = layer.step_state(3)
    steps = []
    for t in range(x.shape[1]):
        y, state = layer.step(x[:, t], state)
        steps.append(y)
    torch.testing.assert_close(torch.stack(steps, 1), conv, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize(("kind", "init"), KERNELS)
def test_kernel_for_length_is_prefix_of_longer_kernel(kind: str, init: str) -> None:
    layer = _layer(kind, init)
    short = layer.kernel(100)
    long = layer.kernel(200)
    torch.testing.assert_close(long[:, :100], short, rtol=1e-5, atol=1e-10)
    # The other order too: a longer kernel first must not change the shorter one.
    fresh = _layer(kind, init)
    long_first = fresh.kernel(200)
    torch.testing.assert_close(fresh.kernel(100), long_first[:, :100], rtol=1e-5, atol=1e-10)


def test_dplr_length_change_keeps_the_system() -> None:
    layer = _layer("dplr", "legs")
    before = layer.kernel(50).clone()
    layer.kernel_gen.set_length(77)
    torch.testing.assert_close(layer.kernel(50), before, rtol=1e-6, atol=1e-10)


def test_repeated_doubling_of_the_length_keeps_a_float32_system() -> None:
    """Whole-video training doubles ℓ again and again; in complex64 each doubling rounded C̃ a little, and
    nine of them (30 -> 15,360) moved the float32 kernel by 3e-4 of its peak. Re-expressed in float64: 8e-6."""
    torch.manual_seed(0)
    layer = S4Layer(S4Config(d_model=16, d_state=64))
    with torch.no_grad():
        before = layer.kernel(30).clone()
        layer.kernel_gen.ensure_length(30 * 2**9)
        moved = (layer.kernel(30) - before).abs().amax(-1) / before.abs().amax(-1)
    assert layer.kernel_gen.length == 30 * 2**9 and layer.kernel_gen.C.dtype == torch.float32
    assert moved.max().item() < 3e-5


def _count_length_reads(layer: S4Layer, monkeypatch) -> dict[str, int]:
    """Count host reads (`int(...)`) of the layer's `l_kernel` buffer, whichever tensor object holds it."""
    reads = {"n": 0}
    real_int = torch.Tensor.__int__
    gen = layer.kernel_gen

    def counting_int(tensor):
        if tensor is gen.l_kernel:
            reads["n"] += 1
        return real_int(tensor)

    monkeypatch.setattr(torch.Tensor, "__int__", counting_int)
    return reads


def test_dplr_forward_reads_its_length_from_the_device_only_after_it_changed(monkeypatch) -> None:
    # Each read of a CUDA buffer waits for the GPU's queue; steady-state training steps must not do any.
    layer = _layer("dplr", "legs").train()
    reads = _count_length_reads(layer, monkeypatch)
    x = torch.randn(2, 40, 4, dtype=torch.float64)
    layer(x).sum().backward()  # fixes l = 40
    first = reads["n"]
    for _ in range(3):
        layer(x).sum().backward()
    assert reads["n"] == first
    layer(torch.randn(2, 100, 4, dtype=torch.float64))  # grows l (40 -> 80 -> 160): written, not read back
    assert layer.kernel_gen.length == int(layer.kernel_gen.l_kernel) == 160
    assert reads["n"] == first + 1  # the line above


@pytest.mark.parametrize(("kind", "init"), KERNELS)
def test_causal_unless_bidirectional(kind: str, init: str) -> None:
    layer = _layer(kind, init).eval()
    x = torch.randn(2, 40, 4, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 25:] += torch.randn_like(x2[:, 25:])
    y, y2 = layer(x), layer(x2)
    torch.testing.assert_close(y[:, :25], y2[:, :25])
    assert not torch.allclose(y[:, 25:], y2[:, 25:])
    bidir = _layer(kind, init, bidirectional=True).eval()
    assert not torch.allclose(bidir(x)[:, :25], bidir(x2)[:, :25])


def test_bidirectional_refuses_step_mode() -> None:
    with pytest.raises(ValueError, match="causal"):
        _layer("s4d", "lin", bidirectional=True).step_state(1)


@pytest.mark.parametrize(("kind", "init"), [("dplr", "legs"), ("s4d", "inv")])
def test_finite_gradients_at_12000_steps(kind: str, init: str) -> None:
    torch.manual_seed(0)
    layer = S4Layer(S4Config(d_model=4, kernel=kind, init=init))
    y = layer(torch.randn(1, 12_000, 4))
    y.square().mean().backward()
    for name, param in layer.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name


def test_channel_subset_matches_full_ssm() -> None:
    layer = _layer("dplr", "legs", h=6)
    x = torch.randn(2, 30, 6, dtype=torch.float64)
    channels = torch.tensor([1, 4])
    torch.testing.assert_close(layer.ssm(x, channels), layer.ssm(x)[..., channels])


def test_ssm_parameters_get_their_own_lr_and_no_weight_decay() -> None:
    layer = S4Layer(S4Config(d_model=4, d_state=8, ssm_lr=1e-3))
    groups = ssm_param_groups(layer, lr=5e-4, weight_decay=0.01)
    ssm = [g for g in groups if g["lr"] == 1e-3]
    assert len(ssm) == 1 and ssm[0]["weight_decay"] == 0.0
    names = {id(p): n for n, p in layer.named_parameters()}
    assert {names[id(p)].split(".")[-1] for p in ssm[0]["params"]} == {"log_dt", "lambda_re_log", "lambda_im", "P", "B"}
    assert sum(len(g["params"]) for g in groups) == len(list(layer.parameters()))


def test_half_precision_input_runs_fft_in_float32() -> None:
    layer = S4Layer(S4Config(d_model=4, d_state=8, kernel="s4d", init="lin"))
    x = torch.randn(1, 16, 4)
    assert layer.ssm(x.bfloat16()).dtype == torch.bfloat16


@pytest.mark.parametrize("kernel", ["dplr", "s4d"])
def test_no_grad_kernel_is_reused_until_a_parameter_changes(kernel: str) -> None:
    import copy

    torch.manual_seed(0)
    layer = S4Layer(S4Config(d_model=8, d_state=8, kernel=kernel, init="legs" if kernel == "dplr" else "lin")).eval()
    channels = torch.tensor([1, 5])
    with torch.no_grad():
        first = layer.kernel(64, channels)
        assert layer.kernel(64, channels) is first  # reused
        assert layer.kernel(64) is not first and layer.kernel(32, channels) is not first  # other key
        twin = copy.deepcopy(layer)
        for p in layer.kernel_gen.parameters():  # an optimizer / EMA step: in place
            p.mul_(0.9)
        changed = layer.kernel(64, channels)
        assert not torch.equal(changed, first)
        layer.__dict__.pop("_kernel_cache")
        assert torch.equal(layer.kernel(64, channels), changed)  # the cached value was the fresh one
        assert torch.equal(twin.kernel(64, channels), first)  # a copy keeps its own parameters
    with_grad = layer.kernel(64, channels)
    assert with_grad.requires_grad and torch.equal(with_grad.detach(), changed)


@pytest.mark.parametrize(("kind", "init"), [("dplr", "legs"), ("s4d", "lin")])
def test_inference_reuses_the_kernel_spectrum_and_matches_the_training_path(kind: str, init: str, monkeypatch) -> None:
    layer = _layer(kind, init, h=6).eval()
    x = torch.randn(2, 50, 6, dtype=torch.float64)
    calls = _count_kernel_generation(layer, monkeypatch)
    with torch.no_grad():
        first = layer.ssm(x)
        again = layer.ssm(x)
    assert calls["n"] == 1 and torch.equal(first, again)
    torch.testing.assert_close(first, layer.ssm(x).detach(), rtol=1e-10, atol=1e-10)  # autograd path
    with torch.no_grad():
        layer.kernel_gen.log_dt.add_(0.1)  # an optimiser step
        changed = layer.ssm(x)
    assert calls["n"] == 3 and not torch.allclose(changed, first)


def test_a_layer_in_training_mode_keeps_no_kernel(monkeypatch) -> None:
    """Training changes the parameters every step (S5's guide runs without autograd but is updated by
    momentum), so a kept spectrum would only sit through the step's memory peak, never be reused."""
    layer = _layer("dplr", "legs", h=6)
    x = torch.randn(2, 50, 6, dtype=torch.float64)
    calls = _count_kernel_generation(layer, monkeypatch)
    with torch.no_grad():
        layer.eval()
        evaluated = layer.ssm(x)  # kept: evaluation reuses it
        layer.train()
        first, again = layer.ssm(x), layer.ssm(x)
    assert calls["n"] == 3
    assert "_spectrum_cache" not in layer.__dict__ and "_kernel_cache" not in layer.__dict__
    assert torch.equal(first, evaluated) and torch.equal(again, evaluated)


@pytest.mark.parametrize("kind", ["diagonal", "dplr"])
def test_kernels_stay_float32_under_autocast(kind: str) -> None:
    """AMP runs `bmm` in half precision: the S4D Vandermonde product lost the kernel's tail in bfloat16
    (2.8e-3 relative error on CPU) while the DPLR kernel already opted out. Both must ignore autocast."""
    from s5cli.models.s4_kernels import DiagonalKernel, DPLRKernel

    torch.manual_seed(0)
    kernel = (DiagonalKernel if kind == "diagonal" else DPLRKernel)(8, 16, "legs", 1e-3, 1e-1, None)
    with torch.no_grad():
        plain = kernel(300)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = kernel(300)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, plain, rtol=0, atol=0)


@pytest.mark.parametrize("length", [4, 16, 64])
def test_float32_dplr_step_mode_is_as_accurate_as_the_convolution(length: int) -> None:
    """The recurrent mode solved for the true C in complex64, where (I - Ā^ℓ) is ill-conditioned for a short
    internal length ℓ: 1e-3 off a float64 copy at ℓ = 4, against 8e-7 for the convolution."""
    import copy

    torch.manual_seed(0)
    layer = S4Layer(S4Config(d_model=16, d_state=64)).eval()
    u = torch.randn(2, length, 16)
    with torch.no_grad():
        conv = layer.ssm(u)  # fixes ℓ = length
        reference = copy.deepcopy(layer).double().ssm(u.double())
        state, steps = layer.step_state(2), []
        for t in range(length):
            y, state = layer.step_ssm(u[:, t], state)
            steps.append(y)
    conv_error = (conv.double() - reference).abs().max().item()
    step_error = (torch.stack(steps, 1).double() - reference).abs().max().item()
    assert step_error < 10 * max(conv_error, 1e-6)


@pytest.mark.parametrize("kind", ["dplr", "s4d"])
def test_a_kernel_parameter_replaced_without_a_version_bump_is_not_served_stale(kind: str) -> None:
    """The eval-mode kernel cache was keyed on version counters only: `p.data = ...` (or functional_call)
    swaps the tensor without bumping one, and the old kernel came back."""
    torch.manual_seed(0)
    layer = S4Layer(S4Config(d_model=8, d_state=16, kernel=kind)).eval()
    u = torch.randn(1, 12, 8)
    with torch.no_grad():
        before = layer.ssm(u)
        param = next(p for name, p in layer.kernel_gen.named_parameters() if "dt" in name)
        param.data = param.data + 0.5
        after = layer.ssm(u)
        layer.drop_reused_kernel()
        fresh = layer.ssm(u)
    assert not torch.equal(before, after)
    assert torch.equal(after, fresh)
