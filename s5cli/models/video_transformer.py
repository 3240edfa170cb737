"""Vanilla space-time video transformer over the same backbone tokens: the "vit" baseline of the benchmark.

Joint attention over all T·S tokens (cost O((T·S)²)), through `scaled_dot_product_attention` so it gets
the fastest attention kernel PyTorch has on the device — the baseline should be a fair, strong one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class VideoTransformerConfig:
    """Width, depth and heads of the space-time transformer, and the longest video it embeds positions for."""

    d_input: int = 1024
    d_model: int = 1024
    depth: int = 4
    heads: int = 16
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    max_frames: int = 1024
    max_tokens_per_frame: int = 256


class SpaceTimeBlock(nn.Module):
    """Pre-LN transformer block with joint space-time self-attention."""

    def __init__(self, config: VideoTransformerConfig):
        super().__init__()
        d = config.d_model
        self.heads = config.heads
        self.dropout = config.dropout
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        hidden = int(d * config.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.proj(attn.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


class VideoTransformer(nn.Module):
    """Input projection + spatial and temporal position embeddings + space-time blocks + mean pool + head."""

    # LSMCL then passes the frame slots of the tokens its masking kept (`token_index`): `encoder_features`.
    embeds_token_positions = True

    def __init__(self, config: VideoTransformerConfig, num_outputs: int):
        super().__init__()
        if config.d_model % config.heads:
            raise ValueError(f"d_model {config.d_model} must be divisible by heads {config.heads}")
        self.config = config
        self.embed = nn.Linear(config.d_input, config.d_model) if config.d_input != config.d_model else nn.Identity()
        self.time_embed = nn.Parameter(torch.zeros(config.max_frames, config.d_model))
        self.space_embed = nn.Parameter(torch.zeros(config.max_tokens_per_frame, config.d_model))
        nn.init.trunc_normal_(self.time_embed, std=0.02)
        nn.init.trunc_normal_(self.space_embed, std=0.02)
        self.blocks = nn.ModuleList(SpaceTimeBlock(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.d_model)
        self.feature_dim = config.d_model
        self.head = nn.Linear(config.d_model, num_outputs)

    def forward_features(self, tokens: Tensor, token_index: Tensor | None = None) -> Tensor:
        """(B, T, S, D) → (B, d_model). `token_index` (B, T, S): the slot in its frame each token came from,
        when some were removed (LSMCL's masking); without it token j of a frame is slot j."""
        b, t, s, _ = tokens.shape
        if t > self.config.max_frames or s > self.config.max_tokens_per_frame:
            raise ValueError(
                f"input has {t} frames x {s} tokens; this transformer embeds at most "
                f"{self.config.max_frames} x {self.config.max_tokens_per_frame}"
            )
        space = self.space_embed[None, :s] if token_index is None else self.space_embed[token_index]
        x = self.embed(tokens) + self.time_embed[:t, None] + space
        x = x.reshape(b, t * s, -1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x).mean(dim=1)

    def forward(self, tokens: Tensor) -> Tensor:
        """(B, T, S, D) → (B, num_outputs)."""
        return self.head(self.forward_features(tokens))
