"""LSMCL: chance-level loss for random encoders, it learns, and it is symmetric in short/long roles."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from s5cli.models.lsmcl import (
    LSMCL,
    LSMCLConfig,
    Projector,
    VideoIds,
    contrastive_top1,
    encoder_features,
    info_nce,
    mask_tokens,
    random_token_mask,
    short_clip,
    symmetric_info_nce,
    video_keys,
)
from s5cli.models.registry import build_model

S5_SMALL = dict(d_input=16, d_model=32, n_blocks=2, d_state=8, guide_channels=8, dropout=0.0)


def _train_tiny_s4(batch: torch.Tensor, config: LSMCLConfig, steps: int) -> list[float]:
    """LSMCL losses of `steps` AdamW steps of a tiny S4 encoder on one fixed batch."""
    model = LSMCL(build_model("s4", {k: v for k, v in S5_SMALL.items() if k != "guide_channels"}, 3), config)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    history = []
    for _ in range(steps):
        loss = model(batch, generator=gen).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.momentum_update()
        history.append(loss.item())
    return history


def test_random_embeddings_give_about_log_batch_size() -> None:
    torch.manual_seed(0)
    b = 64
    q, k = F.normalize(torch.randn(b, 128), dim=-1), F.normalize(torch.randn(b, 128), dim=-1)
    loss = info_nce(q, k, temperature=1.0)
    assert abs(loss.item() - math.log(b)) < 0.1 * math.log(b)


def test_random_encoder_loss_is_about_log_batch_size() -> None:
    torch.manual_seed(0)
    model = LSMCL(build_model("s5", S5_SMALL, 3), LSMCLConfig(short_frames=4, long_frames=8, proj_dim=16))
    loss = model(torch.randn(8, 8, 6, 16)).loss.item()
    assert abs(loss - math.log(8)) < 0.15 * math.log(8)


def test_loss_decreases_when_training_a_tiny_model() -> None:
    torch.manual_seed(0)
    history = _train_tiny_s4(torch.randn(8, 8, 6, 16), LSMCLConfig(short_frames=4, long_frames=8, proj_dim=16,
                                                                   momentum=0.9), steps=90)
    # Masks and clip offsets are resampled every step, so compare averages, not single steps.
    assert sum(history[-15:]) / 15 < 0.75 * sum(history[:5]) / 5


def test_symmetric_in_short_and_long_roles() -> None:
    torch.manual_seed(0)
    sq, sk, lq, lk = (F.normalize(torch.randn(6, 8), dim=-1) for _ in range(4))
    a = symmetric_info_nce(sq, sk, lq, lk, 0.2)
    b = symmetric_info_nce(lq, lk, sq, sk, 0.2)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(info_nce(sq, lk, 0.2), info_nce(lq, sk, 0.2))
    # Each query is matched with the *other* length's key: short with long, long with short.
    torch.testing.assert_close(a, 0.5 * (info_nce(sq, lk, 0.2) + info_nce(lq, sk, 0.2)))
    assert not torch.allclose(a, 0.5 * (info_nce(sq, sk, 0.2) + info_nce(lq, lk, 0.2)))


def test_key_offset_points_each_query_at_its_own_row_of_gathered_keys() -> None:
    """Under DDP the keys of every process are gathered; a process's positives start at its offset."""
    torch.manual_seed(0)
    query, keys = F.normalize(torch.randn(3, 8), dim=-1), F.normalize(torch.randn(7, 8), dim=-1)
    expected = F.cross_entropy(query @ keys.t() / 0.2, torch.tensor([4, 5, 6]))
    torch.testing.assert_close(info_nce(query, keys, 0.2, key_offset=4), expected)
    torch.testing.assert_close(info_nce(query, keys[:3], 0.2), F.cross_entropy(query @ keys[:3].t() / 0.2,
                                                                               torch.arange(3)))


def test_similarities_stay_float32_under_autocast() -> None:
    """bfloat16 similarities round cosines near 1 to steps of ~0.004: the loss must not change with autocast."""
    torch.manual_seed(0)
    query = F.normalize(torch.randn(4, 64), dim=-1)
    keys = F.normalize(query + 0.05 * torch.randn(4, 64), dim=-1)  # positives with cosines near 1
    negatives = F.normalize(torch.randn(6, 64), dim=-1)
    plain = info_nce(query, keys, 0.2, negatives)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (query @ keys.t()).dtype == torch.bfloat16  # what a plain matmul does here
        mixed = info_nce(query, keys, 0.2, negatives)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, plain, rtol=0, atol=0)


def _gather_in_process(rank: int, world: int, store_file: str, results: dict) -> None:
    import torch.distributed as dist

    from s5cli.models.lsmcl import gather_keys

    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=world)
    try:
        keys = torch.full((3 - rank, 2), float(rank))  # uneven: 3 videos on rank 0, 2 on rank 1
        gathered, offset = gather_keys(keys)
        results[rank] = (gathered.tolist(), offset)
    finally:
        dist.destroy_process_group()


def test_gather_keys_collects_every_process_in_rank_order(tmp_path) -> None:
    import torch.multiprocessing as mp

    with mp.Manager() as manager:  # the manager process ends here (a leaked one broke later child-process checks)
        shared = manager.dict()
        mp.spawn(_gather_in_process, args=(2, str(tmp_path / "store"), shared), nprocs=2)
        results = dict(shared)
    everyone = [[0.0, 0.0]] * 3 + [[1.0, 1.0]] * 2
    assert results[0] == (everyone, 0) and results[1] == (everyone, 3)


def test_key_encoder_gets_no_gradients() -> None:
    torch.manual_seed(0)
    model = LSMCL(build_model("s5", S5_SMALL, 3), LSMCLConfig(short_frames=4, long_frames=8, proj_dim=16))
    model(torch.randn(4, 8, 6, 16)).loss.backward()
    assert all(p.grad is None for p in model.key_encoder.parameters())
    assert any(p.grad is not None for p in model.encoder.parameters())


@pytest.mark.parametrize("queue_size", [6, 16])
def test_the_queue_keeps_short_and_long_keys_of_the_newest_videos(queue_size: int) -> None:
    """A queue shorter than a batch's 2B keys once kept the short keys alone."""
    torch.manual_seed(0)
    model = LSMCL(build_model("s5", S5_SMALL, 3), LSMCLConfig(short_frames=4, long_frames=8, proj_dim=16,
                                                             queue_size=queue_size))
    out = model(torch.randn(4, 8, 6, 16))
    keys = torch.stack([out.short_key, out.long_key], dim=1).flatten(0, 1)  # s0, l0, s1, l1, ...
    kept = min(queue_size, 8)
    torch.testing.assert_close(model.queue[:kept], keys[:kept].detach())
    assert int(model.queue_filled) == kept


def test_a_videos_own_queued_keys_are_not_among_its_negatives() -> None:
    """A queue longer than an epoch's keys held each video's keys from the epoch before: InfoNCE pushed the
    query away from its own video. With ids, those keys leave the softmax; other videos' keys stay."""
    torch.manual_seed(0)
    query, key = F.normalize(torch.randn(2, 8), dim=-1), F.normalize(torch.randn(2, 8), dim=-1)
    negatives = torch.cat([key[:1], F.normalize(torch.randn(3, 8), dim=-1)])  # row 0: video 10's own old key
    ids = VideoIds(torch.tensor([10, 11]), torch.tensor([10, 11]), torch.tensor([10, -1, 12, 13]))
    logits = torch.cat([query @ key.t(), query @ negatives.t()], dim=1) / 0.2
    logits[0, 2] = float("-inf")  # video 10's queued key, for video 10's query only
    expected = F.cross_entropy(logits, torch.tensor([0, 1]))
    torch.testing.assert_close(info_nce(query, key, 0.2, negatives, ids=ids), expected)
    assert info_nce(query, key, 0.2, negatives) > expected  # without ids: its own key pushed away
    # A second clip of the same video in the batch is no negative of the first either.
    twice = VideoIds(torch.tensor([10, 10]), torch.tensor([10, 10]))
    alone = F.cross_entropy((query @ key.t() / 0.2).diagonal()[:, None], torch.tensor([0, 0]))
    torch.testing.assert_close(info_nce(query, key, 0.2, ids=twice), alone)


def test_contrastive_top1_counts_queries_whose_own_key_wins() -> None:
    torch.manual_seed(0)
    keys = F.normalize(torch.randn(6, 8), dim=-1)
    assert float(contrastive_top1(keys, keys)) == 1.0  # identical views: every query finds its own key
    swapped = keys[[1, 0, 2, 3, 4, 5]]  # the first two queries now meet each other's key at their row
    assert float(contrastive_top1(keys, swapped)) == pytest.approx(4 / 6)
    # A queued copy of query 0's own key beats its positive, unless ids say it is the same video.
    query, key = keys[:1], F.normalize(keys[:1] + 0.5 * torch.randn(1, 8), dim=-1)
    assert float(contrastive_top1(query, key, negatives=keys[:1])) == 0.0
    ids = VideoIds(torch.tensor([3]), torch.tensor([3]), torch.tensor([3]))
    assert float(contrastive_top1(query, key, negatives=keys[:1], ids=ids)) == 1.0
    model = LSMCL(build_model("s5", S5_SMALL, 3), LSMCLConfig(short_frames=4, long_frames=8, proj_dim=16))
    out = model(torch.randn(4, 8, 6, 16))
    assert out.top1 is not None and not out.top1.requires_grad
    # The loss's pairs: short queries against long keys and long against short (not a view against itself).
    expected = 0.5 * (contrastive_top1(out.short_query, out.long_key) + contrastive_top1(out.long_query, out.short_key))
    assert float(out.top1) == float(expected)
    assert torch.equal(out.loss, symmetric_info_nce(out.short_query, out.short_key, out.long_query, out.long_key,
                                                    model.config.temperature))


def test_the_queue_keeps_each_keys_video_and_older_checkpoints_resume_with_unknown_ids() -> None:
    from s5cli.train.checkpoint_weights import load_into

    torch.manual_seed(0)
    config = LSMCLConfig(short_frames=4, long_frames=8, proj_dim=16, queue_size=16)
    model = LSMCL(build_model("s5", S5_SMALL, 3), config)
    ids = video_keys(["v1", "v2", "v3", "v4"])
    assert ids.tolist() == video_keys(["v1", "v2", "v3", "v4"]).tolist() and len(set(ids.tolist())) == 4
    model(torch.randn(4, 8, 6, 16), video_ids=ids)
    assert model.queue_ids[:8].tolist() == ids.repeat_interleave(2).tolist()  # short and long key of each
    assert (model.queue_ids[8:] == -1).all()
    older = {k: v for k, v in model.state_dict().items() if k != "queue_ids"}  # saved before ids were kept
    fresh = LSMCL(build_model("s5", S5_SMALL, 3), config)
    load_into(fresh, older, "older.safetensors")
    torch.testing.assert_close(fresh.queue, model.queue)
    assert (fresh.queue_ids == -1).all()


def test_clip_and_mask_shapes() -> None:
    tokens = torch.arange(2 * 10 * 6, dtype=torch.float32).view(2, 10, 6, 1)
    clip = short_clip(tokens, 4)
    assert clip.shape == (2, 4, 6, 1)
    frame_index = clip[..., 0, 0] // 6 % 10
    assert (frame_index.diff(dim=1) == 1).all()  # contiguous
    masked = random_token_mask(tokens, 0.5)
    assert masked.shape == (2, 10, 3, 1)
    assert (masked[..., 0].diff(dim=-1) > 0).all()  # order kept inside each frame


def test_batch_norm_projector_spreads_videos_that_differ_only_slightly() -> None:
    """Videos sharing a background give features equal up to ~1 %: the plain projector maps them all to one
    point (InfoNCE stuck at log B); the batch-normalised one keeps them apart."""
    torch.manual_seed(0)
    features = torch.randn(1, 16) + 0.01 * torch.randn(32, 16)
    off_diagonal = ~torch.eye(32, dtype=torch.bool)
    plain, batch_norm = Projector(16, 32, "none"), Projector(16, 32, "batch")
    assert (plain(features) @ plain(features).t())[off_diagonal].mean() > 0.99
    assert (batch_norm(features) @ batch_norm(features).t())[off_diagonal].mean().abs() < 0.2


def test_lsmcl_learns_videos_that_share_a_background_with_a_batch_norm_projector() -> None:
    torch.manual_seed(0)
    b, t, s, d = 8, 8, 6, 16
    background = torch.randn(1, t, s, d).expand(b, -1, -1, -1)
    events = torch.zeros(b, t, s, d)
    events[:, :, 0] = 0.3 * torch.randn(b, 1, d)  # one token per frame tells the videos apart
    batch = background + events
    config = LSMCLConfig(short_frames=4, long_frames=8, proj_dim=16, momentum=0.9, mask_ratio=0.0,
                         projector_norm="batch")
    history = _train_tiny_s4(batch, config, steps=60)
    assert sum(history[-10:]) / 10 < 0.5 * math.log(b)


def test_unknown_projector_norm_is_refused() -> None:
    with pytest.raises(ValueError, match="projector_norm"):
        LSMCLConfig(projector_norm="layer")


def test_batch_norm_projector_accepts_a_batch_of_one_video() -> None:
    torch.manual_seed(0)
    model = LSMCL(build_model("s5", S5_SMALL, 3),
                  LSMCLConfig(short_frames=4, long_frames=8, proj_dim=16, projector_norm="batch"))
    loss = model(torch.randn(1, 8, 6, 16)).loss
    assert torch.isfinite(loss)


def test_training_progress_reaches_the_wrapped_s5_encoders() -> None:
    model = LSMCL(build_model("s5", {**S5_SMALL, "explore_temperature": 8.0}, 3),
                  LSMCLConfig(short_frames=4, long_frames=8, proj_dim=16))
    model.train()
    model.set_training_progress(0.0)
    assert model.encoder.selection_temperature() == model.key_encoder.selection_temperature() == 8.0
    model.set_training_progress(1.0)
    assert model.encoder.selection_temperature() == 1.0


VIT_SMALL = dict(d_input=8, d_model=16, depth=1, heads=2, dropout=0.0, max_frames=8, max_tokens_per_frame=17)


def test_transformer_gives_kept_tokens_their_own_position_embeddings() -> None:
    """Tokens of identical content differ only by their slot's embedding: two masks keeping different slots
    must give different features. The kept tokens were packed and took slots 0..K-1's embeddings, so every
    mask gave the features of the frame's first K tokens."""
    torch.manual_seed(0)
    config = LSMCLConfig(short_frames=2, long_frames=4, proj_dim=8, mask_ratio=0.25, projector_norm="none")
    model = LSMCL(build_model("transformer", VIT_SMALL, 3), config).eval()
    tokens = torch.ones(1, 4, 17, 8)
    with torch.no_grad():
        first = model(tokens, generator=torch.Generator().manual_seed(1)).long_query
        second = model(tokens, generator=torch.Generator().manual_seed(2)).long_query
    assert not torch.allclose(first, second)


def test_masked_clip_keeps_each_tokens_slot_in_its_frame() -> None:
    tokens = torch.arange(2 * 3 * 8, dtype=torch.float32).view(2, 3, 8, 1)
    clip = mask_tokens(tokens, 0.5, torch.Generator().manual_seed(0))
    assert clip.index is not None and clip.index.shape == (2, 3, 4)
    torch.testing.assert_close(clip.tokens[..., 0], tokens[..., 0].gather(-1, clip.index))
    assert mask_tokens(tokens, 0.0).index is None  # nothing removed: token j is slot j
    same = random_token_mask(tokens, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(same, clip.tokens)  # the same draw as before the slots were kept


def test_transformer_given_every_slot_in_order_changes_nothing() -> None:
    torch.manual_seed(0)
    model = build_model("transformer", VIT_SMALL, 3).eval()
    tokens = torch.randn(2, 3, 5, 8)
    every_slot = torch.arange(5).expand(2, 3, 5)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(tokens, token_index=every_slot),
                                   model.forward_features(tokens), rtol=0, atol=0)


class _TokensOnly(torch.nn.Module):
    """A video model whose `forward_features` takes the tokens alone, as S5's and S4's do."""

    feature_dim = 4

    def forward_features(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens.mean(dim=(1, 2))[:, :4]


def test_models_that_embed_no_positions_are_given_the_kept_tokens_alone() -> None:
    """S5 and S4 are called as before the slots were kept, so their pretraining numbers do not move."""
    tokens = torch.randn(2, 3, 8, 4)
    clip = mask_tokens(tokens, 0.5, torch.Generator().manual_seed(0))
    torch.testing.assert_close(encoder_features(_TokensOnly(), clip), clip.tokens.mean(dim=(1, 2)))
    assert not getattr(build_model("s5", S5_SMALL, 3), "embeds_token_positions", False)
    assert not getattr(build_model("s4", {k: v for k, v in S5_SMALL.items() if k != "guide_channels"}, 3),
                       "embeds_token_positions", False)
