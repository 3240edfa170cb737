"""The DPLR kernel's generating function: conjugate-pair Cauchy sums, Woodbury-combined, with a hand-written backward.

S4's kernel at each frequency is k̂ = k₀₀ − s·k₀₁·k₁₀ / (1 + s·k₁₁), where each k is a Cauchy sum over the
N/2 kept modes *and* their conjugates: Σ_m v_m/(g − sλ_m) + v̄_m/(g − sλ̄_m). Why not the textbook form:

* Over a common denominator one conjugate pair is (2 Re(v)·g − 2 Re(v λ̄)·s) / D with
  D = g² − 2 Re(λ)·gs + |λ|²·s². D is a 3-term real-weighted sum of (g², gs, s²), i.e. one small batched
  matmul, and it needs ONE complex reciprocal per (channel, mode, frequency) instead of two subtractions,
  two products and two reciprocals. The numerators' weights α = 2 Re v and β = −2 Re(v λ̄) are real, so
  the mode sum is a real batched matmul over the interleaved (re, im) view of R = 1/D.
* Autograd through the textbook form stored or recomputed five (channels × modes × frequencies) complex
  intermediates per conjugate half and walked them one element-wise op at a time; it was ~70 % of a CPU
  training step. The backward here recomputes R chunk by chunk and needs two complex products and four
  batched matmuls per chunk; nothing of that size is kept between forward and backward.
* Chunks over frequencies bound the working memory at the paper's length (11,820 tokens, 1024 channels).

On a GPU with Triton the same math runs as two fused kernels instead (`cauchy_fused.py`: R never leaves
registers); this module's matmul form stays the CPU's path and the reference those kernels are tested against.

Numerically the common denominator loses nothing that the textbook form keeps: with g/s purely imaginary
(bilinear transform) and Re λ < 0, neither factor of D can vanish, and the test suite checks both forms
against a float64 reference.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from collections.abc import Iterator

import torch
from torch import Tensor

from s5cli.errors import first_line

# Complex elements of R = 1/D (channels × modes × frequencies) per chunk: 2 MiB of complex64, but never
# narrower than MIN_CHUNK_FREQUENCIES (narrower matmuls lose speed: at 1024 channels, 8 instead of 32
# frequencies cost ~25 %). Training used 8 MiB chunks until its FFT convolution stopped dominating the
# peak; then the backward's two live chunks were ~a third of a default-size training peak, for both S4 and
# S5 (16 of ~48-62 MiB of live tensors). At 1024 channels the 32-frequency minimum keeps the 8 MiB chunk.
CHUNK_ELEMENTS = 1 << 18
MIN_CHUNK_FREQUENCIES = 32
# On a GPU, 64 MiB chunks. Why: each chunk costs ~130 operator calls (forward and backward) and a GPU step
# at these sizes is bound by launching them, not by arithmetic. With the CPU's chunks a paper-size S4
# training step made ~650 chunks and ~143k operator calls and took 652 ms on an H200 (S5: 402 ms); with these,
# ~18k calls and ~97 ms (S5: ~63 ms). The backward holds two chunks, so S5's training peak there rose by
# ~90 MiB (394 -> 481 MiB); larger chunks would raise S5's peak against the transformer's and S4's more.
CUDA_CHUNK_ELEMENTS = 1 << 23
# Set to 0 to run the matmul form below on a GPU too (to compare, or where a Triton build misbehaves).
FUSED_ENV = "S5CLI_FUSED_CAUCHY"
_matmul_form_forced = False  # inside `matmul_form()`


def dplr_generating_function(numer: Tensor, lam: Tensor, g: Tensor, s: Tensor) -> Tensor:
    """k̂ (H, F) from numerators (4, H, M) [C̃B, C̃P, PᴴB, PᴴP], modes λ (H, M), g (H, F) and s (F,)."""
    # Small (H, M) and (H, F) preparations stay in autograd; only the (H, M, F) work is hand-differentiated.
    weights, coef = pair_weights(numer, lam)
    # The real matmuls must stay float32 under AMP: R has poles, half precision would wreck the kernel.
    with torch.autocast(g.device.type, enabled=False):
        return _PairCauchyWoodbury.apply(weights, coef, g, s)


def pair_weights(numer: Tensor, lam: Tensor) -> tuple[Tensor, Tensor]:
    """The real weights (H, 8, M) [α = 2 Re v; β = −2 Re(v λ̄)] of the pair sums and the coefficients (H, M, 3)
    [1, −2 Re λ, |λ|²] of D, from numerators (4, H, M) and modes λ (H, M)."""
    alpha = 2 * numer.real
    beta = -2 * (numer * lam.conj()).real
    weights = torch.cat([alpha, beta]).permute(1, 0, 2).contiguous()
    ones = torch.ones_like(lam.real)
    coef = torch.stack([ones, -2 * lam.real, lam.real.square() + lam.imag.square()], dim=-1)
    return weights, coef


def fused_kernels_usable(g: Tensor) -> bool:
    """Whether the generating function runs as `cauchy_fused`'s Triton kernels: on CUDA in float32 where
    Triton imports and its kernels build on this machine, unless S5CLI_FUSED_CAUCHY=0 or inside
    `matmul_form()`. The CPU keeps the matmul form."""
    if g.device.type != "cuda" or g.dtype != torch.complex64 or _matmul_form_forced:
        return False
    if os.environ.get(FUSED_ENV, "1") == "0" or not _triton_importable():
        return False
    return fused_kernels_work(g.device)


@functools.cache
def fused_kernels_work(device: torch.device) -> bool:
    """Run both kernels once on a tiny problem on `device`; on failure warn once and keep the matmul form.

    Why: on first use Triton builds a small C launcher with the machine's C compiler and assembles the
    kernels for the GPU; a slim container without a compiler, or a GPU its build does not support, fails
    there. A training run should then lose speed, not stop. Errors of a later, real call are not caught:
    they would be bugs, not the environment.
    """
    from s5cli.models import cauchy_fused

    try:
        weights = torch.zeros(1, cauchy_fused.SUMS, 32, device=device)
        coef = torch.tensor([1.0, 2.0, 1.0], device=device).expand(1, 32, 3)  # D = (g + s)² = 4 at g = s = 1
        g = torch.ones(1, 4, dtype=torch.complex64, device=device)
        out = cauchy_fused.generating_function(weights, coef, g, g[0])
        cauchy_fused.generating_function_backward(out, weights, coef, g, g[0])
    except Exception as error:  # any failure to build or launch: the environment, see above
        warnings.warn(f"s5cli: the fused Triton kernels for the S4 kernel cannot run on {device} "
                      f"({type(error).__name__}: {first_line(error)[:200]}); using the slower matmul form "
                      f"(set {FUSED_ENV}=0 to skip this attempt)", RuntimeWarning, stacklevel=2)
        return False
    return True


@contextlib.contextmanager
def matmul_form() -> Iterator[None]:
    """Run the matmul form below even where the fused kernels are usable (`--stage kernel` times both)."""
    global _matmul_form_forced
    previous, _matmul_form_forced = _matmul_form_forced, True
    try:
        yield
    finally:
        _matmul_form_forced = previous


@functools.cache
def _triton_importable() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _chunks(freqs: int, channels: int, modes: int, device_type: str = "cpu") -> list[slice]:
    """Slices of the frequency axis of ~CHUNK_ELEMENTS each (CUDA_CHUNK_ELEMENTS off the CPU), at least
    MIN_CHUNK_FREQUENCIES wide (see above)."""
    per_frequency = max(channels * modes, 1)
    elements = CHUNK_ELEMENTS if device_type == "cpu" else CUDA_CHUNK_ELEMENTS
    step = max(1, min(freqs, max(elements // per_frequency, MIN_CHUNK_FREQUENCIES)))
    return [slice(i, i + step) for i in range(0, freqs, step)]


def _interleaved(z: Tensor) -> Tensor:
    """(…, F) complex → (…, 2F) real with (re, im) adjacent: the layout complex matmuls over F need."""
    return torch.view_as_real(z.resolve_conj().contiguous()).flatten(-2)


def _as_complex(x: Tensor) -> Tensor:
    """Inverse of `_interleaved` for a contiguous (…, 2F) real tensor."""
    return torch.view_as_complex(x.unflatten(-1, (-1, 2)))


def _powers(g: Tensor, s: Tensor) -> Tensor:
    """(H, 3, F): g², gs and s², the terms D is a real-weighted sum of. Built per chunk, never kept."""
    return torch.stack([g * g, g * s, (s * s).expand_as(g)], dim=1)


def _resolvents(coef: Tensor, powers: Tensor) -> Tensor:
    """R = 1/D (H, M, F) complex, D = g² + coef₁·gs + coef₂·s² per mode (one batched matmul, K = 3)."""
    denominator = _as_complex(torch.bmm(coef, _interleaved(powers)))
    return denominator.reciprocal_()


def _pair_sums(weights: Tensor, resolvents: Tensor) -> Tensor:
    """(H, 8, F) complex: Σ_m α_km R_m (rows 0-3) and Σ_m β_km R_m (rows 4-7), one real batched matmul."""
    return _as_complex(torch.bmm(weights, _interleaved(resolvents)))


def _woodbury(sums: Tensor, g: Tensor, s: Tensor) -> Tensor:
    """k̂ (H, F) from the pair sums: k = g·A + s·B per numerator, then the rank-1 Woodbury correction."""
    k = g[:, None, :] * sums[:, :4] + s * sums[:, 4:]
    return k[:, 0] - s * k[:, 1] * k[:, 2] / (1 + s * k[:, 3])


class _PairCauchyWoodbury(torch.autograd.Function):
    """k̂ = Woodbury(g·(W_α R) + s·(W_β R)), R = 1/(coef · (g², gs, s²)); saves only its (small) inputs."""

    @staticmethod
    def forward(ctx, weights: Tensor, coef: Tensor, g: Tensor, s: Tensor) -> Tensor:
        ctx.save_for_backward(weights, coef, g, s)
        if fused_kernels_usable(g):
            from s5cli.models import cauchy_fused

            return cauchy_fused.generating_function(weights, coef, g, s)
        return _PairCauchyWoodbury._forward(weights, coef, g, s)

    @staticmethod
    def _forward(weights: Tensor, coef: Tensor, g: Tensor, s: Tensor) -> Tensor:
        """The matmul form's k̂, chunk by chunk (the twin of `_backward`; benchmarks and tests call both)."""
        out = g.new_empty(g.shape)
        for f in _chunks(g.shape[1], *coef.shape[:2], g.device.type):
            out[:, f] = _woodbury(_pair_sums(weights, _resolvents(coef, _powers(g[:, f], s[f]))), g[:, f], s[f])
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        weights, coef, g, s = ctx.saved_tensors
        if fused_kernels_usable(g):
            from s5cli.models import cauchy_fused

            return (*cauchy_fused.generating_function_backward(grad_out, weights, coef, g, s), None)
        with torch.autocast(g.device.type, enabled=False):
            return _PairCauchyWoodbury._backward(grad_out, weights, coef, g, s)

    @staticmethod
    def _backward(grad_out: Tensor, weights: Tensor, coef: Tensor, g: Tensor, s: Tensor) -> tuple[Tensor | None, ...]:
        grad_weights = torch.zeros_like(weights)
        grad_coef = torch.zeros_like(coef)
        grad_g = torch.empty_like(g)
        for f in _chunks(g.shape[1], *coef.shape[:2], g.device.type):
            g_chunk, s_chunk = g[:, f], s[f]
            powers = _powers(g_chunk, s_chunk)
            resolvents = _resolvents(coef, powers)
            flat_r = _interleaved(resolvents)
            # The (H, 8, F) → (H, F) tail is small: let autograd differentiate it.
            with torch.enable_grad():
                sums = _pair_sums(weights, resolvents).detach().requires_grad_()
                g_leaf = g_chunk.detach().requires_grad_()
                grad_sums, grad_g_tail = torch.autograd.grad(_woodbury(sums, g_leaf, s_chunk), (sums, g_leaf),
                                                             grad_out[:, f])
            # Real weights: ∂L/∂W_km = Re Σ_f ∂L/∂sums_kf · conj(R_mf), a real matmul of the interleaved views.
            grad_weights += torch.bmm(_interleaved(grad_sums), flat_r.transpose(1, 2))
            # P = conj(∂L/∂R)·R² = −conj(∂L/∂D), since ∂R/∂D = −R² (holomorphic).
            product = _as_complex(torch.bmm(weights.transpose(1, 2), _interleaved(grad_sums.conj())))
            resolvents.mul_(resolvents)
            product.mul_(resolvents)
            flat_p = _interleaved(product)
            # D = Σ_j coef_j·powers_j with real coef: ∂L/∂powers_j = Σ_m coef_mj ∂L/∂D_m = −conj(Σ_m coef_mj P_m),
            # ∂L/∂coef_mj = Re Σ_f ∂L/∂D_mf · conj(powers_jf) = −Re Σ_f P_mf · powers_jf.
            grad_powers = -_as_complex(torch.bmm(coef.transpose(1, 2), flat_p)).conj()
            grad_coef -= torch.bmm(flat_p, _interleaved(powers.conj()).transpose(1, 2))
            # powers = (g², g·s, s²): ∂L/∂g = ∂L/∂(g²)·conj(2g) + ∂L/∂(gs)·conj(s) (s is a constant).
            grad_g[:, f] = grad_g_tail + grad_powers[:, 0] * (2 * g_chunk).conj() + grad_powers[:, 1] * s_chunk.conj()
            # Free this chunk's (H, M, F) buffers now: otherwise they live on while the next chunk's are built.
            del resolvents, flat_r, product, flat_p
        return grad_weights, grad_coef, grad_g, None
