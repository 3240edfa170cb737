"""The DPLR kernel's generating function as two fused Triton kernels (CUDA): forward and backward.

Why: `cauchy.py` evaluates the conjugate-pair Cauchy sums with batched matmuls over a materialised
(channels x modes x frequencies) resolvent R = 1/D. On a GPU that costs ~12 passes over R per training step
(built, reciprocal, summed; rebuilt, squared, multiplied, summed three ways in backward) and hundreds of
launches, and the matmuls have inner sizes of 3 and 8, far from what tensor cores or even cuBLAS's FMA
kernels are made for: on an H200 the paper-size S4 layer's kernel plus backward ran at 21 % of the copy
bandwidth and 2 % of the matmul rate, and it was most of S5's and S4's training step
(benchmarks/README.md, v22). Here one program owns one channel and a block of frequencies, builds its
(modes x frequencies) tile of R in registers, and reduces it at once: forward reads the small inputs and
writes k̂; backward writes grad g and per-chunk partial sums of the weight and coefficient gradients,
which torch adds up afterwards (a fixed order: no atomics, so the same inputs give the same bits).

The math is exactly `cauchy.py`'s (its docstring derives it), in float32, written out in real arithmetic:
D = c₀·g² + c₁·gs + c₂·s² per mode, the eight real-weighted mode sums of R, the Woodbury combination
k̂ = k₀ − s·k₁·k₂ / (1 + s·k₃) with k_j = g·Σα_j R + s·Σβ_j R, and for backward the conjugate-convention
gradients PyTorch uses for complex tensors (grad z = grad w · conj(dw/dz) for holomorphic w(z)).

Import this module only where Triton is installed (every Linux CUDA build of torch ships it). Tests run
the same kernels on the CPU in Triton's interpreter (TRITON_INTERPRET=1 set before the import).
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from torch import Tensor

# Frequencies per program in forward, per inner step in backward, and per backward program (one set of
# partial gradient sums per chunk: at the paper size's first S4 layer 24 chunks x 1024 channels x 11 x 32
# floats = 35 MB, freed when summed), and warps per program. Chosen on an H200 over the paper size's four
# layer shapes (benchmarks/README.md, v22; `python benchmarks/fused_cauchy.py --sweep` repeats it): backward
# 16 frequencies and 2 warps took 5.3 ms summed, the next best 5.9, the worst tried 12.1 (then with 1-D
# accumulators; see `_backward_kernel`); forward 64 and 2 warps 0.88 ms (the worst tried 22.4; 1 warp, 0.68,
# was seen after this choice was measured end to end and is left untried in a whole step).
FORWARD_BLOCK_F = 64
BACKWARD_BLOCK_F = 16
BACKWARD_CHUNK_F = 256
FORWARD_WARPS = 2
BACKWARD_WARPS = 2
SUMS = 8  # α and β rows of the four numerators (see cauchy.pair_weights)


@triton.jit
def _cmul(ar, ai, br, bi):
    return ar * br - ai * bi, ar * bi + ai * br


@triton.jit
def _cdiv(ar, ai, br, bi):
    scale = 1.0 / (br * br + bi * bi)
    return (ar * br + ai * bi) * scale, (ai * br - ar * bi) * scale


@triton.jit
def _points(g_ptr, s_ptr, h, F, offs_f, mask_f):
    """g (this channel) and s at the block's frequencies; 1 + 0i outside F, where D stays nonzero."""
    g_at = g_ptr + (h * F + offs_f) * 2
    gr = tl.load(g_at, mask=mask_f, other=1.0)
    gi = tl.load(g_at + 1, mask=mask_f, other=0.0)
    sr = tl.load(s_ptr + offs_f * 2, mask=mask_f, other=1.0)
    si = tl.load(s_ptr + offs_f * 2 + 1, mask=mask_f, other=0.0)
    return gr, gi, sr, si


@triton.jit
def _resolvents(c0, c1, c2, mask_m, p0r, p0i, p1r, p1i, p2r, p2i):
    """R = 1/D as a (modes, frequencies) tile, zero in the padding rows beyond M."""
    dr = c0[:, None] * p0r[None, :] + c1[:, None] * p1r[None, :] + c2[:, None] * p2r[None, :]
    di = c0[:, None] * p0i[None, :] + c1[:, None] * p1i[None, :] + c2[:, None] * p2i[None, :]
    norm = tl.where(mask_m[:, None], dr * dr + di * di, 1.0)  # padding rows: no division by zero
    scale = tl.where(mask_m[:, None], 1.0 / norm, 0.0)
    return dr * scale, -di * scale


@triton.jit
def _powers(gr, gi, sr, si):
    """g², g·s and s²: D is their real-weighted sum per mode."""
    p0r, p0i = _cmul(gr, gi, gr, gi)
    p1r, p1i = _cmul(gr, gi, sr, si)
    p2r, p2i = _cmul(sr, si, sr, si)
    return p0r, p0i, p1r, p1i, p2r, p2i


@triton.jit
def _coefficients(coef_ptr, h, M, offs_m, mask_m):
    """This channel's (1, −2 Re λ, |λ|²) per mode, as three vectors over modes (0 in the padding)."""
    coef_row = coef_ptr + (h * M + offs_m) * 3
    c0 = tl.load(coef_row, mask=mask_m, other=0.0)
    c1 = tl.load(coef_row + 1, mask=mask_m, other=0.0)
    c2 = tl.load(coef_row + 2, mask=mask_m, other=0.0)
    return c0, c1, c2


@triton.jit
def _weight_rows(w_ptr, h, M, offs_m, mask_m):
    """This channel's eight weight rows (α₀..α₃, β₀..β₃), each a vector over modes (0 in the padding)."""
    w_row = w_ptr + h * 8 * M + offs_m
    wa0 = tl.load(w_row + 0 * M, mask=mask_m, other=0.0)
    wa1 = tl.load(w_row + 1 * M, mask=mask_m, other=0.0)
    wa2 = tl.load(w_row + 2 * M, mask=mask_m, other=0.0)
    wa3 = tl.load(w_row + 3 * M, mask=mask_m, other=0.0)
    wb0 = tl.load(w_row + 4 * M, mask=mask_m, other=0.0)
    wb1 = tl.load(w_row + 5 * M, mask=mask_m, other=0.0)
    wb2 = tl.load(w_row + 6 * M, mask=mask_m, other=0.0)
    wb3 = tl.load(w_row + 7 * M, mask=mask_m, other=0.0)
    return wa0, wa1, wa2, wa3, wb0, wb1, wb2, wb3


@triton.jit
def _mode_sum(w, rr, ri):
    return tl.sum(w[:, None] * rr, axis=0), tl.sum(w[:, None] * ri, axis=0)


@triton.jit
def _numerator_sums(gr, gi, sr, si, ar, ai, br, bi):
    """k_j = g·(Σ α_j R) + s·(Σ β_j R)."""
    xr, xi = _cmul(gr, gi, ar, ai)
    yr, yi = _cmul(sr, si, br, bi)
    return xr + yr, xi + yi


@triton.jit
def _forward_kernel(w_ptr, coef_ptr, g_ptr, s_ptr, out_ptr, F, M,
                    BLOCK_M: tl.constexpr, BLOCK_F: tl.constexpr):
    h = tl.program_id(0)
    offs_f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    mask_f = offs_f < F
    offs_m = tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    gr, gi, sr, si = _points(g_ptr, s_ptr, h, F, offs_f, mask_f)
    p0r, p0i, p1r, p1i, p2r, p2i = _powers(gr, gi, sr, si)
    c0, c1, c2 = _coefficients(coef_ptr, h, M, offs_m, mask_m)
    rr, ri = _resolvents(c0, c1, c2, mask_m, p0r, p0i, p1r, p1i, p2r, p2i)
    wa0, wa1, wa2, wa3, wb0, wb1, wb2, wb3 = _weight_rows(w_ptr, h, M, offs_m, mask_m)
    a0r, a0i = _mode_sum(wa0, rr, ri)
    a1r, a1i = _mode_sum(wa1, rr, ri)
    a2r, a2i = _mode_sum(wa2, rr, ri)
    a3r, a3i = _mode_sum(wa3, rr, ri)
    b0r, b0i = _mode_sum(wb0, rr, ri)
    b1r, b1i = _mode_sum(wb1, rr, ri)
    b2r, b2i = _mode_sum(wb2, rr, ri)
    b3r, b3i = _mode_sum(wb3, rr, ri)
    k0r, k0i = _numerator_sums(gr, gi, sr, si, a0r, a0i, b0r, b0i)
    k1r, k1i = _numerator_sums(gr, gi, sr, si, a1r, a1i, b1r, b1i)
    k2r, k2i = _numerator_sums(gr, gi, sr, si, a2r, a2i, b2r, b2i)
    k3r, k3i = _numerator_sums(gr, gi, sr, si, a3r, a3i, b3r, b3i)
    # k̂ = k₀ − s·k₁·k₂ / (1 + s·k₃)
    dr, di = _cmul(sr, si, k3r, k3i)
    nr, ni = _cmul(sr, si, k1r, k1i)
    nr, ni = _cmul(nr, ni, k2r, k2i)
    qr, qi = _cdiv(nr, ni, 1.0 + dr, di)
    out_at = out_ptr + (h * F + offs_f) * 2
    tl.store(out_at, k0r - qr, mask=mask_f)
    tl.store(out_at + 1, k0i - qi, mask=mask_f)


@triton.jit
def _backward_kernel(grad_ptr, w_ptr, coef_ptr, g_ptr, s_ptr, grad_g_ptr, part_w_ptr, part_c_ptr,
                     F, M, n_chunks, CHUNK_F: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_F: tl.constexpr):
    h = tl.program_id(0)
    chunk = tl.program_id(1)
    offs_m = tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    c0, c1, c2 = _coefficients(coef_ptr, h, M, offs_m, mask_m)
    wa0, wa1, wa2, wa3, wb0, wb1, wb2, wb3 = _weight_rows(w_ptr, h, M, offs_m, mask_m)
    # The weight and coefficient gradients are sums over frequencies: accumulated as whole (modes x
    # frequencies) tiles and reduced across frequencies once per chunk, not once per inner step (11 fewer
    # cross-thread reductions per step; on the H200 the backward went from 5.3 to 3.8 ms over the four shapes).
    zero_tile = tl.zeros([BLOCK_M, BLOCK_F], dtype=tl.float32)
    acc_a0, acc_a1, acc_a2, acc_a3 = zero_tile, zero_tile, zero_tile, zero_tile
    acc_b0, acc_b1, acc_b2, acc_b3 = zero_tile, zero_tile, zero_tile, zero_tile
    acc_c0, acc_c1, acc_c2 = zero_tile, zero_tile, zero_tile
    for start in range(0, CHUNK_F, BLOCK_F):
        offs_f = chunk * CHUNK_F + start + tl.arange(0, BLOCK_F)
        mask_f = offs_f < F
        gr, gi, sr, si = _points(g_ptr, s_ptr, h, F, offs_f, mask_f)
        grad_at = grad_ptr + (h * F + offs_f) * 2
        Gr = tl.load(grad_at, mask=mask_f, other=0.0)
        Gi = tl.load(grad_at + 1, mask=mask_f, other=0.0)
        p0r, p0i, p1r, p1i, p2r, p2i = _powers(gr, gi, sr, si)
        rr, ri = _resolvents(c0, c1, c2, mask_m, p0r, p0i, p1r, p1i, p2r, p2i)
        a0r, a0i = _mode_sum(wa0, rr, ri)
        a1r, a1i = _mode_sum(wa1, rr, ri)
        a2r, a2i = _mode_sum(wa2, rr, ri)
        a3r, a3i = _mode_sum(wa3, rr, ri)
        # Σβ₀R is not needed: nothing in the gradients depends on k₀'s value.
        b1r, b1i = _mode_sum(wb1, rr, ri)
        b2r, b2i = _mode_sum(wb2, rr, ri)
        b3r, b3i = _mode_sum(wb3, rr, ri)
        k1r, k1i = _numerator_sums(gr, gi, sr, si, a1r, a1i, b1r, b1i)
        k2r, k2i = _numerator_sums(gr, gi, sr, si, a2r, a2i, b2r, b2i)
        k3r, k3i = _numerator_sums(gr, gi, sr, si, a3r, a3i, b3r, b3i)
        # ∂k̂/∂k₀ = 1, ∂k̂/∂k₁ = −s·k₂/d, ∂k̂/∂k₂ = −s·k₁/d, ∂k̂/∂k₃ = (s·k₁/d)(s·k₂/d), d = 1 + s·k₃.
        dr, di = _cmul(sr, si, k3r, k3i)
        dr = dr + 1.0
        x1r, x1i = _cmul(sr, si, k2r, k2i)
        e1r, e1i = _cdiv(-x1r, -x1i, dr, di)
        x2r, x2i = _cmul(sr, si, k1r, k1i)
        e2r, e2i = _cdiv(-x2r, -x2i, dr, di)
        e3r, e3i = _cmul(e1r, e1i, e2r, e2i)
        # grad k_j = G·conj(∂k̂/∂k_j); grad of Σα_j R is grad k_j·conj(g), of Σβ_j R grad k_j·conj(s).
        q1r, q1i = _cmul(Gr, Gi, e1r, -e1i)
        q2r, q2i = _cmul(Gr, Gi, e2r, -e2i)
        q3r, q3i = _cmul(Gr, Gi, e3r, -e3i)
        ga0r, ga0i = _cmul(Gr, Gi, gr, -gi)
        ga1r, ga1i = _cmul(q1r, q1i, gr, -gi)
        ga2r, ga2i = _cmul(q2r, q2i, gr, -gi)
        ga3r, ga3i = _cmul(q3r, q3i, gr, -gi)
        gb0r, gb0i = _cmul(Gr, Gi, sr, -si)
        gb1r, gb1i = _cmul(q1r, q1i, sr, -si)
        gb2r, gb2i = _cmul(q2r, q2i, sr, -si)
        gb3r, gb3i = _cmul(q3r, q3i, sr, -si)
        # k_j depends on g directly too: Σ_j grad k_j·conj(Σα_j R).
        t0r, t0i = _cmul(Gr, Gi, a0r, -a0i)
        t1r, t1i = _cmul(q1r, q1i, a1r, -a1i)
        t2r, t2i = _cmul(q2r, q2i, a2r, -a2i)
        t3r, t3i = _cmul(q3r, q3i, a3r, -a3i)
        tail_r = t0r + t1r + t2r + t3r
        tail_i = t0i + t1i + t2i + t3i
        # Weights are real: ∂L/∂w = Re Σ_f grad(sum)·conj(R).
        acc_a0 += ga0r[None, :] * rr + ga0i[None, :] * ri
        acc_a1 += ga1r[None, :] * rr + ga1i[None, :] * ri
        acc_a2 += ga2r[None, :] * rr + ga2i[None, :] * ri
        acc_a3 += ga3r[None, :] * rr + ga3i[None, :] * ri
        acc_b0 += gb0r[None, :] * rr + gb0i[None, :] * ri
        acc_b1 += gb1r[None, :] * rr + gb1i[None, :] * ri
        acc_b2 += gb2r[None, :] * rr + gb2i[None, :] * ri
        acc_b3 += gb3r[None, :] * rr + gb3i[None, :] * ri
        # P = (Σ_k w_k·conj(grad sum_k))·R² = −conj(∂L/∂D).
        qr = (wa0[:, None] * ga0r[None, :] + wa1[:, None] * ga1r[None, :] + wa2[:, None] * ga2r[None, :]
              + wa3[:, None] * ga3r[None, :] + wb0[:, None] * gb0r[None, :] + wb1[:, None] * gb1r[None, :]
              + wb2[:, None] * gb2r[None, :] + wb3[:, None] * gb3r[None, :])
        qi = -(wa0[:, None] * ga0i[None, :] + wa1[:, None] * ga1i[None, :] + wa2[:, None] * ga2i[None, :]
               + wa3[:, None] * ga3i[None, :] + wb0[:, None] * gb0i[None, :] + wb1[:, None] * gb1i[None, :]
               + wb2[:, None] * gb2i[None, :] + wb3[:, None] * gb3i[None, :])
        r2r, r2i = _cmul(rr, ri, rr, ri)
        pr, pi = _cmul(qr, qi, r2r, r2i)
        # ∂L/∂powers_j = −conj(Σ_m c_j P); ∂L/∂c_j = −Re Σ_f P·powers_j.
        gp0r = -tl.sum(c0[:, None] * pr, axis=0)
        gp0i = tl.sum(c0[:, None] * pi, axis=0)
        gp1r = -tl.sum(c1[:, None] * pr, axis=0)
        gp1i = tl.sum(c1[:, None] * pi, axis=0)
        acc_c0 -= pr * p0r[None, :] - pi * p0i[None, :]
        acc_c1 -= pr * p1r[None, :] - pi * p1i[None, :]
        acc_c2 -= pr * p2r[None, :] - pi * p2i[None, :]
        # powers = (g², g·s, s²): grad g += grad(g²)·conj(2g) + grad(gs)·conj(s).
        u0r, u0i = _cmul(gp0r, gp0i, 2.0 * gr, -2.0 * gi)
        u1r, u1i = _cmul(gp1r, gp1i, sr, -si)
        grad_g_at = grad_g_ptr + (h * F + offs_f) * 2
        tl.store(grad_g_at, tail_r + u0r + u1r, mask=mask_f)
        tl.store(grad_g_at + 1, tail_i + u0i + u1i, mask=mask_f)
    part_w = part_w_ptr + ((h * n_chunks + chunk) * 8) * M + offs_m
    tl.store(part_w + 0 * M, tl.sum(acc_a0, axis=1), mask=mask_m)
    tl.store(part_w + 1 * M, tl.sum(acc_a1, axis=1), mask=mask_m)
    tl.store(part_w + 2 * M, tl.sum(acc_a2, axis=1), mask=mask_m)
    tl.store(part_w + 3 * M, tl.sum(acc_a3, axis=1), mask=mask_m)
    tl.store(part_w + 4 * M, tl.sum(acc_b0, axis=1), mask=mask_m)
    tl.store(part_w + 5 * M, tl.sum(acc_b1, axis=1), mask=mask_m)
    tl.store(part_w + 6 * M, tl.sum(acc_b2, axis=1), mask=mask_m)
    tl.store(part_w + 7 * M, tl.sum(acc_b3, axis=1), mask=mask_m)
    part_c = part_c_ptr + ((h * n_chunks + chunk) * 3) * M + offs_m
    tl.store(part_c + 0 * M, tl.sum(acc_c0, axis=1), mask=mask_m)
    tl.store(part_c + 1 * M, tl.sum(acc_c1, axis=1), mask=mask_m)
    tl.store(part_c + 2 * M, tl.sum(acc_c2, axis=1), mask=mask_m)


def _real_view(z: Tensor) -> Tensor:
    """(…) complex64 → contiguous (…, 2) float32 storage the kernels index as (re, im) pairs."""
    return torch.view_as_real(z.resolve_conj().contiguous())


def _launch_device(device: torch.device) -> contextlib.AbstractContextManager:
    """Make `device` current for the launch: Triton launches on the current CUDA device, not the tensors'
    (a process driving a second GPU without `set_device` would otherwise point it at the wrong memory).
    CPU tensors (the interpreter in tests) need nothing."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _block_modes(modes: int) -> int:
    return max(2, triton.next_power_of_2(modes))


def generating_function(weights: Tensor, coef: Tensor, g: Tensor, s: Tensor) -> Tensor:
    """k̂ (H, F) complex64 from weights (H, 8, M), coef (H, M, 3) float32, g (H, F) and s (F,) complex64."""
    channels, sums, modes = weights.shape
    if sums != SUMS:
        raise ValueError(f"weights must have {SUMS} rows per channel, got {sums}")
    freqs = g.shape[1]
    out = torch.empty((channels, freqs), dtype=torch.complex64, device=g.device)
    grid = (channels, triton.cdiv(freqs, FORWARD_BLOCK_F))
    with _launch_device(g.device):
        _forward_kernel[grid](weights.contiguous(), coef.contiguous(), _real_view(g), _real_view(s),
                              torch.view_as_real(out), freqs, modes,
                              BLOCK_M=_block_modes(modes), BLOCK_F=FORWARD_BLOCK_F, num_warps=FORWARD_WARPS)
    return out


def generating_function_backward(grad_out: Tensor, weights: Tensor, coef: Tensor, g: Tensor,
                                 s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(grad weights (H, 8, M), grad coef (H, M, 3), grad g (H, F)) for `generating_function`."""
    channels, _, modes = weights.shape
    freqs = g.shape[1]
    chunks = triton.cdiv(freqs, BACKWARD_CHUNK_F)
    grad_g = torch.empty((channels, freqs), dtype=torch.complex64, device=g.device)
    part_w = torch.empty((channels, chunks, SUMS, modes), dtype=torch.float32, device=g.device)
    part_c = torch.empty((channels, chunks, 3, modes), dtype=torch.float32, device=g.device)
    with _launch_device(g.device):
        _backward_kernel[(channels, chunks)](
            _real_view(grad_out), weights.contiguous(), coef.contiguous(), _real_view(g), _real_view(s),
            torch.view_as_real(grad_g), part_w, part_c, freqs, modes, chunks,
            CHUNK_F=BACKWARD_CHUNK_F, BLOCK_M=_block_modes(modes), BLOCK_F=BACKWARD_BLOCK_F, num_warps=BACKWARD_WARPS)
    return part_w.sum(1), part_c.sum(1).transpose(1, 2), grad_g
