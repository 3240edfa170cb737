"""Causal FFT convolution of S4 layers, with a training backward that holds little memory.

An S4 layer convolves each of its H channels with a kernel as long as the sequence, through FFTs zero-padded
so that nothing wraps around. Three ways to run it:

* inference (no autograd): channel blocks whose spectra fit in cache, the product in place;
* training with a kernel in the time domain (every S4 layer): `_FftConvolution`, which keeps only the
  input and the kernel for backward and computes the gradients one block of channels at a time;
* training with a given spectrum: plain autograd (`padded_rfft` then `irfft`).

Why the custom training backward: autograd's version of `irfft(rfft(u) · rfft(k))[:L]` keeps both
zero-padded inputs and both spectra from the forward pass until backward reaches the layer (about six
activations' worth per layer, n ≈ 2L), and its backward builds full-width, n-long complex buffers. That was
the training peak of both S4 and S5. The blocks here do what autograd does, op for op: on this project's
CPU (MKL FFTs) blocks of a multiple of 32 channels give the same bits as the whole width, so training is
bitwise the same as before (the tests compare gradients bit for bit).
"""

from __future__ import annotations

import torch
from torch import Tensor

# `_fft_r2c` / `_fft_c2c` normalisation codes (ATen's fft_norm_mode): rfft's default norm ("backward") does
# not scale the forward transform, irfft's scales its inverse by 1/n.
_NORM_NONE, _NORM_BY_N = 0, 2


def fft_size(n: int) -> int:
    """Smallest 2^a·3^b·5^c ≥ n: pocketfft/cuFFT are fastest on such sizes, and it pads far less than 2^k."""
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            size = p35
            while size < n:
                size *= 2
            best = min(best, size)
            p35 *= 3
        p5 *= 5
    return best


# Without autograd, the FFT convolution runs over blocks of channels whose spectra take at most this many
# bytes: the full-width spectra (input, product and inverse, each ~2x the activation) were the largest
# transient buffers of an inference step; channel blocks give the same numbers with a fraction of the peak.
# 2 MiB rather than 16: a block's spectrum then stays in cache between the rfft, the product and the
# irfft; on this project's CPU (one thread) a 3000-token, 256-channel convolution took 9 ms instead of
# 18 and a 5910-token, 1024-channel one 93 ms instead of 144 (2-16 MiB measured, 2 best or near it).
INFERENCE_FFT_BLOCK_BYTES = 2 * 2**20
# On a GPU there is no cache to fit and every block costs its own launches (a paper-size inference step is
# bound by them): 32 MiB blocks, a few per layer at the paper's size, still below the full-width spectra.
# On an H200 a paper-size S4 inference step went from 11.7 to 3.9 ms with these (S5: 10.5 to 5.6 ms).
CUDA_FFT_BLOCK_BYTES = 32 * 2**20

# Working memory of one block of a training backward (its largest complex buffer), in whole multiples of 32
# channels: a ragged block split gave different last bits from the unblocked FFT (MKL). 2 MiB, not 8: with
# 8 MiB blocks the backward's two n-long buffers of one block were the largest live tensors of a
# default-size training step (S5 ~12 MiB of a 40 MiB peak, S4 ~15 of 50); 2 MiB blocks (at least 32
# channels) gave the same bits and no measurable slowdown.
BACKWARD_BLOCK_BYTES = 2 << 20
BLOCK_CHANNEL_MULTIPLE = 32


def block_bytes(device: torch.device, cpu_bytes: int) -> int:
    """A block's byte budget on `device`: `cpu_bytes` on the CPU (sized for its caches), CUDA_FFT_BLOCK_BYTES
    elsewhere, where launches, not caches, set the cost (at 2 MiB the first layer of a paper-size S4
    ran its training backward in 32 blocks of 32 channels, ~30 operator calls each)."""
    return cpu_bytes if device.type == "cpu" else max(cpu_bytes, CUDA_FFT_BLOCK_BYTES)


def conv_fft_size(length: int, kernel_length: int) -> int:
    """FFT size for a causal convolution of `length` inputs with `kernel_length` taps: ≥ L + K − 1, so nothing wraps.

    Why not 2L: S5's guide truncates its kernel to the decoder's kept length (K = L/2), and padding to
    what the linear convolution needs saves a quarter of the guide's FFT work.
    """
    return fft_size(length + kernel_length - 1)


def causal_fft_conv(u: Tensor, k: Tensor | None, k_f: Tensor | None = None, kernel_length: int | None = None) -> Tensor:
    """y_t = Σ_{j≤t} k_j u_{t−j} for u (B, L, H), k (H, K ≤ L); zero-padded to ≥ L + K − 1 so nothing wraps around.

    `k_f` is `kernel_spectrum(k, L)` when the caller already has it (a reused inference kernel); k may
    then be None and `kernel_length` must give K.
    """
    length = u.shape[1]
    n = conv_fft_size(length, k.shape[-1] if k is not None else kernel_length)
    grad_enabled = torch.is_grad_enabled()
    if k_f is None and grad_enabled and (u.requires_grad or k.requires_grad):
        return _FftConvolution.apply(u, k, n)
    if k_f is None:
        k_f = kernel_spectrum(k, length)
    if grad_enabled and (u.requires_grad or k_f.requires_grad):
        return torch.fft.irfft(padded_rfft(u, n, dim=1) * k_f, n=n, dim=1)[:, :length]
    # Without autograd, even a single block takes this path: the product in place, and a contiguous output
    # (the slice above would be a strided view into an n-long buffer, copied again by the next op).
    channels = u.shape[-1]
    budget = block_bytes(u.device, INFERENCE_FFT_BLOCK_BYTES)
    block = max(1, budget // max(1, u.shape[0] * (n // 2 + 1) * k_f.element_size()))
    blocks = [(start, min(block, channels - start)) for start in range(0, channels, block)]
    return _convolve_in_blocks(u, n, blocks, lambda part: k_f[:, part], u.new_empty(u.shape))


def _convolve_in_blocks(u: Tensor, n: int, blocks: list[tuple[int, int]], block_spectrum, out: Tensor) -> Tensor:
    """Write `irfft(rfft(u, n) · k_f, n)[:, :L]` into `out`, one (start, width) block of channels at a time.

    `block_spectrum(part)` gives the kernel spectrum (F, width) of the channels in `part`: a slice of a
    kept spectrum at inference, computed per block in training. The product is taken in place.

    On a GPU the transforms run with channels as rows (each signal contiguous), on the CPU along the
    sequence axis of (B, L, H). Why: cuFFT over contiguous signals of a (B, width, n) buffer is faster than
    over signals strided by the channel count, and the zero-padding copy makes that layout for free; on an
    H200 (paper size, inference, same numbers to the bit) the convolution of S4's first layer took 0.88
    instead of 1.09 ms, S5's 0.35 instead of 0.45 ms, its guide's 0.13 instead of 0.16 ms
    (benchmarks/profile_inference.py, `conv` in benchmarks/results/gpu-h200-v21/). On the CPU the rows
    were slower (S5's first layer at the paper size, two threads: 89 ms in one block against 34 ms in the
    CPU layout's 2 MiB blocks; one thread, both in blocks: 105 against 77 ms), and CPU training must stay
    bitwise as it was.
    """
    length = u.shape[1]
    rows = transforms_as_rows(u.device)
    for start, width in blocks:
        part = slice(start, start + width)
        if rows:
            u_f = torch.fft.rfft(u[..., part].transpose(1, 2), n=n, dim=-1)  # (B, width, F), contiguous
            u_f.mul_(block_spectrum(part).transpose(0, 1))
            out[..., part] = torch.fft.irfft(u_f, n=n, dim=-1)[..., :length].transpose(1, 2)
            continue
        u_f = torch.fft.rfft(u[..., part], n=n, dim=1)
        u_f.mul_(block_spectrum(part))
        out[..., part] = torch.fft.irfft(u_f, n=n, dim=1)[:, :length]
    return out


def transforms_as_rows(device: torch.device) -> bool:
    """Whether `_convolve_in_blocks` runs its FFTs with channels as rows on `device` (GPUs: yes)."""
    return device.type != "cpu"


def kernel_spectrum(k: Tensor, length: int) -> Tensor:
    """rfft of a (H, K ≤ L) kernel at the FFT size `causal_fft_conv` uses for inputs of `length`: (F, H)."""
    n = conv_fft_size(length, k.shape[-1])
    if torch.is_grad_enabled() and k.requires_grad:
        return padded_rfft(k, n, dim=-1).transpose(0, 1)
    return _kernel_rfft(k, n)


def _kernel_rfft(k: Tensor, n: int) -> Tensor:
    """Spectrum (F, H) of (H, K) kernels at FFT size n, frequency-major like the inputs' (B, F, H) spectra."""
    return torch.fft.rfft(k, n=n, dim=-1).transpose(0, 1)


def padded_rfft(x: Tensor, n: int, dim: int) -> Tensor:
    """`torch.fft.rfft(x, n=n, dim=dim)` (zero-padded to n ≥ x.shape[dim]) that keeps nothing for backward.

    Autograd's rfft saves its zero-padded input although its gradient needs only that input's shape, and
    builds that gradient from a zero-filled, n-long complex copy of the whole incoming gradient; here
    nothing is saved and the backward runs in channel blocks (same ops, same bits: see the module doc).
    """
    return _PaddedRfft.apply(x, n, dim)


class _PaddedRfft(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, n: int, dim: int) -> Tensor:
        ctx.n, ctx.dim, ctx.length = n, dim % x.dim(), x.shape[dim]
        return torch.fft.rfft(x, n=n, dim=dim)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        if ctx.length == ctx.n or grad.dim() < 2:  # nothing to cut off: autograd's formula as it is
            return _inverse_of_zero_filled(grad, ctx.dim, ctx.n).real, None, None
        axis = grad.dim() - 1 if ctx.dim != grad.dim() - 1 else 0  # the channel axis: never the transformed one
        shape = list(grad.shape)
        shape[ctx.dim] = ctx.length
        out = torch.empty(shape, dtype=grad.real.dtype, device=grad.device)
        for start, width in _channel_blocks(grad, axis, ctx.dim, ctx.n):
            out.narrow(axis, start, width).copy_(
                _rfft_input_gradient(grad.narrow(axis, start, width), ctx.dim, ctx.n, ctx.length)
            )
        return out, None, None


class _FftConvolution(torch.autograd.Function):
    """`irfft(rfft(u, n) · rfft(k, n)ᵀ, n)[:, :L]` for u (B, L, H) and k (H, K), keeping only u and k.

    Backward recomputes the two spectra one block of channels at a time (one rfft each more than
    autograd) and applies autograd's own formulas to each block: the sliced output's zero-filled gradient,
    irfft's backward (a scaled rfft, inner bins doubled), the product's (a conjugate product each way, the
    kernel's summed over the batch) and rfft's (an inverse complex FFT of the zero-filled spectrum).

    On CPU the forward runs in the same channel blocks. Why: MKL's transforms along the sequence axis of a
    (B, n, H) buffer slow down 2-3x when H is 128 or 256 (the power-of-two row stride maps every row to the
    same cache sets; one thread, n = 6000: rfft + irfft of 256 channels 17.5 ms at full width, 7.6 ms in
    blocks of 32). Blocks of a multiple of 32 channels give the same bits as the full width (r2c, c2r, the
    kernel's rfft: checked). On CUDA one full-width block: cuFFT prefers large batches.
    """

    @staticmethod
    def forward(ctx, u: Tensor, k: Tensor, n: int) -> Tensor:
        ctx.n = n
        ctx.save_for_backward(u, k)
        batch, length, channels = u.shape
        # Channel-first memory, as the full-width irfft returned it: the elementwise ops after the
        # convolution (the D skip, GELU) then see the same layout, and vectorised GELU's last bits depend on it.
        out = u.new_empty(batch, channels, length).transpose(1, 2)
        blocks = [(0, channels)]  # CUDA: cuFFT prefers one large batch
        if u.device.type == "cpu":
            blocks = _channel_blocks(u, 2, 1, n, complex_bytes=2 * u.element_size())
        return _convolve_in_blocks(u, n, blocks, lambda part: _kernel_rfft(k[part], n), out)

    @staticmethod
    def backward(ctx, grad_y: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        u, k = ctx.saved_tensors
        n = ctx.n
        batch, length, _ = u.shape
        taps, bins = k.shape[-1], n // 2 + 1
        need_u, need_k = ctx.needs_input_grad[:2]
        grad_u = torch.empty_like(u, memory_format=torch.contiguous_format) if need_u else None
        grad_k = torch.empty_like(k, memory_format=torch.contiguous_format) if need_k else None
        for start, width in _channel_blocks(u, 2, 1, n, complex_bytes=2 * u.element_size()):
            part = slice(start, start + width)
            padded = grad_y.new_zeros(batch, n, width)
            padded[:, :length] = grad_y[..., part]
            grad_product = torch.ops.aten._fft_r2c(padded, [1], _NORM_BY_N, True)
            del padded
            grad_product.narrow(1, 1, n - bins).mul_(2)
            if need_u:
                k_f = _kernel_rfft(k[part], n)
                grad_u[..., part] = _rfft_input_gradient(grad_product * k_f.conj(), 1, n, length)
                del k_f
            if need_k:
                u_f = torch.fft.rfft(u[..., part], n=n, dim=1)
                grad_k_f = (grad_product * u_f.conj()).sum(0, keepdim=True).squeeze(0)
                del u_f
                grad_k[part] = _rfft_input_gradient(grad_k_f.transpose(0, 1), 1, n, taps)
        return grad_u, grad_k, None


def _channel_blocks(x: Tensor, axis: int, dim: int, n: int, complex_bytes: int | None = None) -> list[tuple[int, int]]:
    """(start, width) blocks along `axis` whose n-long complex buffers take ~BACKWARD_BLOCK_BYTES each (more
    on a GPU: `block_bytes`)."""
    channels = x.shape[axis]
    element = complex_bytes or x.element_size()
    per_channel = max(1, x.numel() // max(1, channels * x.shape[dim]) * n * element)
    budget = block_bytes(x.device, BACKWARD_BLOCK_BYTES)
    block = max(1, budget // per_channel // BLOCK_CHANNEL_MULTIPLE) * BLOCK_CHANNEL_MULTIPLE
    return [(start, min(block, channels - start)) for start in range(0, channels, block)]


def _inverse_of_zero_filled(spectrum: Tensor, dim: int, n: int) -> Tensor:
    """Unnormalised inverse complex FFT along `dim` of the one-sided spectrum zero-filled to n bins."""
    shape = list(spectrum.shape)
    shape[dim] = n
    full = spectrum.new_zeros(shape)
    full.narrow(dim, 0, spectrum.shape[dim]).copy_(spectrum)
    return torch.ops.aten._fft_c2c(full, [dim], _NORM_NONE, False)


def _rfft_input_gradient(grad: Tensor, dim: int, n: int, length: int) -> Tensor:
    """Gradient of rfft's first `length` inputs from the gradient of its one-sided spectrum (autograd's
    fft_r2c_backward, padding cut off): a strided view, which every caller copies once into its contiguous
    output block (as constant_pad_nd's backward returns a new contiguous tensor)."""
    return _inverse_of_zero_filled(grad, dim, n).real.narrow(dim, 0, length)
