"""The FFT convolution of S4 layers: sizes, inference blocks, and a training backward equal to autograd's."""

from __future__ import annotations

import pytest
import torch

from s5cli.models import fft_conv


@pytest.mark.parametrize(("n", "expected"), [(1, 1), (7, 8), (23_640, 24_000), (4097, 4320)])
def test_fft_size_is_smallest_5_smooth(n: int, expected: int) -> None:
    assert fft_conv.fft_size(n) == expected


def test_inference_convolution_in_channel_blocks_equals_the_full_width_one(monkeypatch) -> None:
    torch.manual_seed(0)
    u, k = torch.randn(2, 300, 40, dtype=torch.float64), torch.randn(40, 300, dtype=torch.float64)
    full = fft_conv.causal_fft_conv(u.requires_grad_(), k).detach()  # autograd: one full-width FFT
    monkeypatch.setattr(fft_conv, "INFERENCE_FFT_BLOCK_BYTES", 2 * 301 * 16 * 7)  # blocks of 7 channels
    with torch.no_grad():
        blocked = fft_conv.causal_fft_conv(u, k)
    torch.testing.assert_close(blocked, full, rtol=1e-12, atol=1e-12)
    # One block wide enough for every channel: same numbers, and a contiguous output rather than a view
    # into the n-long inverse FFT (which the next op would copy again).
    monkeypatch.setattr(fft_conv, "INFERENCE_FFT_BLOCK_BYTES", 1 << 30)
    with torch.no_grad():
        single = fft_conv.causal_fft_conv(u, k)
    assert single.is_contiguous() and not full.is_contiguous()
    torch.testing.assert_close(single, full, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("blocks_of", [7, 40])
def test_transforms_with_channels_as_rows_give_the_same_convolution(monkeypatch, blocks_of: int) -> None:
    """The GPU layout (`transforms_as_rows`), forced on the CPU: inference in blocks and the training
    forward give the convolution of the CPU layout, and the same gradients (the backward is shared)."""
    torch.manual_seed(0)
    u, k = torch.randn(2, 300, 40, dtype=torch.float64), torch.randn(40, 150, dtype=torch.float64)
    with torch.no_grad():
        expected = fft_conv.causal_fft_conv(u, k)
    u_train, k_train = u.clone().requires_grad_(), k.clone().requires_grad_()
    y_expected = fft_conv.causal_fft_conv(u_train, k_train)
    y_expected.square().sum().backward()
    n = fft_conv.conv_fft_size(300, 150)
    monkeypatch.setattr(fft_conv, "transforms_as_rows", lambda device: True)
    monkeypatch.setattr(fft_conv, "INFERENCE_FFT_BLOCK_BYTES", 2 * (n // 2 + 1) * 16 * blocks_of)
    with torch.no_grad():
        rows = fft_conv.causal_fft_conv(u, k)
    assert rows.is_contiguous()
    torch.testing.assert_close(rows, expected, rtol=1e-12, atol=1e-12)
    u_rows, k_rows = u.clone().requires_grad_(), k.clone().requires_grad_()
    y_rows = fft_conv.causal_fft_conv(u_rows, k_rows)
    assert y_rows.stride(1) == 1  # time innermost, as before
    torch.testing.assert_close(y_rows, y_expected, rtol=1e-12, atol=1e-12)
    y_rows.square().sum().backward()
    torch.testing.assert_close(u_rows.grad, u_train.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(k_rows.grad, k_train.grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("length", "taps"), [(50, 50), (50, 25), (48, 1), (37, 20)])
def test_fft_convolution_with_a_truncated_kernel_equals_the_direct_sum(length: int, taps: int) -> None:
    """Padding to L + K − 1 (not 2L) is exactly enough: no output sees a wrapped-around input."""
    torch.manual_seed(0)
    u, k = torch.randn(2, length, 3, dtype=torch.float64), torch.randn(3, taps, dtype=torch.float64)
    direct = torch.zeros_like(u)
    for t in range(length):
        for j in range(min(taps, t + 1)):
            direct[:, t] += k[:, j] * u[:, t - j]
    torch.testing.assert_close(fft_conv.causal_fft_conv(u, k), direct, rtol=1e-10, atol=1e-10)
    spectrum = fft_conv.kernel_spectrum(k, length)
    with torch.no_grad():
        torch.testing.assert_close(fft_conv.causal_fft_conv(u, None, spectrum, taps), direct, rtol=1e-10, atol=1e-10)
    assert fft_conv.conv_fft_size(length, taps) >= length + taps - 1


@pytest.mark.parametrize(("shape", "dim", "n"), [((2, 30, 5), 1, 64), ((5, 30), -1, 60), ((2, 30, 5), 1, 30)])
def test_padded_rfft_gradient_is_autograds_bit_for_bit(shape: tuple[int, ...], dim: int, n: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(*shape, requires_grad=True)
    reference = torch.fft.rfft(x, n=n, dim=dim)
    ours = fft_conv.padded_rfft(x, n, dim)
    assert torch.equal(ours, reference)
    upstream = torch.randn_like(reference)
    (expected,) = torch.autograd.grad(reference, x, upstream)
    (got,) = torch.autograd.grad(ours, x, upstream)
    assert torch.equal(got, expected)


def _autograd_convolution(u: torch.Tensor, k: torch.Tensor, n: int) -> torch.Tensor:
    """The textbook training convolution, differentiated by autograd: the reference for the custom one."""
    k_f = torch.fft.rfft(k, n=n, dim=-1).transpose(0, 1)
    return torch.fft.irfft(torch.fft.rfft(u, n=n, dim=1) * k_f, n=n, dim=1)[:, : u.shape[1]]


@pytest.mark.parametrize(("batch", "length", "channels", "taps"), [(1, 200, 70, 200), (3, 120, 64, 60), (2, 90, 33, 1)])
@pytest.mark.parametrize("needs", ["both", "input only", "kernel only"])
def test_training_convolution_gradients_equal_autograds_bit_for_bit(
    batch: int, length: int, channels: int, taps: int, needs: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several channel blocks (32 channels each here) and a ragged last one; batch sums; frozen inputs."""
    torch.manual_seed(0)
    n = fft_conv.conv_fft_size(length, taps)
    monkeypatch.setattr(fft_conv, "BACKWARD_BLOCK_BYTES", batch * n * 8 * 32)
    u0, k0 = torch.randn(batch, length, channels), torch.randn(channels, taps)
    upstream = torch.randn(batch, length, channels)
    grads = []
    for convolve in (_autograd_convolution, lambda u, k, n: fft_conv.causal_fft_conv(u, k)):
        u = u0.clone().requires_grad_(needs != "kernel only")
        k = k0.clone().requires_grad_(needs != "input only")
        y = convolve(u, k, n)
        y.backward(upstream)
        grads.append((y.detach(), u.grad, k.grad))
    (y_ref, gu_ref, gk_ref), (y, gu, gk) = grads
    assert torch.equal(y, y_ref)
    # Time innermost in memory, as irfft's output: the ops after the convolution (GELU) see the same layout.
    assert y.stride(1) == 1 and y_ref.stride(1) == 1
    assert (gu is None) == (gu_ref is None) and (gk is None) == (gk_ref is None)
    assert gu is None or torch.equal(gu, gu_ref)
    assert gk is None or torch.equal(gk, gk_ref)


def test_padded_rfft_backward_in_channel_blocks_is_autograds_bit_for_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    x = torch.randn(70, 100, requires_grad=True)
    monkeypatch.setattr(fft_conv, "BACKWARD_BLOCK_BYTES", 256 * 8 * 32)
    upstream = torch.randn(70, 129, dtype=torch.complex64)
    (expected,) = torch.autograd.grad(torch.fft.rfft(x, n=256, dim=-1), x, upstream)
    (got,) = torch.autograd.grad(fft_conv.padded_rfft(x, 256, -1), x, upstream)
    assert torch.equal(got, expected)


def test_training_convolution_keeps_only_its_input_and_kernel_for_backward() -> None:
    """Autograd kept both zero-padded inputs and both spectra (~6 activations per layer, n ≈ 2L) until
    backward reached the layer; that and its full-width backward buffers were the training peak."""
    length, channels = 50, 6
    u = torch.randn(2, length, channels, requires_grad=True)
    k = torch.randn(channels, length, requires_grad=True)
    saved: list[tuple[int, ...]] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(tuple(t.shape)) or t, lambda t: t):
        y = fft_conv.causal_fft_conv(u, k)
    assert sorted(saved) == sorted([(2, length, channels), (channels, length)])
    y.square().sum().backward()
    assert u.grad is not None and k.grad is not None


def test_channel_blocks_off_the_cpu_are_wider_whole_multiples_of_32() -> None:
    # Sized for cache on the CPU; on a GPU for fewer launches (`block_bytes`). A meta tensor stands in for a
    # CUDA one: only its device type and shape are read.
    shape, n = (1, 11820, 1024), fft_conv.conv_fft_size(11820, 11820)
    on_cpu = fft_conv._channel_blocks(torch.empty(shape), 2, 1, n, complex_bytes=8)
    off_cpu = fft_conv._channel_blocks(torch.empty(shape, device="meta"), 2, 1, n, complex_bytes=8)
    assert len(off_cpu) * 4 <= len(on_cpu)
    for blocks in (on_cpu, off_cpu):
        assert all(width % fft_conv.BLOCK_CHANNEL_MULTIPLE == 0 for _, width in blocks)
        assert [start for start, _ in blocks] == list(range(0, 1024, blocks[0][1]))
    assert fft_conv.block_bytes(torch.device("cuda"), fft_conv.INFERENCE_FFT_BLOCK_BYTES) == fft_conv.CUDA_FFT_BLOCK_BYTES
    assert fft_conv.block_bytes(torch.device("cpu"), fft_conv.INFERENCE_FFT_BLOCK_BYTES) == fft_conv.INFERENCE_FFT_BLOCK_BYTES
