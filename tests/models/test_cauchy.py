"""DPLR generating function: the common-denominator form and its hand-written backward against the textbook sums."""

from __future__ import annotations

import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from s5cli.models import cauchy
from s5cli.models.cauchy import _PairCauchyWoodbury, dplr_generating_function
from s5cli.models.s4_kernels import DPLRKernel


def textbook(numer: torch.Tensor, lam: torch.Tensor, g: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Σ_m v/(g − sλ) + v̄/(g − sλ̄) for each numerator, then k₀₀ − s·k₀₁·k₁₀/(1 + s·k₁₁): the S4 paper's form."""
    pole = g[:, None, :] - s * lam[:, :, None]
    pole_conj = g[:, None, :] - s * lam.conj()[:, :, None]
    k = (numer[..., None] / pole).sum(-2) + (numer.conj()[..., None] / pole_conj).sum(-2)
    return k[0] - s * k[1] * k[2] / (1 + s * k[3])


def kernel_inputs(channels: int, ell: int, dtype: torch.dtype, seed: int = 0, perturb: float = 0.0):
    """Numerators, λ, g and s of a HiPPO-LegS DPLR kernel (optionally with its parameters perturbed, as training does)."""
    torch.manual_seed(seed)
    kernel = DPLRKernel(channels, 16, "legs", 1e-3, 1e-1, None)
    with torch.no_grad():
        for param in kernel.parameters():
            param.add_(perturb * torch.randn_like(param))
        return kernel.to(dtype).generating_inputs(ell)


@pytest.mark.parametrize("perturb", [0.0, 0.3])
def test_common_denominator_form_equals_the_textbook_sums_in_float64(perturb: float) -> None:
    numer, lam, g, s = kernel_inputs(6, 64, torch.float64, perturb=perturb)
    torch.testing.assert_close(dplr_generating_function(numer, lam, g, s), textbook(numer, lam, g, s),
                               rtol=1e-10, atol=1e-12)


def test_float32_error_is_no_worse_than_the_textbook_form() -> None:
    """Against a float64 reference, the float32 kernel keeps the textbook float32 form's accuracy."""
    reference = torch.fft.irfft(textbook(*kernel_inputs(32, 600, torch.float64, perturb=0.3)), n=600)
    inputs = kernel_inputs(32, 600, torch.float32, perturb=0.3)
    ours = torch.fft.irfft(dplr_generating_function(*inputs), n=600).double()
    theirs = torch.fft.irfft(textbook(*inputs), n=600).double()
    our_error = ((ours - reference).norm() / reference.norm()).item()
    their_error = ((theirs - reference).norm() / reference.norm()).item()
    assert our_error < max(2 * their_error, 1e-6), (our_error, their_error)


def test_backward_passes_gradcheck_across_chunks(monkeypatch) -> None:
    monkeypatch.setattr(cauchy, "CHUNK_ELEMENTS", 3 * 4 * 3)  # 3 frequencies per chunk → 3 chunks
    monkeypatch.setattr(cauchy, "MIN_CHUNK_FREQUENCIES", 1)
    torch.manual_seed(0)
    weights = torch.randn(3, 8, 4, dtype=torch.float64, requires_grad=True)
    coef = (torch.rand(3, 4, 3, dtype=torch.float64) + 0.5).requires_grad_()
    g = torch.randn(3, 7, dtype=torch.complex128, requires_grad=True)
    s = torch.randn(7, dtype=torch.complex128)
    assert torch.autograd.gradcheck(lambda *a: _PairCauchyWoodbury.apply(*a, s), (weights, coef, g))


def test_kernel_gradients_match_autograd_through_the_textbook_form() -> None:
    """End to end: ∂(loss)/∂(Δt, Λ, P, B, C) of a DPLR kernel equals autograd through the textbook sums."""
    torch.manual_seed(0)
    kernel = DPLRKernel(5, 16, "legs", 1e-3, 1e-1, None).double()
    kernel.ensure_length(80)
    weight = torch.randn(5, 80, dtype=torch.float64)

    def grads(form) -> list[torch.Tensor]:
        loss = (torch.fft.irfft(form(*kernel.generating_inputs(80)), n=80) * weight).sum()
        return list(torch.autograd.grad(loss, list(kernel.parameters())))

    for ours, theirs in zip(grads(dplr_generating_function), grads(textbook), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("differentiable", [True, False])
def test_chunking_does_not_change_the_values(monkeypatch, differentiable: bool) -> None:
    numer, lam, g, s = kernel_inputs(4, 100, torch.float64, perturb=0.3)
    numer.requires_grad_(differentiable)
    whole = dplr_generating_function(numer, lam, g, s).detach()
    # 5 frequencies per chunk: 2 by the element budget, raised to the minimum width of 5
    monkeypatch.setattr(cauchy, "CHUNK_ELEMENTS", 4 * 8 * 2)
    monkeypatch.setattr(cauchy, "MIN_CHUNK_FREQUENCIES", 5)
    assert len(cauchy._chunks(g.shape[1], 4, 8)) == 11
    torch.testing.assert_close(dplr_generating_function(numer, lam, g, s).detach(), whole, rtol=1e-12, atol=1e-14)


def test_chunks_hold_2_mib_but_keep_a_minimum_width() -> None:
    freqs = 6001
    # 2^18 complex elements per chunk at 256 channels x 32 modes (32 frequencies) ...
    assert cauchy._chunks(freqs, 256, 32)[0] == slice(0, cauchy.CHUNK_ELEMENTS // (256 * 32))
    # ... at 1024 channels never fewer than 32 frequencies (narrower matmuls are slow), and never past the end.
    assert cauchy._chunks(freqs, 1024, 32)[0] == slice(0, cauchy.MIN_CHUNK_FREQUENCIES)
    assert cauchy._chunks(10, 1024, 32) == [slice(0, 10)]


class _PeakTensorBytes(TorchDispatchMode):
    """Peak bytes of the tensors created under this mode that are alive at once (views count once)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, list[int]] = {}  # storage address → [bytes, live tensors on it]
        self.now = self.peak = 0

    def _release(self, key: int) -> None:
        entry = self.live[key]
        entry[1] -= 1
        if entry[1] == 0:
            self.now -= entry[0]
            del self.live[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                key = storage.data_ptr()
                if key not in self.live:
                    self.live[key] = [storage.nbytes(), 0]
                    self.now += storage.nbytes()
                    self.peak = max(self.peak, self.now)
                self.live[key][1] += 1
                weakref.finalize(tensor, self._release, key)
        return out


def test_one_chunk_of_working_memory_at_a_time_without_autograd() -> None:
    """The inference kernel's transient memory is about one small chunk: no chunk outlives the next one's build.

    At 256 channels x 32 modes x 1501 frequencies each R chunk is 2 MiB; before the chunk loop freed its
    buffers two R chunks were alive at once.
    """
    with torch.no_grad():
        numer, lam, g, s = DPLRKernel(256, 64, "legs", 1e-3, 1e-1, None).generating_inputs(3000)
    chunk_bytes = cauchy.CHUNK_ELEMENTS * 8
    with torch.no_grad(), _PeakTensorBytes() as tracker:
        out = dplr_generating_function(numer, lam, g, s)
    # g's slices are seen as new here; g and the result are not working memory.
    working = tracker.peak - 2 * out.numel() * out.element_size()
    assert working < 1.5 * chunk_bytes, (working, chunk_bytes)  # 2 chunks alive: ~1.9x


def test_autocast_does_not_lower_the_kernel_precision() -> None:
    """Under AMP the real matmuls would run in half precision near the poles; the function opts out."""
    inputs = kernel_inputs(4, 100, torch.float32)
    plain = dplr_generating_function(*inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_amp = dplr_generating_function(*inputs)
    assert under_amp.dtype == plain.dtype
    torch.testing.assert_close(under_amp, plain, rtol=0, atol=0)


def test_chunks_on_a_gpu_are_wider_so_a_step_launches_fewer_operators() -> None:
    # A GPU step at these sizes is bound by operator launches, not arithmetic (cauchy.CUDA_CHUNK_ELEMENTS).
    freqs = 12001  # the first S4 layer at the paper's 11,820 tokens
    on_cpu, on_gpu = cauchy._chunks(freqs, 1024, 32), cauchy._chunks(freqs, 1024, 32, "cuda")
    assert on_gpu[0] == slice(0, cauchy.CUDA_CHUNK_ELEMENTS // (1024 * 32))
    assert len(on_gpu) * 8 <= len(on_cpu)
    for chunks in (on_cpu, on_gpu):  # every frequency exactly once, in order
        assert [i for f in chunks for i in range(f.start, min(f.stop, freqs))] == list(range(freqs))
