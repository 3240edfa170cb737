"""Where an S5 inference step spends its time, stage by stage, next to S4's (issue 6: S5 vs S4 on a GPU).

    python benchmarks/profile_inference.py                       # default size on the CPU, eager
    python benchmarks/profile_inference.py --device cuda --paper --json out.json
    python benchmarks/profile_inference.py --device cuda --fft-sizes    # which FFT sizes cuFFT runs fastest

Why: with CUDA graphs an H200 replays S5's paper-size inference step in 1.47 ms and S4's in 2.05 ms
(benchmarks/README.md, v20): 1.39x, the target is 1.5x. `s5 benchmark` times whole steps; this script
times S5's stages apart — the momentum guide's entry (LayerNorm over every token, then a quarter of the
channels), its SSM, the mask generator with the top-K, the decoder on the kept tokens — each captured as
its own CUDA graph on a GPU (eager on the CPU), plus a kernel table of both models from torch.profiler.
Variants of a stage that might be cheaper are timed beside it (`--variants`), so one borrowed-GPU call
says which change is worth making.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

# (channels, tokens, kernel taps) of the paper-size inference step's FFT convolutions: S5's guide, S5's first
# decoder block (the kept half), S4's first block.
PAPER_CONV_SHAPES = {"guide": (256, 11820, 5910), "s5_block0": (1024, 5910, 5910), "s4_block0": (1024, 11820, 11820)}


def build(label: str, frames: int, tokens_per_frame: int, dim: int, device: str, amp: bool, mode: str = "infer"):
    """The benchmark's model and input for `label` ("s5" | "s4" | "transformer"), for `mode` (infer | train)."""
    from s5cli.benchmark.workload import PreparedStep, Workload

    workload = Workload(label, mode, frames, tokens_per_frame, dim, 1, device=device, amp=amp)
    return PreparedStep(workload)


def timer(step: Callable[[], object], device: torch.device, repeats: int) -> dict:
    """Median and spread (ms) of `step`: replays of a CUDA graph of it on a GPU, eager calls on the CPU."""
    if device.type == "cuda":
        from s5cli.benchmark.cuda_graph import capture_step

        graph = capture_step(step, device)
        run = graph.replay
    else:
        run = step
    for _ in range(3):
        run()
    samples = []
    for _ in range(5):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(repeats):
                run()
            end.record()
            torch.cuda.synchronize(device)
            samples.append(start.elapsed_time(end) / repeats)
        else:
            began = time.perf_counter()
            for _ in range(repeats):
                run()
            samples.append((time.perf_counter() - began) * 1e3 / repeats)
    return {"ms": round(statistics.median(samples), 4), "min": round(min(samples), 4), "max": round(max(samples), 4)}


def fused_entry(guide, x: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    """Candidate: the LayerNorm's statistics over all channels, normalisation of the kept ones only.

    Reads the tokens as the LayerNorm's input, so it stands for the guide's entry only where the encoder is
    the identity (d_input == d_model, as in every benchmark model)."""
    if not isinstance(guide.encoder, torch.nn.Identity):
        raise ValueError("fused_entry needs d_input == d_model (no input projection)")
    var, mean = torch.var_mean(x, dim=-1, keepdim=True, correction=0)
    picked = x.index_select(-1, channels)
    scale = torch.rsqrt(var + guide.norm.eps)
    return (picked - mean).mul_(scale).mul_(guide.norm.weight[channels]).add_(guide.norm.bias[channels])


def s5_stages(step, repeats: int, variants: bool) -> dict:
    """Stage times of S5's inference step (same tensors the whole step uses)."""
    import s5cli.models.s5 as s5_module
    from s5cli.models.s4_kernels import sync_kernel_lengths
    from s5cli.models.selection import gumbel_topk

    model, tokens, device = step.model, step.tokens, step.device
    b, t, s, d = tokens.shape
    flat = tokens.reshape(b, t * s, d)
    k_total = model.tokens_kept(t, s)
    guide = model.guide
    channels = guide.channels
    results: dict = {}

    def ctx():
        return step._autocast()

    with torch.inference_mode():
        sync_kernel_lengths(guide.s4, model.decoder.blocks[0].s4)
        with ctx():
            entry = guide._entry(flat, channels)
            response = guide.s4.ssm(entry, channels, k_total, preselected=True)
            scores = model.mask_generator(response)
            chosen = model.select(tokens)

        def run_entry():
            with ctx():
                guide._entry(flat, channels)

        def run_ssm():
            with ctx():
                guide.s4.ssm(entry, channels, k_total, preselected=True)

        def run_scores():
            with ctx():
                model.mask_generator(response)

        def run_topk():
            rows = scores.view(b * t, s)
            log_probs = torch.log_softmax(rows, dim=-1)
            picked = gumbel_topk(log_probs, k_total // t, 1.0, False)
            model._flatten(picked.indices, b, t, s, True)

        def run_decoder():
            with ctx():
                model.head(model.decoder.forward_selected(flat, chosen.indices))

        def run_whole():
            with ctx():
                model(tokens)

        for name, fn in [("guide_entry", run_entry), ("guide_ssm", run_ssm), ("mask_generator", run_scores),
                         ("topk", run_topk), ("decoder_on_kept", run_decoder), ("whole_step", run_whole)]:
            results[name] = timer(fn, device, repeats)
        if variants:
            saved = s5_module.GUIDE_BLOCK_ELEMENTS, s5_module.CUDA_GUIDE_BLOCK_ELEMENTS
            try:
                s5_module.GUIDE_BLOCK_ELEMENTS = s5_module.CUDA_GUIDE_BLOCK_ELEMENTS = 1 << 40
                results["variant_guide_entry_one_block"] = timer(run_entry, device, repeats)
                results["variant_whole_one_block"] = timer(run_whole, device, repeats)
                s5_module.GUIDE_BLOCK_ELEMENTS = s5_module.CUDA_GUIDE_BLOCK_ELEMENTS = 1 << 21
                results["variant_whole_8mib_blocks"] = timer(run_whole, device, repeats)
            finally:
                s5_module.GUIDE_BLOCK_ELEMENTS, s5_module.CUDA_GUIDE_BLOCK_ELEMENTS = saved

            def run_fused():
                with ctx():
                    fused_entry(guide, flat, channels)

            with ctx():
                same = (fused_entry(guide, flat, channels) - entry).abs().max().item()
            results["variant_fused_entry"] = {**timer(run_fused, device, repeats), "max_abs_diff": same}
            triton_entry = load_triton_entry(device)
            if triton_entry is not None and isinstance(guide.encoder, torch.nn.Identity):
                for warps in (4, 8):
                    def run_triton(warps=warps):
                        triton_entry.fused_guide_entry(guide.norm, flat, channels, warps)

                    same = (triton_entry.fused_guide_entry(guide.norm, flat, channels, warps) - entry).abs().max().item()
                    results[f"variant_triton_entry_{warps}_warps"] = {**timer(run_triton, device, repeats),
                                                                      "max_abs_diff": same}
    return results


def load_triton_entry(device: torch.device):
    """benchmarks/triton_entry.py where its kernel can run: a GPU, or Triton's interpreter (tests); else None."""
    import importlib.util
    import os
    import sys
    from pathlib import Path

    if importlib.util.find_spec("triton") is None:
        return None
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return None
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import triton_entry

    return triton_entry


def channel_first_conv(u: torch.Tensor, spectrum: torch.Tensor, n: int) -> torch.Tensor:
    """Candidate: the inference convolution with channels as rows (cuFFT over contiguous signals).

    `spectrum` is (H, F), channel-major. One block of all channels (the candidate to compare with the
    32 MiB blocks of `causal_fft_conv`); the output is (B, L, H) contiguous like the current path's.
    """
    length = u.shape[1]
    u_f = torch.fft.rfft(u.transpose(1, 2), n=n, dim=-1)
    u_f.mul_(spectrum)
    y = torch.fft.irfft(u_f, n=n, dim=-1)
    return y[..., :length].transpose(1, 2).contiguous()


def conv_variants(device: torch.device, repeats: int) -> dict:
    """The inference FFT convolution at the three shapes of a paper-size step, current path vs candidates.

    Shapes: S5's guide (256 channels, 11,820 tokens, kernel 5,910), S5's first decoder block (1024 x 5,910)
    and S4's (1024 x 11,820); FFT sizes: the current smallest 2^a 3^b 5^c and the next power of two.
    """
    generator = torch.Generator(device="cpu").manual_seed(0)
    return {name: conv_row(*shape, generator, device, repeats) for name, shape in PAPER_CONV_SHAPES.items()}


def conv_row(channels: int, length: int, taps: int, generator: torch.Generator, device: torch.device,
             repeats: int) -> dict:
    """One shape of `conv_variants`."""
    from s5cli.models.fft_conv import causal_fft_conv, conv_fft_size, fft_size

    u = torch.randn(1, length, channels, generator=generator).to(device)
    k = torch.randn(channels, taps, generator=generator).to(device) / taps
    n = conv_fft_size(length, taps)
    row: dict = {"n": n}
    with torch.inference_mode():
        k_f = torch.fft.rfft(k, n=n, dim=-1)  # (H, F)
        reference = causal_fft_conv(u, None, k_f.transpose(0, 1), taps)
        row["current"] = timer(lambda: causal_fft_conv(u, None, k_f.transpose(0, 1), taps), device, repeats)
        candidate = channel_first_conv(u, k_f, n)
        row["channel_first"] = {**timer(lambda: channel_first_conv(u, k_f, n), device, repeats),
                                "max_abs_diff": (candidate - reference).abs().max().item()}
        for size in sorted({1 << (n - 1).bit_length(), fft_size(n + 1)}):
            spectrum = torch.fft.rfft(k, n=size, dim=-1)
            row[f"channel_first_n{size}"] = timer(lambda s=spectrum, z=size: channel_first_conv(u, s, z),
                                                  device, repeats)
    return row


def smooth_sizes(low: int, high: int, primes: tuple[int, ...] = (2, 3, 5, 7)) -> list[int]:
    """Every n in [low, high] whose prime factors are all in `primes` (cuFFT's fast radices)."""
    found = []
    for n in range(low, high + 1):
        rest = n
        for p in primes:
            while rest % p == 0:
                rest //= p
        if rest == 1:
            found.append(n)
    return found


def fft_size_sweep(device: torch.device, repeats: int, stretch: float = 1.4) -> dict:
    """Row-layout convolution time (ms) at every 7-smooth FFT size from the smallest that does not wrap
    to `stretch` times it, for the three shapes of `conv_variants`: which sizes cuFFT runs fastest."""
    from s5cli.models.fft_conv import conv_fft_size

    generator = torch.Generator(device="cpu").manual_seed(0)
    out: dict = {}
    for name, (channels, length, taps) in PAPER_CONV_SHAPES.items():
        u = torch.randn(1, length, channels, generator=generator).to(device)
        k = torch.randn(channels, taps, generator=generator).to(device) / taps
        low = length + taps - 1
        row = {"picked": conv_fft_size(length, taps), "ms": {}}
        with torch.inference_mode():
            for size in smooth_sizes(low, int(low * stretch)):
                spectrum = torch.fft.rfft(k, n=size, dim=-1)
                row["ms"][size] = timer(lambda s=spectrum, z=size, x=u: channel_first_conv(x, s, z),
                                        device, repeats)["ms"]
                del spectrum
        out[name] = row
    return out


def peak_memory(label: str, frames: int, tokens_per_frame: int, dim: int, amp: bool) -> dict:
    """CUDA peak of one eager inference step above the model and input (MiB): as configured, and for S5
    with the guide's entry in 8 MiB blocks (the CPU's size)."""
    import s5cli.models.s5 as s5_module

    results = {}
    for name, elements in [("current", s5_module.CUDA_GUIDE_BLOCK_ELEMENTS), ("8mib_guide_blocks", 1 << 21)]:
        saved = s5_module.CUDA_GUIDE_BLOCK_ELEMENTS
        s5_module.CUDA_GUIDE_BLOCK_ELEMENTS = elements
        try:
            torch.cuda.empty_cache()
            step = build(label, frames, tokens_per_frame, dim, "cuda", amp)
            step.run()
            step.synchronize()
            step.output = None
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            step.run()
            step.synchronize()
            results[name] = round((torch.cuda.max_memory_allocated() - base) / 2**20, 1)
            del step
        finally:
            s5_module.CUDA_GUIDE_BLOCK_ELEMENTS = saved
        if label != "s5":
            break
    return results


def s4_stages(step, repeats: int) -> dict:
    """S4's whole step and its first block (the full-length one) alone."""
    model, tokens, device = step.model, step.tokens, step.device
    b, t, s, d = tokens.shape
    flat = tokens.reshape(b, t * s, d)
    with torch.inference_mode():
        def run_first():
            with step._autocast():
                model.decoder.blocks[0](model.decoder.encoder(flat))

        def run_whole():
            with step._autocast():
                model(tokens)

        return {"first_block": timer(run_first, device, repeats), "whole_step": timer(run_whole, device, repeats)}


def kernel_table(step, rows: int) -> list[dict]:
    """The `rows` costliest device (or CPU) operators of five eager steps, from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    cuda = step.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    for _ in range(2):
        step.run()
    step.synchronize()
    with profile(activities=activities) as prof:
        for _ in range(5):
            step.run()
        step.synchronize()
    events = prof.key_averages()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    top = sorted(events, key=lambda e: getattr(e, key, 0), reverse=True)[:rows]
    return [{"name": e.key[:90], "calls_per_step": e.count / 5, "ms_per_step": round(getattr(e, key) / 5e3, 4)}
            for e in top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--paper", action="store_true", help="60 x 197 x 1024 (the three flags below ignored)")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--tokens-per-frame", type=int, default=50)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--no-variants", dest="variants", action="store_false")
    parser.add_argument("--json", help="write the results here as well")
    parser.add_argument("--train", action="store_true",
                        help="only the operator tables of S5's, S4's and the transformer's eager training steps")
    parser.add_argument("--fft-sizes", action="store_true",
                        help="only time the convolution at every 7-smooth FFT size up to 1.4x the smallest")
    args = parser.parse_args()
    frames, tokens_per_frame, dim = (60, 197, 1024) if args.paper else (args.frames, args.tokens_per_frame, args.dim)
    amp = args.device == "cuda"
    if args.device == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    out: dict = {"size": [frames, tokens_per_frame, dim], "device": args.device, "amp": amp,
                 "torch": torch.__version__}
    if args.device == "cuda":
        out["gpu"] = torch.cuda.get_device_name()
    if args.fft_sizes:
        out["fft_sizes"] = fft_size_sweep(torch.device(args.device), args.repeats)
        return finish(out, args.json)
    if args.train:
        for label in ("s5", "s4", "transformer"):
            out[f"{label}_train_kernels"] = kernel_table(build(label, frames, tokens_per_frame, dim, args.device, amp,
                                                               "train"), 40)
        return finish(out, args.json)
    s5 = build("s5", frames, tokens_per_frame, dim, args.device, amp)
    out["s5"] = s5_stages(s5, args.repeats, args.variants)
    out["s5_kernels"] = kernel_table(s5, 25)
    del s5
    s4 = build("s4", frames, tokens_per_frame, dim, args.device, amp)
    out["s4"] = s4_stages(s4, args.repeats)
    out["s4_kernels"] = kernel_table(s4, 25)
    del s4
    if args.device == "cuda" and args.variants:
        out["conv"] = conv_variants(torch.device("cuda"), args.repeats)
        out["peak_mib"] = {label: peak_memory(label, frames, tokens_per_frame, dim, amp) for label in ("s5", "s4")}
    finish(out, args.json)


def finish(out: dict, path: str | None) -> None:
    """Print the results as JSON and write them to `path` too."""
    text = json.dumps(out, indent=1)
    print(text)
    if path:
        with open(path, "w") as handle:
            handle.write(text)


if __name__ == "__main__":
    main()
