"""LSMCL: long-short masked contrastive learning (S5 paper, sec. 3.3), a MoCo-style pretraining objective.

A short clip (contiguous `short_frames` inside the long clip) and the long clip of the same video, each with
a random fraction `mask_ratio` of every frame's tokens removed, must map to matching embeddings: the query
encoder (the video model + an MLP projection) against a momentum (EMA) key encoder, with InfoNCE over the
other videos of the batch (gathered from every process under DDP) and an optional queue of past keys (never
the query's own video's: `VideoIds`). Long and short clips alternately play query and key, so the loss is
symmetric in their roles.
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s5cli.models.batch_norm import FEATURE_NORMS, VideoBatchNorm
from s5cli.models.host_values import buffer_int, store_buffer_int
from s5cli.models.s4_kernels import sync_kernel_lengths
from s5cli.models.selection import take_tokens


@dataclass
class LSMCLConfig:
    """Clip lengths, masking, InfoNCE temperature, projection size and key-encoder momentum."""

    short_frames: int = 30
    long_frames: int = 60
    # Fraction of each frame's tokens removed before encoding. The paper does not publish its η; 0.25 and the
    # batch-norm projector below are the settings that learned on the bundled task, where 0.5 and a plain
    # projector did not (benchmarks/README.md), so a recipe without a train.lsmcl section gets them.
    mask_ratio: float = 0.25
    temperature: float = 0.2
    proj_dim: int = 128
    momentum: float = 0.99
    queue_size: int = 0  # 0 = in-batch negatives only
    # "batch": BatchNorm in the projection MLP (as in MoCo v3 / SimCLR). It removes what every video of the
    # batch shares (a common background), so the contrast has to come from what tells the videos apart.
    projector_norm: str = "batch"

    def __post_init__(self) -> None:
        if not 1 <= self.short_frames <= self.long_frames:
            raise ValueError(f"need 1 <= short_frames <= long_frames, got {self.short_frames}, {self.long_frames}")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.projector_norm not in FEATURE_NORMS:
            raise ValueError(f"projector_norm must be one of {FEATURE_NORMS}, got {self.projector_norm!r}")


@dataclass
class VideoIds:
    """Which video each row came from, so a video's other keys never count as its negatives.

    `query` (B,) for this process's rows, `keys` for the keys gathered from every process, `negatives` for
    the queued keys (-1: unknown, a key queued by a checkpoint from before ids were kept). Why: a queue
    longer than an epoch's keys holds each video's own keys from earlier epochs, and InfoNCE pushed the
    query away from them (cosine ~0.65 to its own queued keys against ~0.02 to others' in a 24-video run).
    """

    query: Tensor
    keys: Tensor
    negatives: Tensor | None = None


def info_nce(
    query: Tensor, key: Tensor, temperature: float, negatives: Tensor | None = None, key_offset: int = 0,
    ids: VideoIds | None = None,
) -> Tensor:
    """InfoNCE: row i of `query` must pick row `key_offset + i` of `key` among all keys (+ extra negatives).

    Inputs L2-normed. `key_offset` is where this process's videos start in keys gathered from every process.
    With `ids`, keys of the query's own video other than its positive are left out of the softmax.
    Similarities in float32 also under autocast: in bfloat16 cosines near 1 lie ~0.004 apart, steps of ~0.02
    in the logits after dividing by the temperature (0.2), coarser than the differences being learned.
    """
    return info_nce_and_top1(query, key, temperature, negatives, key_offset, ids)[0]


def info_nce_and_top1(
    query: Tensor, key: Tensor, temperature: float, negatives: Tensor | None = None, key_offset: int = 0,
    ids: VideoIds | None = None,
) -> tuple[Tensor, Tensor]:
    """`info_nce` and `contrastive_top1` of one direction from one set of logits: with a large queue the
    similarities are most of the objective's own work, and the training step needs both numbers."""
    with torch.autocast(query.device.type, enabled=False):
        logits, target = _similarities(query, key, negatives, key_offset, ids)
        return F.cross_entropy(logits / temperature, target), _top1(logits.detach(), target)


def _top1(logits: Tensor, target: Tensor) -> Tensor:
    """Fraction of rows whose highest logit is their target column."""
    return (logits.argmax(dim=1) == target).float().mean()


def _similarities(query: Tensor, key: Tensor, negatives: Tensor | None, key_offset: int,
                  ids: VideoIds | None) -> tuple[Tensor, Tensor]:
    """(float32 cosine logits of every query against every key and queued negative, each query's positive
    column) as `info_nce` defines them, a query's own video's other keys at -inf."""
    query, key = query.float(), key.float()
    logits = query @ key.t()
    queued = negatives is not None and negatives.numel() > 0
    if queued:
        logits = torch.cat([logits, query @ negatives.float().t()], dim=1)
    target = torch.arange(key_offset, key_offset + query.shape[0], device=query.device)
    if ids is not None:
        others = torch.cat([ids.keys, ids.negatives[: negatives.shape[0]]]) if queued else ids.keys
        same_video = ids.query[:, None] == others[None, :]
        same_video[torch.arange(query.shape[0], device=query.device), target] = False  # the positive stays
        logits = logits.masked_fill(same_video, float("-inf"))
    return logits, target


@torch.no_grad()
def contrastive_top1(query: Tensor, key: Tensor, negatives: Tensor | None = None, key_offset: int = 0,
                     ids: VideoIds | None = None) -> Tensor:
    """Fraction of queries whose own key scores highest among all keys and negatives (MoCo's acc@1).

    Why log it beside the loss: the loss's scale moves with the batch and queue (chance is ln of the
    candidates), while this reads the same at any size (chance: 1 / candidates) and shows whether the
    pretext task is being solved or has collapsed."""
    with torch.autocast(query.device.type, enabled=False):
        return _top1(*_similarities(query, key, negatives, key_offset, ids))


def symmetric_info_nce(
    short_query: Tensor, short_key: Tensor, long_query: Tensor, long_key: Tensor, temperature: float,
    negatives: Tensor | None = None, key_offset: int = 0, ids: VideoIds | None = None,
) -> Tensor:
    """Mean of short→long and long→short InfoNCE; swapping the short and long inputs gives the same loss."""
    return symmetric_info_nce_and_top1(short_query, short_key, long_query, long_key, temperature, negatives,
                                       key_offset, ids)[0]


def symmetric_info_nce_and_top1(
    short_query: Tensor, short_key: Tensor, long_query: Tensor, long_key: Tensor, temperature: float,
    negatives: Tensor | None = None, key_offset: int = 0, ids: VideoIds | None = None,
) -> tuple[Tensor, Tensor]:
    """`symmetric_info_nce` and the mean of both directions' `contrastive_top1`, each direction's pair from
    one set of logits (`info_nce_and_top1`): the training step logs the top-1 beside the loss."""
    short_loss, short_top1 = info_nce_and_top1(short_query, long_key, temperature, negatives, key_offset, ids)
    long_loss, long_top1 = info_nce_and_top1(long_query, short_key, temperature, negatives, key_offset, ids)
    return 0.5 * (short_loss + long_loss), 0.5 * (short_top1 + long_top1)


def video_keys(video_ids: Sequence[str]) -> Tensor:
    """One integer per video id (CRC-32 of its text), the same in every process and every run: what
    `VideoIds` compares. A collision only leaves one more key out of a softmax."""
    return torch.tensor([zlib.crc32(str(video).encode("utf-8")) for video in video_ids], dtype=torch.long)


def gather_keys(keys: Tensor) -> tuple[Tensor, int]:
    """Every process's keys, in rank order, and the row where this process's own keys start.

    Under DDP each process holds batch_size / world_size videos; without this, InfoNCE would contrast a clip
    with that share only, so a multi-GPU run would solve an easier task than one process with the same
    recipe. The keys come from the momentum encoder and carry no gradient (as in MoCo), so a plain
    all_gather suffices. Batches may differ in size at the end of an epoch: they are padded for the gather.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return keys, 0
    world, rank = dist.get_world_size(), dist.get_rank()
    sizes = [torch.zeros(1, dtype=torch.long, device=keys.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([keys.shape[0]], dtype=torch.long, device=keys.device))
    counts = [int(size) for size in sizes]
    padded = keys.new_zeros((max(counts), *keys.shape[1:]))
    padded[: keys.shape[0]] = keys
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    return torch.cat([part[:count] for part, count in zip(gathered, counts, strict=True)]), sum(counts[:rank])


@dataclass
class MaskedClip:
    """The tokens a mask kept (B, T, K, D) and where each sat in its frame (B, T, K); `index` is None when
    nothing was removed. Why the index: a model that embeds positions (the transformer) must give a kept
    token its own slot's embedding, not that of the slot it lands in once the others are packed away."""

    tokens: Tensor
    index: Tensor | None = None


def mask_tokens(tokens: Tensor, mask_ratio: float, generator: torch.Generator | None = None) -> MaskedClip:
    """Remove a random `mask_ratio` of the tokens of every frame (same count per frame, order kept)."""
    b, t, s, d = tokens.shape
    keep = max(1, round((1 - mask_ratio) * s))
    if keep == s:
        return MaskedClip(tokens)
    device = generator.device if generator is not None else tokens.device  # a CPU generator draws on the CPU
    noise = torch.rand(b, t, s, generator=generator, device=device).to(tokens.device)
    idx = noise.topk(keep, dim=-1).indices.sort(dim=-1).values
    kept = take_tokens(tokens.reshape(b * t, s, d), idx.reshape(b * t, keep)).view(b, t, keep, d)
    return MaskedClip(kept, idx)


def random_token_mask(tokens: Tensor, mask_ratio: float, generator: torch.Generator | None = None) -> Tensor:
    """`mask_tokens`' kept tokens alone, for models that embed no positions."""
    return mask_tokens(tokens, mask_ratio, generator).tokens


def short_clip(tokens: Tensor, frames: int, generator: torch.Generator | None = None) -> Tensor:
    """A contiguous `frames`-frame clip from each video, at a random offset per video."""
    b, t = tokens.shape[:2]
    if frames >= t:
        return tokens
    # Drawn where the generator lives (the tokens' device without one, as `random_token_mask` draws): offsets
    # drawn on the CPU and copied to a GPU cost a host sync every LSMCL step (benchmarks/cuda_checks.py).
    device = generator.device if generator is not None else tokens.device
    start = torch.randint(0, t - frames + 1, (b,), generator=generator, device=device).to(tokens.device)
    idx = start[:, None] + torch.arange(frames, device=tokens.device)
    return take_tokens(tokens.reshape(b, t, -1), idx).view(b, frames, *tokens.shape[2:])


def encoder_features(encoder: nn.Module, clip: MaskedClip) -> Tensor:
    """`encoder.forward_features` of a masked clip; the kept tokens' frame positions go only to a model that
    declares `embeds_token_positions` (the transformer). The others (S5, S4) embed no positions and are
    called exactly as before the positions were kept."""
    if clip.index is not None and getattr(encoder, "embeds_token_positions", False):
        return encoder.forward_features(clip.tokens, token_index=clip.index)
    return encoder.forward_features(clip.tokens)


class Projector(nn.Module):
    """Two-layer MLP to the contrastive space, L2-normalised output; optionally batch-normalised (MoCo v3:
    BN after both linear layers, the last one without affine parameters)."""

    def __init__(self, d_in: int, d_out: int, norm: str = "none"):
        super().__init__()
        if norm == "batch":
            layers: list[nn.Module] = [
                nn.Linear(d_in, d_in, bias=False), VideoBatchNorm(d_in), nn.GELU(),
                nn.Linear(d_in, d_out, bias=False), VideoBatchNorm(d_out, affine=False),
            ]
        else:
            layers = [nn.Linear(d_in, d_in), nn.GELU(), nn.Linear(d_in, d_out)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.net(x), dim=-1)


@dataclass
class LSMCLOutput:
    """Loss and the embeddings it came from (for logging and tests)."""

    loss: Tensor
    short_query: Tensor
    long_query: Tensor
    short_key: Tensor
    long_key: Tensor
    top1: Tensor | None = None  # `contrastive_top1`, mean of the short->long and long->short tasks


class LSMCL(nn.Module):
    """Wraps any video model with `forward_features` and `feature_dim`: query encoder + EMA key encoder.
    A model that embeds token positions also declares `embeds_token_positions` (`encoder_features`)."""

    def __init__(self, encoder: nn.Module, config: LSMCLConfig):
        super().__init__()
        self.config = config
        self.encoder = encoder
        self.projector = Projector(encoder.feature_dim, config.proj_dim, config.projector_norm)
        self.key_encoder = copy.deepcopy(encoder)
        self.key_projector = copy.deepcopy(self.projector)
        for param in [*self.key_encoder.parameters(), *self.key_projector.parameters()]:
            param.requires_grad_(False)
        self.register_buffer("queue", torch.zeros(config.queue_size, config.proj_dim))
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue_ids", torch.full((config.queue_size,), -1, dtype=torch.long))

    def defaults_for_older_checkpoints(self) -> dict[str, Tensor]:
        """Buffers a checkpoint written before they existed lacks, and what they start as on its resume:
        queued keys of unknown videos (-1), as if none were the query's own."""
        return {"queue_ids": torch.full_like(self.queue_ids, -1)}

    def embed(self, tokens: Tensor | MaskedClip, key: bool) -> Tensor:
        """Projected, normalised embedding of (B, T, S, D) tokens (or a masked clip) by the query or the key
        encoder."""
        clip = tokens if isinstance(tokens, MaskedClip) else MaskedClip(tokens)
        if key:
            with torch.no_grad():
                return self.key_projector(encoder_features(self.key_encoder, clip))
        return self.projector(encoder_features(self.encoder, clip))

    def forward(self, long_tokens: Tensor, generator: torch.Generator | None = None,
                video_ids: Tensor | None = None) -> LSMCLOutput:
        """LSMCL loss for a batch of long clips (B, T_long, S, D); the short clips are cut from them.

        `video_ids` (B,), from `video_keys`: which video each clip is, so that no video's other keys
        (queued from earlier steps, or a second clip of it in the batch) serve as its negatives.
        """
        cfg = self.config
        # Each clip's frames carry time positions 0, 1, … from its own first frame (the transformer's
        # `time_embed[:T]`), the short clip's too, wherever it sits in the long one: as every clip is given
        # to the model in finetuning and evaluation, and without telling the model where the short clip sits.
        short = mask_tokens(short_clip(long_tokens, cfg.short_frames, generator), cfg.mask_ratio, generator)
        long = mask_tokens(long_tokens, cfg.mask_ratio, generator)
        # Long clips first: a DPLR kernel may grow its internal length in place on a longer input, which must
        # happen before the same weights enter this step's autograd graph through the short clip.
        lq, sq = self.embed(long, key=False), self.embed(short, key=False)
        lk, sk = self.embed(long, key=True), self.embed(short, key=True)
        filled = buffer_int(self, "queue_filled") if cfg.queue_size else 0
        negatives = self.queue[:filled] if cfg.queue_size else None
        # One gather for both keys of a video (side by side), not two.
        gathered, offset = gather_keys(torch.cat([lk, sk], dim=1))
        all_lk, all_sk = (part.contiguous() for part in gathered.split(lk.shape[1], dim=1))
        ids = None
        if video_ids is not None:
            video_ids = video_ids.to(lq.device)
            ids = VideoIds(video_ids, gather_keys(video_ids)[0], self.queue_ids[:filled] if cfg.queue_size else None)
        loss, top1 = symmetric_info_nce_and_top1(sq, all_sk, lq, all_lk, cfg.temperature, negatives, offset, ids)
        if cfg.queue_size and self.training:
            # Short and long key of each video side by side: a queue shorter than a batch's 2B keys then keeps
            # both kinds (cat([short, long]) kept the short keys alone).
            keys = torch.stack([all_sk, all_lk], dim=1).flatten(0, 1).detach()
            queued_ids = ids.keys.repeat_interleave(2) if ids is not None else torch.full(
                (keys.shape[0],), -1, dtype=torch.long, device=keys.device)
            self._enqueue(keys, queued_ids)
        return LSMCLOutput(loss, sq, lq, sk, lk, top1)

    def set_training_progress(self, fraction: float) -> None:
        """Pass the trainer's progress on to both encoders, so S5's exploration schedule runs in pretraining
        as in finetuning (the key encoder is an EMA copy and keeps the same schedule)."""
        for encoder in (self.encoder, self.key_encoder):
            if hasattr(encoder, "set_training_progress"):
                encoder.set_training_progress(fraction)

    @torch.no_grad()
    def _enqueue(self, keys: Tensor, ids: Tensor) -> None:
        keys, ids = keys[: self.config.queue_size], ids[: self.config.queue_size]
        self.queue = torch.cat([keys, self.queue])[: self.config.queue_size]
        self.queue_ids = torch.cat([ids, self.queue_ids])[: self.config.queue_size]
        filled = min(buffer_int(self, "queue_filled") + keys.shape[0], self.config.queue_size)
        store_buffer_int(self, "queue_filled", filled)

    @torch.no_grad()
    def momentum_update(self) -> None:
        """key ← m·key + (1 − m)·query for encoder and projector; also the encoder's own EMA (S5 guide)."""
        if hasattr(self.encoder, "momentum_update"):
            self.encoder.momentum_update()
        sync_kernel_lengths(self.key_encoder, self.encoder)
        m = self.config.momentum
        pairs = [(self.key_encoder, self.encoder), (self.key_projector, self.projector)]
        for target, source in pairs:
            for p_t, p_s in zip(target.parameters(), source.parameters(), strict=True):
                p_t.mul_(m).add_(p_s.detach(), alpha=1 - m)
