"""Candidate for S5's guide entry on a GPU: LayerNorm statistics over every channel and the normalised guide
channels, in one Triton kernel per token (a `profile_inference.py` variant, not used by s5cli).

Why: at the paper size the entry (LayerNorm over 11,820 tokens x 1024 channels, then a quarter of the
channels) took 0.066 ms of an H200's 1.09 ms S5 inference step (benchmarks/README.md, v21), while reading
the tokens once and writing the quarter is ~60 MB, ~15 us at that GPU's copy rate; S5 vs S4 at batch 1
misses 1.5x by about that much. The torch form writes the full-width normalised tokens, then gathers; a
torch-only fusion (var_mean, then normalising the kept channels) was slower (0.093 ms). Here each program
reads one token's channels once for the statistics and again (from cache) for the kept ones.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _entry_kernel(x_ptr, weight_ptr, bias_ptr, channels_ptr, out_ptr, width, kept, eps,
                  BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr):
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK_D)
    mask = offs < width
    x = tl.load(x_ptr + row * width + offs, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=0) / width
    centred = tl.where(mask, x - mean, 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=0) / width + eps)
    picked = tl.arange(0, BLOCK_K)
    picked_mask = picked < kept
    channel = tl.load(channels_ptr + picked, mask=picked_mask, other=0)
    value = tl.load(x_ptr + row * width + channel, mask=picked_mask, other=0.0).to(tl.float32)
    weight = tl.load(weight_ptr + channel, mask=picked_mask, other=0.0)
    bias = tl.load(bias_ptr + channel, mask=picked_mask, other=0.0)
    tl.store(out_ptr + row * kept + picked, (value - mean) * rstd * weight + bias, mask=picked_mask)


def fused_guide_entry(norm: torch.nn.LayerNorm, x: torch.Tensor, channels: torch.Tensor,
                      num_warps: int = 4) -> torch.Tensor:
    """`norm(x)[..., channels]` as float32 (what the guide's entry gives under autocast) for x (B, L, D)."""
    b, length, width = x.shape
    x = x.contiguous()
    out = torch.empty(b, length, channels.numel(), dtype=torch.float32, device=x.device)
    _entry_kernel[(b * length,)](x, norm.weight.float().contiguous(), norm.bias.float().contiguous(),
                                 channels.contiguous(), out, width, channels.numel(), norm.eps,
                                 BLOCK_D=triton.next_power_of_2(width),
                                 BLOCK_K=triton.next_power_of_2(channels.numel()), num_warps=num_warps)
    return out
