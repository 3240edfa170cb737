"""The DPLR generating function on a GPU: fused Triton kernels against the matmul form, at the paper's layer shapes.

    python benchmarks/fused_cauchy.py --json out.json            # both forms, forward and backward
    python benchmarks/fused_cauchy.py --sweep --json out.json    # the fused kernels' block sizes and warps

Why: the fused kernels (s5cli/models/cauchy_fused.py) replaced the matmul form on GPUs because that form
was most of a paper-size training step there (benchmarks/README.md, v22). This times both on the four
(channels, length) shapes a paper-size S5 or S4 step generates kernels for, each call timed with CUDA
events over back-to-back repeats (ms per call), and `--sweep` times the fused kernels under other block
sizes and warp counts, which is how the defaults in cauchy_fused.py were chosen.
"""

from __future__ import annotations

import argparse
import itertools
import json

import torch

# (channels, kernel length ℓ) of the DPLR kernels in a paper-size (60 x 197 x 1024) training step: S4's first
# layer, S5's first decoder layer (the kept half), S5's guide (a quarter of the channels) and the second layers.
PAPER_KERNEL_SHAPES = ((1024, 11820), (1024, 5910), (256, 5910), (512, 2955))


def kernel_inputs(channels: int, ell: int, device: str, seed: int = 0):
    """(weights, coef, g, s, incoming gradient) of a freshly initialised HiPPO-LegS DPLR layer, N = 64."""
    from s5cli.models.cauchy import pair_weights
    from s5cli.models.s4_kernels import DPLRKernel

    torch.manual_seed(seed)
    layer = DPLRKernel(channels, 64, "legs", 1e-3, 1e-1, None)
    layer.ensure_length(ell)
    with torch.no_grad():
        numer, lam, g, s = layer.to(device).generating_inputs(ell)
        weights, coef = pair_weights(numer, lam)
    return weights, coef, g, s, torch.randn_like(g)


def per_call_ms(fn, repeats: int) -> float:
    """Mean ms per call over `repeats` back-to-back calls after two warm-up calls (CUDA events)."""
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    torch.cuda.synchronize()
    return round(start.elapsed_time(end) / repeats, 4)


def compare_forms(repeats: int) -> dict:
    """Forward and backward of both forms per shape."""
    return {f"{channels}x{ell}": _both_forms(*kernel_inputs(channels, ell, "cuda"), repeats)
            for channels, ell in PAPER_KERNEL_SHAPES}


def _both_forms(weights, coef, g, s, grad, repeats: int) -> dict:
    from s5cli.models import cauchy, cauchy_fused

    matmul_form = cauchy._PairCauchyWoodbury
    row = {
        "matmul_forward": per_call_ms(lambda: matmul_form._forward(weights, coef, g, s), repeats),
        "matmul_backward": per_call_ms(lambda: matmul_form._backward(grad, weights, coef, g, s), repeats),
    }
    row["fused_forward"] = per_call_ms(lambda: cauchy_fused.generating_function(weights, coef, g, s), repeats)
    row["fused_backward"] = per_call_ms(
        lambda: cauchy_fused.generating_function_backward(grad, weights, coef, g, s), repeats)
    return row


def sweep(repeats: int) -> dict:
    """The fused kernels under other block sizes and warp counts (module settings restored afterwards)."""
    from s5cli.models import cauchy_fused as fused

    names = ("FORWARD_BLOCK_F", "FORWARD_WARPS", "BACKWARD_BLOCK_F", "BACKWARD_CHUNK_F", "BACKWARD_WARPS")
    saved = {name: getattr(fused, name) for name in names}
    inputs = [kernel_inputs(channels, ell, "cuda") for channels, ell in PAPER_KERNEL_SHAPES]
    out: dict = {"shapes": [f"{c}x{e}" for c, e in PAPER_KERNEL_SHAPES], "forward": {}, "backward": {}}
    try:
        for block, warps in itertools.product((32, 64, 128), (1, 2, 4, 8)):
            fused.FORWARD_BLOCK_F, fused.FORWARD_WARPS = block, warps
            out["forward"][f"block {block}, {warps} warps"] = [
                per_call_ms(lambda w=w, c=c, g=g, s=s: fused.generating_function(w, c, g, s), repeats)
                for w, c, g, s, _ in inputs]
        for block, chunk, warps in itertools.product((8, 16, 32), (128, 256, 512), (2, 4)):
            fused.FORWARD_BLOCK_F, fused.FORWARD_WARPS = saved["FORWARD_BLOCK_F"], saved["FORWARD_WARPS"]
            fused.BACKWARD_BLOCK_F, fused.BACKWARD_CHUNK_F, fused.BACKWARD_WARPS = block, chunk, warps
            out["backward"][f"block {block}, chunk {chunk}, {warps} warps"] = [
                per_call_ms(lambda w=w, c=c, g=g, s=s, grad=grad: fused.generating_function_backward(grad, w, c, g, s),
                            repeats)
                for w, c, g, s, grad in inputs]
    finally:
        for name, value in saved.items():
            setattr(fused, name, value)
    for direction in ("forward", "backward"):
        best = min(out[direction], key=lambda key: sum(out[direction][key]))
        out[f"best_{direction}"] = {"setting": best, "ms_summed": round(sum(out[direction][best]), 4)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", action="store_true", help="time the fused kernels' block sizes and warps")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", help="write the results here as well")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/fused_cauchy.py needs a CUDA GPU (the fused kernels run only there)")
    out = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
    out["sweep" if args.sweep else "forms"] = sweep(args.repeats) if args.sweep else compare_forms(args.repeats)
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as handle:
            handle.write(text)


if __name__ == "__main__":
    main()
