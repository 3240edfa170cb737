"""`--stage kernel`: the S4 (DPLR, Cauchy) and S4D (Vandermonde) kernel generation and the FFT convolution,
timed alone and set against this machine's own limits measured in the same run.

Achieved rates use explicit operation models (documented at each `_cost_*`): FLOPs of the math as written,
and the bytes an *unfused* sequence of torch ops must at least move. Comparing the FLOP rate with the
measured matmul rate and the byte rate with the measured copy bandwidth says which limit a stage is
close to: a stage far from both has avoidable overhead; one near the copy bandwidth is memory-bound and
only fusion (fewer intermediates) would speed it up.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from s5cli.benchmark.measure import summarize

COMPLEX_MAC_FLOPS = 8  # (a+bi)(c+di) accumulated: 4 mul + 4 add
COMPLEX_RECIPROCAL_FLOPS = 7  # conj / |z|²: 2 mul, 1 add, 1 div, 2 mul (+ sign)


def _timer(fn: Callable[[], Any], repeat: int, warmup: int, sync: Callable[[], None]) -> list[float]:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - began)
    return times


def machine_limits(device: Any, repeat: int = 5) -> dict[str, Any]:
    """Measured float32 matmul GFLOP/s and device-memory copy GB/s on `device` (best of `repeat`)."""
    import torch

    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    n = 4096 if device.type == "cuda" else 1024
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    out = torch.empty(n, n, device=device)
    matmul = _timer(lambda: torch.mm(a, b, out=out), repeat, 2, sync)
    mebibytes = 256 if device.type == "cuda" else 64  # far beyond the last-level cache either way
    src = torch.randn(mebibytes * 2**20 // 4, device=device)
    dst = torch.empty_like(src)
    copy = _timer(lambda: dst.copy_(src), repeat, 2, sync)
    copy_bytes = 2 * src.numel() * src.element_size()  # one read + one write per element
    return {
        "matmul_gflops": 2 * n**3 / min(matmul) / 1e9,
        "matmul_size": n,
        "copy_gbps": copy_bytes / min(copy) / 1e9,
        "copy_bytes": copy_bytes,
    }


# Per (channel, mode, frequency) element of the DPLR kernel (see `s5cli/models/cauchy.py`). Forward:
# D = coef·(g², gs, s²) (a K = 3 real matmul: 12 FLOPs), R = 1/D, then the 8 real-weighted sums over modes
# (32 FLOPs); D is written, read + written by the in-place reciprocal, and read by the sums: 32 bytes.
_DPLR_FORWARD = (12 + COMPLEX_RECIPROCAL_FLOPS + 32, 8 + 16 + 8)
# Backward: the forward's D and R again, ∂/∂weights (32), conj(∂L/∂R) (32), R² and its product (2 x 6),
# ∂/∂powers and ∂/∂coef (12 each); bytes: D, R, the sums' reads, the product written, R² in place,
# the product scaled in place, both reductions' reads.
_DPLR_BACKWARD = (12 + COMPLEX_RECIPROCAL_FLOPS + 32 + 32 + 32 + 12 + 12 + 12, 8 + 16 + 8 + 8 + 8 + 16 + 24 + 8 + 8)


def _cost_dplr_kernel(h: int, modes: int, ell: int, backward: bool = False) -> tuple[float, float]:
    """Cauchy + Woodbury at F = ℓ/2+1 frequencies, both conjugate halves in one common-denominator pass
    (`_DPLR_FORWARD` per (channel, mode, frequency)), plus the inverse real FFT of length ℓ per channel;
    with `backward`, the hand-written backward's recompute and gradients too (`_DPLR_BACKWARD`) and the
    FFT's adjoint."""
    f = ell // 2 + 1
    per_flops, per_bytes = _DPLR_FORWARD
    ffts = 1
    if backward:
        per_flops, per_bytes, ffts = per_flops + _DPLR_BACKWARD[0], per_bytes + _DPLR_BACKWARD[1], 2
    flops = h * modes * f * per_flops + ffts * h * 2.5 * ell * math.log2(ell)
    bytes_moved = h * modes * f * per_bytes + ffts * h * (4 * 8 * f + 4 * ell)
    return flops, bytes_moved


def _cost_dplr_fused(h: int, modes: int, ell: int, backward: bool = False) -> tuple[float, float]:
    """The same FLOPs as `_cost_dplr_kernel`; bytes of the fused Triton kernels (`cauchy_fused.py`): R stays in
    registers, so per (channel, frequency) forward reads g and writes k̂ (16 bytes), backward reads the
    incoming gradient and g and writes grad g (24 bytes; its per-chunk partial sums are ~1/20 of that),
    plus the inverse FFT's bytes as there."""
    f = ell // 2 + 1
    flops, _ = _cost_dplr_kernel(h, modes, ell, backward)
    ffts = 2 if backward else 1
    bytes_moved = h * f * (16 + (24 if backward else 0)) + ffts * h * (4 * 8 * f + 4 * ell)
    return flops, bytes_moved


def kernel_cost(kind: str, h: int, modes: int, length: int, fused: bool) -> tuple[float, float]:
    """FLOPs and bytes of generating one kernel as `S4Layer.ssm` does on this device. Where the fused Triton
    kernels run, the whole-ssm row counts their bytes too: counting the matmul form's per-(channel, mode,
    frequency) terms there (~6 GB at the CUDA default size, never moved) put its rate above the copy limit."""
    if kind == "s4d":
        return _cost_s4d_kernel(h, modes, length)
    return _cost_dplr_fused(h, modes, length) if fused else _cost_dplr_kernel(h, modes, length)


def _cost_s4d_kernel(h: int, modes: int, length: int) -> tuple[float, float]:
    """Blocked Vandermonde: one real bmm (H, q, 2M) @ (H, 2M, r) with q·r ≥ L, plus H·M·(q + r) complex exps;
    bytes: the (H, L) float32 kernel written once (the factors are O(H·M·√L), negligible)."""
    block = max(1, math.isqrt(length))
    blocks = -(-length // block)
    flops = 2 * h * blocks * block * 2 * modes + h * modes * (block + blocks) * 20
    bytes_moved = 4 * h * blocks * block + 8 * h * modes * (block + blocks) * 2
    return flops, bytes_moved


def _cost_fft_conv(batch: int, h: int, length: int, n: int) -> tuple[float, float]:
    """rfft of u (B·H signals of n), rfft of k (H), pointwise complex product, irfft: 2.5·n·log2 n per real
    FFT; bytes: read u, write + read the spectrum of u and the product, write the n-long output, plus the
    kernel and its spectrum."""
    f = n // 2 + 1
    flops = (2 * batch + 1) * h * 2.5 * n * math.log2(n) + 6 * batch * h * f
    bytes_moved = 4 * batch * length * h + 4 * 8 * batch * h * f + 4 * batch * h * n + 4 * h * length + 16 * h * f
    return flops, bytes_moved


def _fresh(layer: Any) -> Any:
    """The layer with its inference kernel/spectrum cache dropped, so the next call generates the kernel."""
    layer.drop_reused_kernel()
    return layer


def _kernel_backward(layer: Any, length: int) -> None:
    """What a training step spends on the kernel: generate it with autograd on, then backpropagate into Λ, P, B, C, Δt."""
    import torch

    with torch.enable_grad():
        kernel = layer.kernel(length)
        torch.autograd.grad(kernel.sum(), list(layer.kernel_gen.parameters()))


def _dplr_kernel_stages(layer: Any, channels: int, modes: int, length: int, shape: str,
                        fused: bool) -> list[tuple[str, Callable[[], Any], tuple[float, float], str]]:
    """The DPLR kernel alone and with its backward. Where the fused Triton kernels run, these rows time them
    (with their own byte counts) and the matmul form's rows beside them say what they saved."""
    def generate() -> Any:
        return _fresh(layer).kernel(length)

    def with_backward() -> None:
        _kernel_backward(layer, length)

    matmul_rows = [("dplr kernel", generate, _cost_dplr_kernel(channels, modes, length), shape),
                   ("dplr kernel + backward", with_backward, _cost_dplr_kernel(channels, modes, length, True), shape)]
    if not fused:
        return matmul_rows
    return [("dplr kernel, fused", generate, _cost_dplr_fused(channels, modes, length), shape),
            ("dplr kernel + backward, fused", with_backward, _cost_dplr_fused(channels, modes, length, True), shape),
            *[(f"{name}, matmul form", _in_matmul_form(fn), cost, shape) for name, fn, cost, shape in matmul_rows]]


def _in_matmul_form(fn: Callable[[], Any]) -> Callable[[], Any]:
    from s5cli.models.cauchy import matmul_form

    def run() -> Any:
        with matmul_form():
            return fn()

    return run


@contextlib.contextmanager
def _without_native_stderr() -> Iterator[None]:
    """File descriptor 2 pointed at /dev/null for the block: silences what C++ code writes there (Python's
    own sys.stderr is flushed first, and nothing of ours writes inside)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _top_ops(fn: Callable[[], Any], count: int = 5) -> list[dict[str, Any]]:
    """The ops that took the most self time in one call (torch.profiler)."""
    import torch

    prof = torch.profiler.profile()
    with _without_native_stderr():  # torch 2.13's profiler logs "USDT: ... profiler_start" lines there
        prof.start()
    try:
        fn()
    finally:
        with _without_native_stderr():
            prof.stop()
    averages = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in averages) or 1
    return [{"op": e.key, "self_ms": e.self_cpu_time_total / 1000, "share": e.self_cpu_time_total / total,
             "calls": e.count} for e in averages[:count]]


def kernel_stage(*, channels: int, length: int, batch: int, d_state: int = 64, device: str = "cpu",
                 repeat: int = 5, warmup: int = 1, seed: int = 0, profile: bool = True) -> dict[str, Any]:
    """Time kernel generation, FFT convolution and the whole `ssm` for DPLR and S4D; rates vs machine limits."""
    import torch

    from s5cli.models.cauchy import fused_kernels_usable
    from s5cli.models.fft_conv import causal_fft_conv, conv_fft_size
    from s5cli.models.s4 import S4Config, S4Layer
    from s5cli.seeding import seed_everything

    seed_everything(seed, deterministic=False)
    dev = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    limits = machine_limits(dev)
    u = torch.randn(batch, length, channels, device=dev)
    n = conv_fft_size(length, length)
    modes = d_state // 2
    fused = fused_kernels_usable(torch.zeros((), dtype=torch.complex64, device=dev))
    rows: list[dict[str, Any]] = []
    with torch.no_grad():
        for kind, init in (("dplr", "legs"), ("s4d", "lin")):
            layer = S4Layer(S4Config(d_model=channels, d_state=d_state, kernel=kind, init=init)).to(dev)
            k = layer.kernel(length)  # fixes the DPLR internal length ℓ = L before timing
            cost = kernel_cost(kind, channels, modes, length, fused)
            # Layers reuse their kernel at inference while the parameters are unchanged; the stages time
            # what a step with fresh parameters does (every training step, and S5's guide after each update).
            kernel_shape = f"H={channels} N={d_state} L={length}"
            if kind == "dplr":
                stages = _dplr_kernel_stages(layer, channels, modes, length, kernel_shape, fused)
                stages.append(("fft conv", lambda k=k: causal_fft_conv(u, k),
                               _cost_fft_conv(batch, channels, length, n), f"B={batch} L={length} H={channels} n={n}"))
            else:
                stages = [(f"{kind} kernel", lambda layer=layer: _fresh(layer).kernel(length), cost, kernel_shape)]
            stages.append((f"{kind} ssm (kernel + fft conv)", lambda layer=layer: _fresh(layer).ssm(u),
                           tuple(a + b for a, b in zip(cost, _cost_fft_conv(batch, channels, length, n), strict=True)),
                           f"B={batch} L={length} H={channels}"))
            for name, fn, (flops, bytes_moved), shape in stages:
                times = _timer(fn, repeat, warmup, sync)
                best = min(times)
                # Rates from the best run, like the machine limits: on a shared machine the best run is
                # the one least disturbed by other work, so best against best compares like with like.
                gflops, gbps = flops / best / 1e9, bytes_moved / best / 1e9
                flop_share, byte_share = gflops / limits["matmul_gflops"], gbps / limits["copy_gbps"]
                rows.append({
                    "stage": name, "shape": shape, "seconds": summarize(times), "best_seconds": best,
                    "gflop": flops / 1e9, "gbytes": bytes_moved / 1e9, "gflops": gflops, "gbps": gbps,
                    "fraction_of_matmul": flop_share, "fraction_of_copy": byte_share,
                    "closer_to": "compute" if flop_share >= byte_share else "memory",
                    "profile": _top_ops(fn) if profile and dev.type == "cpu" else [],
                })
    return {"stage": "kernel", "device": str(dev), "channels": channels, "length": length, "batch": batch,
            "dplr_implementation": "fused Triton kernels" if fused else "matmul form",
            "d_state": d_state, "fft_size": n, "threads": torch.get_num_threads(), "limits": limits,
            "results": rows}


def render_kernel(report: dict[str, Any], console: Any) -> None:
    """Print the kernel-stage table with Rich."""
    from rich.table import Table

    from s5cli.benchmark.report import wide

    console = wide(console)
    limits = report["limits"]
    console.print(f"machine limits on {report['device']} ({report['threads']} threads): matmul {limits['matmul_gflops']:.1f} GFLOP/s "
                  f"(float32 {limits['matmul_size']}^2), copy {limits['copy_gbps']:.1f} GB/s")
    table = Table(title="S4 kernel stage", title_justify="left")
    for column in ("stage", "shape", "median", "best", "GFLOP/s", "% matmul", "GB/s", "% copy", "top op"):
        table.add_column(column, justify="left" if column in ("stage", "shape", "top op") else "right")
    for row in report["results"]:
        top = row["profile"][0] if row["profile"] else None
        table.add_row(
            row["stage"], row["shape"], f"{row['seconds']['median'] * 1000:.2f} ms",
            f"{row['best_seconds'] * 1000:.2f} ms", f"{row['gflops']:.1f}",
            f"{100 * row['fraction_of_matmul']:.0f}%", f"{row['gbps']:.1f}", f"{100 * row['fraction_of_copy']:.0f}%",
            f"{top['op']} {100 * top['share']:.0f}%" if top else "-",
        )
    console.print(table)
    console.print("GFLOP/s and GB/s: operation counts in s5cli/benchmark/kernel.py over the best run; a stage near "
                  "100% copy is memory-bound (only fewer intermediates help), near 100% matmul compute-bound.")
