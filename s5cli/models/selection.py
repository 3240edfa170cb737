"""Differentiable top-K token selection: Gumbel-softmax with the straight-through trick (S5, paper eq. 4).

Forward pass: exactly K hard picks (weights exactly 1.0), so removing the unkept tokens changes no output.
Backward pass: gradients reach the scores through the relaxed weights K·softmax((log p + g)/τ), which is how
the mask generator learns which tokens matter although the selection itself is discrete. Because unkept
tokens are removed rather than multiplied by zero, only the kept tokens' weights receive a loss gradient;
an unkept token's score moves only through the softmax normaliser (see README, "Where s5cli differs").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class TopKSelection:
    """Indices (B, K) in increasing order (temporal order kept) and their straight-through weights (B, K)."""

    indices: Tensor
    weights: Tensor


def gumbel_noise(shape: torch.Size, like: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard Gumbel samples −log(−log U), with U kept away from 0 and 1 so the logs stay finite.

    Drawn on the generator's device and moved to `like`'s: a seeded CPU generator then gives the same draw
    whatever device the model runs on (CUDA's generator is another algorithm, and rejects CPU tensors).
    """
    u = draw_uniform(shape, like.device, generator, like.dtype)
    tiny = torch.finfo(like.dtype).tiny
    return -torch.log(-torch.log(u.clamp(tiny, 1 - 1e-7)))


def draw_uniform(shape: torch.Size | tuple[int, ...], device: torch.device, generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float32) -> Tensor:
    """U(0, 1) samples on `device`, drawn where `generator` lives (see `gumbel_noise`)."""
    source = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=source, dtype=dtype).to(device)


def gumbel_topk(
    log_probs: Tensor, k: int, tau: float = 1.0, training: bool = True, generator: torch.Generator | None = None
) -> TopKSelection:
    """Pick k of N items per row of log_probs (B, N): sampled (Gumbel) when training, deterministic at eval."""
    if not 1 <= k <= log_probs.shape[-1]:
        raise ValueError(f"k must be in [1, {log_probs.shape[-1]}], got {k}")
    if not training:
        indices = torch.topk(log_probs, k, dim=-1).indices.sort(dim=-1).values
        return TopKSelection(indices, torch.ones(indices.shape, dtype=log_probs.dtype, device=log_probs.device))
    perturbed = log_probs + gumbel_noise(log_probs.shape, log_probs, generator)
    soft = k * torch.softmax(perturbed / tau, dim=-1)
    indices = torch.topk(perturbed.detach(), k, dim=-1).indices.sort(dim=-1).values
    picked = soft.gather(-1, indices)
    # hard (=1) in the forward pass, d(soft) in the backward pass.
    return TopKSelection(indices, (picked - picked.detach()) + 1.0)  # (p − p) + 1 is exactly 1.0


def take_tokens(tokens: Tensor, indices: Tensor) -> Tensor:
    """tokens[b, indices[b]] for tokens (B, L, D) and indices (B, K): `tokens.gather(1, …)` as whole-row copies.

    One `index_select` over the flattened (B·L, D) rows copies each kept token as a block, where `gather`
    with an expanded index reads an index per element: 0.3 instead of 1.4 ms for 1500 of 3000 256-d tokens
    and 5 instead of 18 ms at the paper's size (one CPU thread). Same values (a copy).
    """
    b, length, d = tokens.shape
    return tokens.reshape(b * length, d).index_select(0, _flat_rows(indices, length)).view(b, indices.shape[1], d)


def _flat_rows(indices: Tensor, length: int) -> Tensor:
    """(B, K) per-video token indices → (B·K,) row numbers of the tokens flattened to (B·L, D)."""
    return (indices + torch.arange(indices.shape[0], device=indices.device)[:, None] * length).reshape(-1)


def _add_rows(grad: Tensor, like: Tensor, indices: Tensor) -> Tensor:
    """Inverse of `take_tokens` for gradients: a zero (B, L, D) tensor with grad's rows added at the indices."""
    b, length, d = like.shape
    out = torch.zeros_like(like)
    out.view(b * length, d).index_add_(0, _flat_rows(indices, length), grad.reshape(-1, d))
    return out


def gather_weighted(tokens: Tensor, indices: Tensor, weights: Tensor) -> Tensor:
    """tokens[b, indices[b]] · weights[b, :, None] for tokens (B, L, D), indices and weights (B, K).

    Same values and gradients as `tokens.gather(...) * weights[..., None]`, but the gathered (B, K, D) copy is
    not kept for the backward pass: autograd would store it to differentiate the weights, while the tokens
    it came from are alive anyway (the caller's input). At the paper's size that copy is 24 MB of S5's
    training peak; taking the rows again in backward costs one `take_tokens`.
    """
    return _GatherWeighted.apply(tokens, indices, weights)


class _GatherWeighted(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tokens: Tensor, indices: Tensor, weights: Tensor) -> Tensor:
        ctx.save_for_backward(tokens, indices, weights)
        return take_tokens(tokens, indices) * weights[..., None]

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, None, Tensor | None]:
        tokens, indices, weights = ctx.saved_tensors
        grad_tokens = grad_weights = None
        if ctx.needs_input_grad[2]:  # the op order of autograd's mul backward: (grad · kept) summed over D
            grad_weights = (grad_out * take_tokens(tokens, indices)).sum(-1)
        if ctx.needs_input_grad[0]:
            # Kept indices are distinct within a row, so every destination gets one addend onto zero: the
            # same numbers as gather's backward (scatter_add).
            grad_tokens = _add_rows(grad_out * weights[..., None], tokens, indices)
        return grad_tokens, None, grad_weights
