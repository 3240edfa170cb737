"""S5: selective S4. A mask generator, read through a momentum copy of the S4 model, keeps the informative tokens.

Flow for tokens (B, T, S, D):
1. The momentum guide (an EMA copy of the decoder's encoder, first LayerNorm and first S4 layer; never
   trained by gradients) reads *all* T·S tokens and returns its SSM response on `guide_channels` channels.
   Only a strided subset of channels is computed, with the impulse response truncated to K steps, so the
   guide costs a fraction of the model it guides.
2. The mask generator (LayerNorm → Linear → GELU → LayerNorm → Linear) turns that response into
   log-probabilities over tokens, per frame (K_f tokens of each frame) or globally (K of all T·S).
3. Gumbel top-K with straight-through weights picks the tokens; the others are *removed* (gathered out,
   temporal order kept), so the S4 decoder runs on K tokens and time and memory fall with the keep ratio.
Keep ratio 1.0 or selector "none" skip steps 1-3 and reproduce ViS4mer exactly.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from s5cli.models.batch_norm import FEATURE_NORMS, VideoBatchNorm
from s5cli.models.decoder import DecoderConfig, TemporalS4Decoder
from s5cli.models.s4_kernels import sync_kernel_lengths
from s5cli.models.selection import draw_uniform, gather_weighted, gumbel_topk

SELECTORS = ("learned", "random", "uniform", "none")
GUIDE_BLOCK_ELEMENTS = 1 << 21  # floats per block of the guide's full-width entry (8 MiB in fp32)
# On a GPU, 64 MiB blocks (one at the paper's size, batch 1): there the entry is not at S5's memory peak
# (H200, paper size: 174 MiB with 6 blocks or one), and each block costs launches, not cache misses
# (guide entry 0.067 instead of 0.101 ms replayed; benchmarks/profile_inference.py).
CUDA_GUIDE_BLOCK_ELEMENTS = 1 << 24
SELECTIONS = ("per_frame", "global")


@dataclass
class S5Config(DecoderConfig):
    """ViS4mer decoder settings plus the token-selection settings of S5."""

    keep_ratio: float = 0.5  # fraction of tokens kept, in (0, 1]
    selection: str = "per_frame"  # "per_frame" (K_f of each frame) | "global" (K of all T·S)
    selector: str = "learned"  # "learned" (S5) | "random" | "uniform" | "none" (= ViS4mer) — ablations
    gumbel_tau: float = 1.0
    momentum: float = 0.99  # EMA factor of the momentum guide
    guide_channels: int = 256  # channels of the momentum S4 read by the mask generator
    mg_hidden: int = 64
    # Mask-generator scores squashed to (−b, b) by b·tanh(s/b), so Gumbel sampling keeps trying tokens the
    # young decoder cannot use yet. Unbounded, S5 on the bundled task locked onto two of three glyph colours
    # (val top-1 ~0.45); bounded at 2, 2 of 5 seeds of a plain training loop escaped (> 0.9), 3 did not.
    # None = unbounded (the paper does not say).
    score_bound: float | None = 2.0
    # Exploration: while training, Gumbel top-K samples from log p / T, with T annealed linearly from
    # `explore_temperature` to 1 over the first `explore_fraction` of the steps. Early on the decoder sees
    # near-random selections (it learns what every token type means) while the mask generator already gets
    # straight-through gradients; later the generator's choice takes over. 1.0 = off (the paper's plain sampling).
    explore_temperature: float = 1.0
    explore_fraction: float = 0.5
    # "batch": a BatchNorm without affine parameters before the classification head (MAE's linear-probe
    # head). Contrastive pretraining can leave features that differ between videos by ~1 % around a large
    # common value; the head then learns slowly from them unless they are standardised. "none": the paper's head.
    head_norm: str = "none"

    def __post_init__(self) -> None:
        if self.head_norm not in FEATURE_NORMS:
            raise ValueError(f"head_norm must be one of {FEATURE_NORMS}, got {self.head_norm!r}")
        if not self.explore_temperature >= 1.0:
            raise ValueError(f"explore_temperature must be >= 1, got {self.explore_temperature}")
        if not 0.0 < self.explore_fraction <= 1.0:
            raise ValueError(f"explore_fraction must be in (0, 1], got {self.explore_fraction}")
        if self.score_bound is not None and not self.score_bound > 0:
            raise ValueError(f"score_bound must be > 0 or null, got {self.score_bound}")
        if not 0.0 < self.keep_ratio <= 1.0:
            raise ValueError(f"keep_ratio must be in (0, 1], got {self.keep_ratio}")
        if self.selector not in SELECTORS:
            raise ValueError(f"selector must be one of {SELECTORS}, got {self.selector!r}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {self.selection!r}")


@dataclass
class TokenSelection:
    """Which of the T·S tokens were kept: indices (B, K) sorted, their weights, and the scores they came from."""

    indices: Tensor
    weights: Tensor | None  # straight-through weights (1.0 forward); None for non-learned selectors
    scores: Tensor | None  # (B, T·S) log-probabilities of the mask generator (learned selector only)
    tokens_per_frame: int  # S of the input


class MomentumGuide(nn.Module):
    """No-grad EMA copy of the decoder's entry (encoder → LayerNorm → S4 SSM) that scores every token."""

    def __init__(self, decoder: TemporalS4Decoder, channels: int):
        super().__init__()
        block = decoder.blocks[0]
        self.encoder = copy.deepcopy(decoder.encoder)
        self.norm = copy.deepcopy(block.norm)
        self.s4 = copy.deepcopy(block.s4)
        # The guide reads the SSM response (`S4Layer.ssm`), never the layer's output projection: keeping a
        # copy of it cost d_model² weights (4 MiB at the paper's width) and EMA work for nothing.
        self.s4.out_linear = nn.Identity()
        width = decoder.config.d_model
        picked = torch.linspace(0, width - 1, min(channels, width)).round().long().unique()
        self.register_buffer("channels", picked, persistent=False)
        for param in self.parameters():
            param.requires_grad_(False)

    def sources(self, decoder: TemporalS4Decoder) -> list[nn.Module]:
        """The decoder modules this guide shadows, in the same order as (encoder, norm, s4)."""
        return [decoder.encoder, decoder.blocks[0].norm, decoder.blocks[0].s4]

    @torch.no_grad()
    def forward(self, x: Tensor, kernel_length: int) -> Tensor:
        """(B, L, d_input) → (B, L, guide channels).

        The impulse response is truncated to `kernel_length` (= the number of tokens the decoder keeps):
        guide and decoder then share one internal kernel length, so averaging their C̃ is consistent and
        the guide never forces the decoder's kernel to the full, unselected length.
        """
        full = self.channels.numel() == self.s4.config.d_model
        channels = None if full else self.channels
        # In float32 also under AMP, as the mask generator it feeds: a bfloat16 entry Linear (d_input ≠
        # d_model) moved the scores by ~6e-3 and changed 9 of 144 kept tokens in a CPU bfloat16 test, so
        # a GPU evaluation would keep other tokens than `visualize-mask` (no autocast) shows.
        with torch.autocast(x.device.type, enabled=False):
            entry = self._entry(_at_least_float32(x), channels)
            return self.s4.ssm(entry, channels, kernel_length, preselected=True)

    def _entry(self, x: Tensor, channels: Tensor | None) -> Tensor:
        """encoder → LayerNorm → the guide's channels, in blocks of tokens.

        The guide reads every token at the decoder's full width before keeping a quarter of the channels;
        both maps are per token, so blocks give the same numbers without two full-width (L, d_model)
        intermediates — at the paper's size those were S5's largest buffers after the input itself.
        """
        b, length, _ = x.shape
        width = self.channels.numel()
        out = x.new_empty(b, length, width)
        elements = GUIDE_BLOCK_ELEMENTS if x.device.type == "cpu" else CUDA_GUIDE_BLOCK_ELEMENTS
        block = max(1, elements // max(1, b * self.s4.config.d_model))
        for start in range(0, length, block):
            part = self.norm(self.encoder(x[:, start : start + block]))
            out[:, start : start + block] = part if channels is None else _pick_channels(part, channels)
        return out


def _at_least_float32(x: Tensor) -> Tensor:
    """x in float32 when it is half precision (AMP), else unchanged (a float64 model stays float64)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _pick_channels(x: Tensor, channels: Tensor) -> Tensor:
    """x[..., channels] of a (B, L, H) tensor. `gather` with a broadcast index: on CPU ~5x faster than
    `index_select` on the last dimension (1.1 vs 6.0 ms for 2048 x 1024 -> 256 channels, one thread)."""
    return torch.gather(x, -1, channels.view(1, 1, -1).expand(x.shape[0], x.shape[1], -1))


class MaskGenerator(nn.Module):
    """Light projection head with a LayerNorm in each projection: guide response → one score per token."""

    def __init__(self, d_in: int, hidden: int, bound: float | None = None):
        super().__init__()
        self.bound = bound
        self.net = nn.Sequential(
            nn.LayerNorm(d_in), nn.Linear(d_in, hidden), nn.GELU(), nn.LayerNorm(hidden),
            nn.Linear(hidden, 1, bias=False),  # a shared offset cancels in the softmax: no bias to learn
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, L, d_in) → (B, L) unnormalised scores, in (−bound, bound) when bounded.

        In training the net is recomputed in the backward pass instead of keeping its activations: it reads
        all T·S tokens (at the paper's size ~20 MB of saved LayerNorm/Linear inputs) and is cheap to rerun.
        Always in float32, also under AMP: bfloat16 scores (8 bits of mantissa) tie and reorder tokens, so
        a GPU evaluation kept other tokens than `visualize-mask` shows (2 of 200 in a CPU bfloat16 test).
        """
        with torch.autocast(x.device.type, enabled=False):
            x = _at_least_float32(x)
            if torch.is_grad_enabled() and self.training:
                scores = checkpoint(self.net, x, use_reentrant=False).squeeze(-1)
            else:
                scores = self.net(x).squeeze(-1)
            return scores if self.bound is None else self.bound * torch.tanh(scores / self.bound)


class S5Model(nn.Module):
    """Selective S4 video model: token selection guided by a momentum S4, then the ViS4mer decoder and a head."""

    def __init__(self, config: S5Config, num_outputs: int):
        super().__init__()
        self.config = config
        self.decoder = TemporalS4Decoder(DecoderConfig.subset(config))
        self.feature_dim = self.decoder.feature_dim
        linear = nn.Linear(self.feature_dim, num_outputs)
        self.head = (
            nn.Sequential(VideoBatchNorm(self.feature_dim, affine=False), linear)
            if config.head_norm == "batch" else linear
        )
        if config.selector == "learned":
            self.guide = MomentumGuide(self.decoder, config.guide_channels)
            self.mask_generator = MaskGenerator(
                int(self.guide.channels.numel()), config.mg_hidden, config.score_bound
            )
        # Fraction of training done, set by the trainer before each step (see `set_training_progress`);
        # 1.0 outside training, so a loaded model never explores.
        self.training_progress = 1.0

    def set_training_progress(self, fraction: float) -> None:
        """Tell the model how far training is (0 → 1); drives the exploration temperature."""
        self.training_progress = min(max(float(fraction), 0.0), 1.0)

    def selection_temperature(self) -> float:
        """T of the Gumbel top-K draw: explore_temperature at the start, 1 after explore_fraction of training."""
        start = self.config.explore_temperature
        if not self.training or start == 1.0:
            return 1.0
        remaining = max(0.0, 1.0 - self.training_progress / self.config.explore_fraction)
        return 1.0 + (start - 1.0) * remaining

    # --- selection --------------------------------------------------------------------------------
    def tokens_kept(self, frames: int, tokens_per_frame: int) -> int:
        """K: how many of the T·S tokens reach the decoder."""
        if self.config.selection == "per_frame":
            return frames * max(1, round(self.config.keep_ratio * tokens_per_frame))
        return max(1, round(self.config.keep_ratio * frames * tokens_per_frame))

    def selects(self, frames: int, tokens_per_frame: int) -> bool:
        """Whether any token is dropped (otherwise the model is exactly ViS4mer)."""
        return self.config.selector != "none" and self.tokens_kept(frames, tokens_per_frame) < frames * tokens_per_frame

    def select(self, tokens: Tensor, generator: torch.Generator | None = None) -> TokenSelection:
        """Choose the kept tokens of (B, T, S, D); indices refer to the flattened T·S axis."""
        b, t, s, _ = tokens.shape
        k_total = self.tokens_kept(t, s)
        per_frame = self.config.selection == "per_frame"
        k = k_total // t if per_frame else k_total
        selector = self.config.selector
        if selector in ("none",) or k_total == t * s:
            idx = torch.arange(t * s, device=tokens.device).expand(b, -1)
            return TokenSelection(idx, None, None, s)
        if selector == "learned":
            sync_kernel_lengths(self.guide.s4, self.decoder.blocks[0].s4)
            response = self.guide(tokens.reshape(b, t * s, -1), kernel_length=k_total)
            scores = self.mask_generator(response)  # (B, T·S)
            rows = scores.view(b * t, s) if per_frame else scores
            log_probs = torch.log_softmax(rows, dim=-1)
            temperature = self.selection_temperature()
            sampled_from = log_probs if temperature == 1.0 else log_probs / temperature
            picked = gumbel_topk(sampled_from, k, self.config.gumbel_tau, self.training, generator)
            idx, weights = self._flatten(picked.indices, b, t, s, per_frame), picked.weights.reshape(b, -1)
            return TokenSelection(idx, weights, log_probs.reshape(b, t * s), s)
        rows = b * t if per_frame else b
        width = s if per_frame else t * s
        if selector == "random":
            if self.training or generator is not None:
                noise = draw_uniform((rows, width), tokens.device, generator)
            else:
                noise = self._evaluation_noise(rows // b, width, tokens.device).repeat(b, 1)
            local = noise.topk(k, dim=-1).indices.sort(dim=-1).values
        else:  # uniform: evenly spaced, deterministic
            local = torch.linspace(0, width - 1, k, device=tokens.device).round().long().expand(rows, -1)
        return TokenSelection(self._flatten(local, b, t, s, per_frame), None, None, s)

    def _evaluation_noise(self, rows: int, width: int, device: torch.device) -> Tensor:
        """The random selector's scores at evaluation: drawn once from seed 0, the same for every clip.

        Why fixed: drawn afresh, validation, `s5 eval` and the choice of the best checkpoint changed from
        call to call, and evaluation took numbers from the generator that training's dropout and noise
        come from. Each frame (per-frame selection) still gets its own random positions; kept with the
        module (not saved), so a captured CUDA graph reads the same tensor every replay."""
        key = (rows, width, str(device))
        kept = self.__dict__.get("_evaluation_noise_kept")
        if kept is None or kept[0] != key:
            noise = torch.rand(rows, width, generator=torch.Generator().manual_seed(0)).to(device)
            kept = self.__dict__["_evaluation_noise_kept"] = (key, noise)
        return kept[1]

    @staticmethod
    def _flatten(local: Tensor, b: int, t: int, s: int, per_frame: bool) -> Tensor:
        if not per_frame:
            return local
        offsets = (torch.arange(t, device=local.device) * s).repeat(b)[:, None]
        return (local + offsets).reshape(b, -1)

    # --- forward ----------------------------------------------------------------------------------
    def forward_features(self, tokens: Tensor) -> Tensor:
        """(B, T, S, D) → (B, feature_dim), with the decoder seeing only the kept tokens."""
        b, t, s, d = tokens.shape
        flat = tokens.reshape(b, t * s, d)
        if not self.selects(t, s):
            return self.decoder(flat)
        chosen = self.select(tokens)
        # The straight-through weights are exactly 1.0 in the forward pass: without autograd multiplying
        # by them changes no value, so the kept tokens are gathered alone (`forward_selected` also holds
        # them only briefly when autograd is off).
        if chosen.weights is None or not torch.is_grad_enabled():
            return self.decoder.forward_selected(flat, chosen.indices)
        return self.decoder(gather_weighted(flat, chosen.indices, chosen.weights.to(flat.dtype)))

    def forward(self, tokens: Tensor) -> Tensor:
        """(B, T, S, D) → (B, num_outputs)."""
        return self.head(self.forward_features(tokens))

    @torch.no_grad()
    def momentum_update(self) -> None:
        """guide ← m·guide + (1 − m)·decoder; the only way the guide ever changes."""
        if self.config.selector != "learned":
            return
        sync_kernel_lengths(self.guide.s4, self.decoder.blocks[0].s4)
        m = self.config.momentum
        guide_parts = [self.guide.encoder, self.guide.norm, self.guide.s4]
        for target, source in zip(guide_parts, self.guide.sources(self.decoder), strict=True):
            source_params = dict(source.named_parameters())  # by name: the guide's S4 has no output projection
            for name, p_target in target.named_parameters():
                p_target.mul_(m).add_(source_params[name].detach(), alpha=1 - m)
