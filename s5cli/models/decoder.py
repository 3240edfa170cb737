"""ViS4mer's multi-scale temporal S4 decoder, and ViS4mer itself (the "s4" baseline).

Each block: pre-LayerNorm → S4 → dropout → residual → AvgPool1d(2) over the sequence → Linear(H → H/2) → GELU,
so sequence length and width halve per block; then a mean over the sequence. Tokens are flattened
frame-major (T·S), so pooling mostly merges neighbouring tokens of the same frame (see paper.md).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s5cli.models.s4 import S4Config, S4Layer
from s5cli.models.selection import take_tokens


@dataclass
class DecoderConfig:
    """ViS4mer decoder settings (defaults: the LVU setting, 1024-d ViT-L tokens)."""

    d_input: int = 1024
    d_model: int = 1024
    n_blocks: int = 3
    dropout: float = 0.2
    pool: int = 2
    d_state: int = 64
    kernel: str = "dplr"
    init: str = "legs"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    bidirectional: bool = False
    ssm_lr: float | None = 1e-3

    def s4_config(self, width: int) -> S4Config:
        """S4 settings of a block of the given width."""
        return S4Config(
            d_model=width, d_state=self.d_state, kernel=self.kernel, init=self.init, dt_min=self.dt_min,
            dt_max=self.dt_max, bidirectional=self.bidirectional, dropout=self.dropout, ssm_lr=self.ssm_lr,
        )

    @classmethod
    def subset(cls, config: object) -> DecoderConfig:
        """The decoder fields of a larger config (S5Config extends this one)."""
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})


class TiedSequenceDropout(nn.Dropout1d):
    """Dropout1d over (B, L, H): drops whole channels for the whole sequence, like ViS4mer's Dropout2d."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class DecoderBlock(nn.Module):
    """Pre-LN S4 residual block followed by temporal pooling and a width-halving projection."""

    def __init__(self, width: int, config: DecoderConfig):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.s4 = S4Layer(config.s4_config(width))
        self.dropout = TiedSequenceDropout(config.dropout)
        self.pool = nn.AvgPool1d(config.pool, ceil_mode=True) if config.pool > 1 else nn.Identity()
        self.down = nn.Linear(width, width // 2)

    def forward(self, x: Tensor) -> Tensor:
        """(B, L, H) → (B, ceil(L/pool), H/2)."""
        return self._shrink(x + self.dropout(self.s4(self.norm(x))))

    def forward_gathered(self, source: Tensor, indices: Tensor) -> Tensor:
        """`forward(take_tokens(source, indices))` without autograd, the gathered tokens held only briefly.

        Why: S5's decoder reads the kept rows of the caller's tokens. `forward` keeps that gathered copy
        alive through the S4 layer for the residual, which is the layer's memory peak; gathering it again
        for the residual costs one row copy (~0.2 ms at the benchmark's default size) and lowers S5's
        inference peak by the copy's size. Same numbers: the residual sum is the same two operands, summed
        into the float32 copy (under AMP `mixed` is bfloat16, and an in-place sum into it rounded the
        residual stream, which `forward`'s out-of-place `x + mixed` keeps in float32).
        """
        mixed = self.dropout(self.s4(self.norm(take_tokens(source, indices))))
        return self._shrink(take_tokens(source, indices).add_(mixed))

    def _shrink(self, x: Tensor) -> Tensor:
        """Pool the sequence and halve the width."""
        x = self.pool(x.transpose(1, 2)).transpose(1, 2)
        return F.gelu(self.down(x))


class TemporalS4Decoder(nn.Module):
    """Encoder (only when d_input ≠ d_model, as in ViS4mer) + n halving S4 blocks + mean over the sequence."""

    def __init__(self, config: DecoderConfig):
        super().__init__()
        if config.d_model % (2**config.n_blocks):
            raise ValueError(f"d_model {config.d_model} must be divisible by 2**n_blocks = {2**config.n_blocks}")
        self.config = config
        self.encoder = nn.Linear(config.d_input, config.d_model) if config.d_input != config.d_model else nn.Identity()
        self.blocks = nn.ModuleList(
            DecoderBlock(config.d_model // 2**i, config) for i in range(config.n_blocks)
        )
        self.feature_dim = config.d_model // 2**config.n_blocks

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, L, d_input) → (B, feature_dim)."""
        return self._blocks_from(0, self.encoder(x))

    def _blocks_from(self, first: int, x: Tensor) -> Tensor:
        """Blocks `first`, `first` + 1, … on x, then the mean over the sequence."""
        for block in self.blocks[first:]:
            x = block(x)
        return x.mean(dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)

    def forward_selected(self, tokens: Tensor, indices: Tensor) -> Tensor:
        """`self(take_tokens(tokens, indices))`: (B, L, d_input) tokens and (B, K) kept indices →
        (B, feature_dim). At inference (no autograd) it holds less at the first block (`forward_gathered`)."""
        if torch.is_grad_enabled() or not isinstance(self.encoder, nn.Identity):
            # Autograd would keep the gathered copy anyway; an input projection makes a new tensor anyway.
            return self(take_tokens(tokens, indices))
        return self._blocks_from(1, self.blocks[0].forward_gathered(tokens, indices))


class ViS4mer(nn.Module):
    """The S4 baseline: every one of the T·S tokens goes through the decoder, then a linear head."""

    def __init__(self, config: DecoderConfig, num_outputs: int):
        super().__init__()
        self.config = config
        self.decoder = TemporalS4Decoder(config)
        self.feature_dim = self.decoder.feature_dim
        self.head = nn.Linear(self.feature_dim, num_outputs)

    def forward_features(self, tokens: Tensor) -> Tensor:
        """(B, T, S, D) → (B, feature_dim)."""
        b, t, s, d = tokens.shape
        return self.decoder(tokens.reshape(b, t * s, d))

    def forward(self, tokens: Tensor) -> Tensor:
        """(B, T, S, D) → (B, num_outputs)."""
        return self.head(self.forward_features(tokens))
