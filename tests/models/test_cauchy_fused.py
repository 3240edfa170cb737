"""The fused Triton kernels of the DPLR generating function against the matmul form and a float64 reference.

Without a GPU the kernels run in Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1; numpy
underneath): the same kernel source, so indexing, masking and the hand-derived gradients are checked in
every CI run. With a GPU the same tests check the compiled kernels, and the dispatch that picks them."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from s5cli.models import cauchy
from s5cli.models.s4_kernels import DPLRKernel

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def fused():
    """`cauchy_fused`: compiled kernels on a GPU, interpreted on the CPU (see the module docstring)."""
    from s5cli.models import cauchy_fused

    return cauchy_fused


def generating_inputs(channels: int, d_state: int, ell: int, device: str = "cpu", perturb: float = 0.3):
    """(weights, coef, g, s) as `dplr_generating_function` hands them to the kernels, from a perturbed layer."""
    torch.manual_seed(0)
    kernel = DPLRKernel(channels, d_state, "legs", 1e-3, 1e-1, None)
    with torch.no_grad():
        for param in kernel.parameters():
            param.add_(perturb * torch.randn_like(param))
    kernel.ensure_length(ell)
    with torch.no_grad():
        numer, lam, g, s = kernel.to(device).generating_inputs(ell)
    return (*cauchy.pair_weights(numer, lam), g, s)


def matmul_results(weights, coef, g, s, grad):
    """Forward and (grad weights, grad coef, grad g) of the matmul form in `cauchy.py`."""
    form = cauchy._PairCauchyWoodbury
    return form._forward(weights, coef, g, s), form._backward(grad, weights, coef, g, s)[:3]


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return ((value.to(reference.dtype) - reference).abs().max() / reference.abs().max()).item()


def as_float64(*tensors):
    return [t.to(torch.complex128) if t.is_complex() else t.double() for t in tensors]


# F = 301 frequencies: several forward blocks and two backward chunks, the last ones part-filled; M = 32
# modes (the paper's N = 64) and M = 3 (padded to a block of 4).
@pytest.mark.parametrize(("channels", "d_state", "ell"), [(3, 64, 600), (2, 6, 1100)])
def test_kernels_match_the_matmul_form_against_float64(fused, channels, d_state, ell) -> None:
    weights, coef, g, s = generating_inputs(channels, d_state, ell, DEVICE)
    grad = torch.randn(g.shape, dtype=g.dtype, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    results = (fused.generating_function(weights, coef, g, s),
               *fused.generating_function_backward(grad, weights, coef, g, s))
    reference = matmul_results(*as_float64(weights, coef, g, s, grad))
    ours = matmul_results(weights, coef, g, s, grad)
    names = ("k̂", "grad weights", "grad coef", "grad g")
    for name, value, same_precision, exact in zip(names, results, (ours[0], *ours[1]), (reference[0], *reference[1]),
                                                  strict=True):
        assert value.shape == exact.shape, name
        fused_error, matmul_error = relative_error(value, exact), relative_error(same_precision, exact)
        # Both are float32 with different rounding: the fused kernels must be as accurate as the matmul form.
        assert fused_error < max(4 * matmul_error, 1e-5), (name, fused_error, matmul_error)


def test_kernels_through_autograd_give_the_layers_gradients(fused, monkeypatch) -> None:
    """The dispatch in `_PairCauchyWoodbury`: every DPLR parameter gets the matmul form's gradient."""
    torch.manual_seed(0)
    layer = DPLRKernel(4, 16, "legs", 1e-3, 1e-1, None).to(DEVICE)

    def kernel_and_grads():
        kernel = layer(100)
        weights = torch.linspace(-1, 1, 100, device=DEVICE)
        return kernel.detach(), torch.autograd.grad((kernel * weights).sum(), list(layer.parameters()))

    with cauchy.matmul_form():
        expected_kernel, expected = kernel_and_grads()
    # On the CPU the dispatch would never pick the kernels: let it, for complex64 (float32) inputs.
    monkeypatch.setattr(cauchy, "fused_kernels_usable", lambda g: g.dtype == torch.complex64)
    got_kernel, got = kernel_and_grads()
    torch.testing.assert_close(got_kernel, expected_kernel, rtol=1e-4, atol=1e-5)
    for (name, _), value, reference in zip(layer.named_parameters(), got, expected, strict=True):
        torch.testing.assert_close(value, reference, rtol=1e-3, atol=1e-4, msg=name)


def test_the_cpu_and_float64_keep_the_matmul_form(monkeypatch) -> None:
    monkeypatch.delenv(cauchy.FUSED_ENV, raising=False)
    assert not cauchy.fused_kernels_usable(torch.zeros(1, dtype=torch.complex64))
    if torch.cuda.is_available():
        assert cauchy.fused_kernels_usable(torch.zeros(1, dtype=torch.complex64, device="cuda"))
        assert not cauchy.fused_kernels_usable(torch.zeros(1, dtype=torch.complex128, device="cuda"))
        with cauchy.matmul_form():
            assert not cauchy.fused_kernels_usable(torch.zeros(1, dtype=torch.complex64, device="cuda"))
        monkeypatch.setenv(cauchy.FUSED_ENV, "0")
        assert not cauchy.fused_kernels_usable(torch.zeros(1, dtype=torch.complex64, device="cuda"))


@cuda
def test_compiled_kernels_match_the_matmul_form_and_repeat_bit_for_bit(fused) -> None:
    """At the paper's first-layer width and a quarter of its length, on the GPU; two runs, the same bits."""
    cauchy_fused = fused
    weights, coef, g, s = generating_inputs(1024, 64, 2955, device="cuda")
    grad = torch.randn(g.shape, dtype=g.dtype, device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    fused = (cauchy_fused.generating_function(weights, coef, g, s),
             *cauchy_fused.generating_function_backward(grad, weights, coef, g, s))
    again = (cauchy_fused.generating_function(weights, coef, g, s),
             *cauchy_fused.generating_function_backward(grad, weights, coef, g, s))
    for value, repeat in zip(fused, again, strict=True):
        assert torch.equal(value, repeat)
    ours = matmul_results(weights, coef, g, s, grad)
    reference = matmul_results(*as_float64(weights, coef, g, s, grad))
    for value, same_precision, exact in zip(fused, (ours[0], *ours[1]), (reference[0], *reference[1]), strict=True):
        assert relative_error(value, exact) < max(4 * relative_error(same_precision, exact), 1e-5)


def test_kernels_that_cannot_build_here_leave_the_matmul_form_with_one_warning(fused, monkeypatch) -> None:
    """No C compiler for Triton's launcher, an unsupported GPU: the probe fails, training goes on slower."""
    assert cauchy.fused_kernels_work.__wrapped__(torch.device(DEVICE))  # the real kernels build and run

    def no_compiler(*args):
        raise RuntimeError("Failed to find C compiler. Please specify via CC environment variable.\nmore")

    monkeypatch.setattr(fused, "generating_function", no_compiler)
    with pytest.warns(RuntimeWarning, match=r"cannot run on .*RuntimeError: Failed to find C compiler.*"
                                            r"matmul form \(set S5CLI_FUSED_CAUCHY=0"):
        assert not cauchy.fused_kernels_work.__wrapped__(torch.device(DEVICE))
