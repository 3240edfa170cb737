"""S5: straight-through gradients, exactly K tokens at eval, keep 1.0 = ViS4mer, momentum guide."""

from __future__ import annotations

import pytest
import torch

from s5cli.models.decoder import DecoderConfig, ViS4mer
from s5cli.models.s5 import MaskGenerator, S5Config, S5Model
from s5cli.models.selection import gumbel_topk

SMALL = dict(d_input=16, d_model=32, n_blocks=2, d_state=8, guide_channels=8, dropout=0.0)


def _model(**kw) -> S5Model:
    torch.manual_seed(0)
    return S5Model(S5Config(**{**SMALL, **kw}), num_outputs=5)


def test_gumbel_topk_is_hard_forward_and_soft_backward() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 10, requires_grad=True)
    sel = gumbel_topk(torch.log_softmax(logits, -1), k=3, tau=0.5, training=True)
    assert torch.equal(sel.weights.detach(), torch.ones(2, 3))
    assert (sel.indices.diff(dim=-1) > 0).all()
    (sel.weights * torch.arange(3.0)).sum().backward()
    assert logits.grad.abs().sum() > 0


def test_mask_generator_gets_nonzero_gradients_through_straight_through_path() -> None:
    model = _model()
    model(torch.randn(2, 6, 10, 16)).square().sum().backward()
    for name, param in model.mask_generator.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("selection", ["per_frame", "global"])
def test_eval_feeds_exactly_k_tokens_to_the_decoder(selection: str) -> None:
    model = _model(selection=selection, keep_ratio=0.3).eval()
    seen = {}

    def record(module, args) -> None:
        seen["shape"] = args[0].shape

    hook = model.decoder.register_forward_pre_hook(record)
    tokens = torch.randn(2, 6, 10, 16)
    model(tokens)
    hook.remove()
    k = 6 * 3 if selection == "per_frame" else 18
    assert seen["shape"] == (2, k, 16)
    sel = model.select(tokens)
    assert sel.indices.shape == (2, k) and (sel.indices.diff(dim=-1) > 0).all()
    per_frame = torch.stack([(sel.indices[b] // 10).bincount(minlength=6) for b in range(2)])
    if selection == "per_frame":
        assert (per_frame == 3).all()
    else:
        # Global: one frame can take more than its share. Scores that favour frame 2's tokens make it so;
        # per-frame selection could never give it more than 3.
        frame = torch.arange(60).view(1, 60) // 10
        model.mask_generator.forward = lambda response: (frame == 2).float().expand(response.shape[0], -1) * 10.0
        favoured = model.select(tokens).indices
        assert ((favoured // 10) == 2).sum(dim=-1).tolist() == [10, 10]  # all of frame 2, then 8 others
        del model.mask_generator.forward  # the class's own forward again
    # deterministic at eval
    assert torch.equal(model.select(tokens).indices, sel.indices)


def test_keep_ratio_one_reproduces_the_no_selection_model_exactly() -> None:
    s5 = _model(keep_ratio=1.0).eval()
    torch.manual_seed(0)
    vis4mer = ViS4mer(DecoderConfig(**{k: v for k, v in SMALL.items() if k != "guide_channels"}), 5).eval()
    vis4mer.load_state_dict({k: v for k, v in s5.state_dict().items() if k.startswith(("decoder.", "head."))})
    tokens = torch.randn(2, 6, 10, 16)
    assert torch.equal(s5(tokens), vis4mer(tokens))
    none = _model(selector="none").eval()
    none.load_state_dict({k: v for k, v in s5.state_dict().items() if not k.startswith(("guide", "mask"))})
    assert torch.equal(none(tokens), vis4mer(tokens))


def test_momentum_copy_changes_only_through_the_ema_update() -> None:
    model = _model()
    guide_before = {k: v.detach().clone() for k, v in model.guide.named_parameters()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(torch.randn(2, 6, 10, 16)).square().sum().backward()
    assert all(p.grad is None for p in model.guide.parameters())
    opt.step()
    for k, v in model.guide.named_parameters():
        assert torch.equal(v, guide_before[k]), k
    model.momentum_update()
    m = model.config.momentum
    src = model.decoder.blocks[0].s4.D
    torch.testing.assert_close(model.guide.s4.D, m * guide_before["s4.D"] + (1 - m) * src)
    assert not torch.equal(model.guide.s4.D, guide_before["s4.D"])


@pytest.mark.parametrize("selector", ["random", "uniform"])
def test_baseline_selectors_keep_k_tokens_without_a_guide(selector: str) -> None:
    model = _model(selector=selector)
    assert not hasattr(model, "guide")
    sel = model.select(torch.randn(2, 6, 10, 16))
    assert sel.indices.shape == (2, 30) and sel.weights is None
    assert model(torch.randn(2, 6, 10, 16)).shape == (2, 5)


@pytest.mark.parametrize("selection", ["per_frame", "global"])
def test_the_random_selector_is_fixed_at_evaluation_and_fresh_in_training(selection: str) -> None:
    """Evaluation must not change from call to call nor draw from training's generator; training explores."""
    model = _model(selector="random", selection=selection).eval()
    tokens = torch.randn(3, 6, 10, 16)
    before = torch.get_rng_state()
    first, second = model.select(tokens).indices, model.select(tokens[:1]).indices
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(first[0], second[0]) and torch.equal(first[0], first[2])  # every clip alike, any batch
    if selection == "per_frame":
        frames = first[0].view(6, -1) % 10
        assert any(not torch.equal(frames[0], frames[i]) for i in range(1, 6))  # positions differ per frame
    model.train()
    drawn = [model.select(tokens).indices for _ in range(2)]
    assert not torch.equal(drawn[0], drawn[1])


def test_invalid_keep_ratio_is_refused() -> None:
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="keep_ratio"):
            S5Config(keep_ratio=bad)


def test_bounded_scores_stay_inside_the_bound() -> None:
    from s5cli.models.s5 import MaskGenerator

    torch.manual_seed(0)
    generator = MaskGenerator(4, 8, bound=2.0)
    with torch.no_grad():
        generator.net[-1].weight.mul_(100.0)  # raw scores far beyond the bound
        scores = generator(torch.randn(2, 50, 4))
    assert scores.abs().max() <= 2.0 and scores.abs().max() > 1.9  # saturates at, never past, the bound


def test_exploration_temperature_anneals_to_the_plain_draw() -> None:
    model = _model(explore_temperature=9.0, explore_fraction=0.5).train()
    model.set_training_progress(0.0)
    assert model.selection_temperature() == pytest.approx(9.0)
    model.set_training_progress(0.25)
    assert model.selection_temperature() == pytest.approx(5.0)
    model.set_training_progress(0.75)
    assert model.selection_temperature() == 1.0
    model.set_training_progress(0.0)
    assert model.eval().selection_temperature() == 1.0  # evaluation never explores


def test_high_exploration_temperature_flattens_a_confident_selection() -> None:
    """With T large the draw is close to uniform although the scores strongly prefer some tokens."""
    tokens = torch.randn(64, 4, 8, 16)
    confident = tokens.reshape(64, 32, 16)[..., 0] * 20  # scores: a large first feature is preferred
    top2 = tokens[..., 0].topk(2, dim=-1).indices + torch.arange(4)[None, :, None] * 8  # 2 of 8 per frame

    def share_of_preferred_tokens(progress: float) -> float:
        model = _model(explore_temperature=50.0, keep_ratio=0.25, score_bound=None).train()
        model.set_training_progress(progress)
        handle = model.mask_generator.register_forward_hook(lambda module, args, out: confident)
        torch.manual_seed(1)
        chosen = model.select(tokens)
        handle.remove()
        hits = chosen.indices[..., None] == top2.reshape(64, 1, -1)
        return float(hits.any(-1).float().mean())

    assert share_of_preferred_tokens(1.0) > 0.95  # T = 1: the generator's choice
    assert share_of_preferred_tokens(0.0) < 0.5  # T = 50: close to the 0.25 of a uniform draw


def test_batch_norm_head_standardises_features_before_the_linear_layer() -> None:
    """head_norm=batch: an offset and a scale common to every video do not change the logits."""
    model = _model(head_norm="batch").train()
    features = torch.randn(6, model.feature_dim)
    shifted = 0.1 * features + 3.0
    torch.testing.assert_close(model.head(shifted), model.head(features), rtol=1e-3, atol=1e-3)
    plain = _model()
    assert not torch.allclose(plain.head(shifted), plain.head(features), atol=1e-2)
    assert set(_model(head_norm="batch").state_dict()) - set(plain.state_dict()) == {
        "head.0.running_mean", "head.0.running_var", "head.0.num_batches_tracked", "head.1.weight", "head.1.bias",
    }


def test_batch_norm_head_trains_on_a_batch_of_one_video() -> None:
    model = _model(head_norm="batch").train()
    norm, linear = model.head[0], model.head[1]
    running_mean = norm.running_mean.clone()
    model(torch.randn(1, 4, 6, 16)).sum().backward()
    assert linear.weight.grad is not None and linear.weight.grad.abs().sum() > 0
    # One video is normalised with the running statistics (as in evaluation), which it must not update.
    assert torch.equal(norm.running_mean, running_mean)
    features = torch.randn(1, norm.num_features)
    torch.testing.assert_close(norm(features), norm.eval()(features))


def test_unknown_head_norm_is_refused() -> None:
    with pytest.raises(ValueError, match="head_norm"):
        S5Config(head_norm="layer")


def test_guide_channel_pick_equals_index_select() -> None:
    from s5cli.models.s5 import _pick_channels

    x = torch.randn(3, 7, 32)
    channels = torch.linspace(0, 31, 8).round().long().unique()
    assert torch.equal(_pick_channels(x, channels), x.index_select(-1, channels))


def test_gather_weighted_equals_gather_times_weights_and_keeps_no_gathered_copy() -> None:
    from s5cli.models.selection import gather_weighted

    torch.manual_seed(0)
    tokens = torch.randn(2, 30, 8, requires_grad=True)
    indices = torch.stack([torch.randperm(30)[:12].sort().values for _ in range(2)])  # each row its own picks
    weights = torch.rand(2, 12, requires_grad=True)
    grad_out = torch.randn(2, 12, 8)
    reference = tokens.gather(1, indices[..., None].expand(-1, -1, 8)) * weights[..., None]
    ref_grads = torch.autograd.grad(reference, (tokens, weights), grad_out)
    saved_shapes: list[tuple[int, ...]] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved_shapes.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        ours = gather_weighted(tokens, indices, weights)
    grads = torch.autograd.grad(ours, (tokens, weights), grad_out)
    assert torch.equal(ours, reference)
    for got, expected in zip(grads, ref_grads, strict=True):
        assert torch.equal(got, expected)  # bitwise: trained numbers do not move
    assert (2, 12, 8) not in saved_shapes  # the gathered copy is regathered in backward, not stored


def test_mask_generator_recomputes_its_activations_in_training() -> None:
    torch.manual_seed(0)
    generator = MaskGenerator(16, 32, bound=2.0).train()
    x = torch.randn(2, 50, 16)
    big: list[tuple[int, ...]] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.numel() >= 2 * 50 * 16 and t.data_ptr() != x.data_ptr():  # its input is the caller's anyway
            big.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        scores = generator(x)
    grads = torch.autograd.grad(scores.square().sum(), list(generator.parameters()))
    assert big == []  # no (B, L, ·) activation of its own kept between forward and backward
    plain = 2.0 * torch.tanh(generator.net(x).squeeze(-1) / 2.0)
    assert torch.equal(scores, plain)
    for got, expected in zip(grads, torch.autograd.grad(plain.square().sum(), list(generator.parameters())),
                             strict=True):
        assert torch.equal(got, expected)


def test_eval_without_autograd_skips_the_unit_weights_and_changes_nothing() -> None:
    """At inference the kept tokens are gathered alone: the straight-through weights are exactly 1.0."""
    from s5cli.models.selection import gather_weighted

    model = _model().eval()
    tokens = torch.randn(2, 4, 6, 16)
    with torch.no_grad():
        chosen = model.select(tokens)
        assert torch.equal(chosen.weights, torch.ones_like(chosen.weights))
        weighted = model.head(model.decoder(gather_weighted(tokens.reshape(2, 24, 16), chosen.indices, chosen.weights)))
        assert torch.equal(model(tokens), weighted)


@pytest.mark.parametrize("d_input", [32, 16])  # no input projection (the lean path) / one (the plain path)
def test_inference_decodes_the_kept_rows_to_the_same_numbers(d_input: int) -> None:
    """Without autograd the decoder reads the kept rows from the input itself (`forward_selected`); the
    features are bitwise those of decoding a gathered copy, in eval and in train mode (dropout)."""
    from s5cli.models.selection import take_tokens

    model = _model(d_input=d_input, dropout=0.2)
    tokens = torch.randn(2, 4, 6, d_input)
    flat = tokens.reshape(2, 24, d_input)
    for training in (False, True):
        model.train(training)
        with torch.inference_mode():
            idx = model.select(tokens, generator=torch.Generator().manual_seed(1)).indices
            torch.manual_seed(2)
            lean = model.decoder.forward_selected(flat, idx)
            torch.manual_seed(2)
            assert torch.equal(lean, model.decoder(take_tokens(flat, idx)))
    model.eval()
    with torch.no_grad():
        idx = model.select(tokens).indices
        assert torch.equal(model(tokens), model.head(model.decoder(take_tokens(flat, idx))))


def test_inference_frees_the_gathered_rows_before_the_first_s4_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gathered copy of the kept tokens is gone while the first S4 layer runs (its memory peak): the
    residual gathers the rows again afterwards. With autograd the copy is kept, as backward needs it."""
    import weakref

    from s5cli.models import decoder as decoder_module
    from s5cli.models.selection import take_tokens

    copies: list[weakref.ref] = []

    def recording_take(source: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        rows = take_tokens(source, indices)
        copies.append(weakref.ref(rows))
        return rows

    monkeypatch.setattr(decoder_module, "take_tokens", recording_take)
    model = _model(d_input=32).eval()
    alive: list[int] = []
    model.decoder.blocks[0].s4.register_forward_pre_hook(
        lambda module, args: alive.append(sum(ref() is not None for ref in copies))
    )
    with torch.inference_mode():
        model(torch.randn(2, 4, 6, 32))
    assert alive == [0] and len(copies) == 2


def test_mask_generator_scores_in_float32_under_autocast() -> None:
    """A GPU evaluation runs under bfloat16 autocast, `visualize-mask` does not: the scores that choose
    the tokens must not depend on it (bfloat16 scores tie and reorder near-equal tokens)."""
    torch.manual_seed(0)
    generator = MaskGenerator(32, 16, bound=2.0).eval()
    response = torch.randn(2, 300, 32)
    with torch.no_grad():
        plain = generator(response)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = generator(response)
            from_half = generator(response.bfloat16())  # a bfloat16 guide response is read in float32 too
    assert mixed.dtype == torch.float32 and from_half.dtype == torch.float32
    torch.testing.assert_close(mixed, plain, rtol=0, atol=0)


def test_selection_is_the_same_under_autocast() -> None:
    """The guide's entry (here with an input Linear, d_input ≠ d_model) runs in float32 under AMP too, so
    a GPU evaluation keeps exactly the tokens `visualize-mask` (no autocast) shows."""
    model = _model(d_input=16, d_model=32, guide_channels=32, keep_ratio=0.5).eval()
    tokens = torch.randn(2, 8, 37, 16)
    with torch.no_grad():
        plain = model.select(tokens)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model.select(tokens)
    torch.testing.assert_close(mixed.scores, plain.scores, rtol=0, atol=0)
    assert torch.equal(mixed.indices, plain.indices)


def test_inference_residual_stays_float32_under_autocast() -> None:
    """Decoding the kept rows in place of a gathered copy gives the same numbers under AMP as well: the
    residual is summed into the float32 rows, not rounded into the bfloat16 S4 output."""
    from s5cli.models.selection import take_tokens

    model = _model(d_input=32).eval()
    flat = torch.randn(2, 24, 32)
    idx = model.select(flat.view(2, 4, 6, 32)).indices
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        lean = model.decoder.forward_selected(flat, idx)
        plain = model.decoder(take_tokens(flat, idx))
    torch.testing.assert_close(lean, plain, rtol=0, atol=0)


def test_random_selector_at_seed_zero_draws_what_evaluation_keeps() -> None:
    """`visualize-mask --seed 0` (the default) passes a seeded CPU generator: the picture shows the tokens
    `s5 eval` keeps, and, drawn on the generator's device, the same on a GPU."""
    model = _model(selector="random", keep_ratio=0.4).eval()
    tokens = torch.randn(1, 6, 10, 16)
    with torch.no_grad():
        evaluated = model.select(tokens).indices
        shown = model.select(tokens, generator=torch.Generator().manual_seed(0)).indices
        other = model.select(tokens, generator=torch.Generator().manual_seed(1)).indices
    assert torch.equal(shown, evaluated) and not torch.equal(other, evaluated)


@pytest.mark.parametrize("training", [True, False])
def test_a_learned_selector_model_runs_in_float64(training: bool) -> None:
    """The guide and the mask generator cast their input to float32 (for AMP), which broke a float64 model
    (float64 gradient checks of the whole S5): half precision only is raised to float32."""
    torch.manual_seed(0)
    config = S5Config(d_input=16, d_model=32, n_blocks=2, d_state=8, guide_channels=8, dropout=0.0)
    model = S5Model(config, 3).double().train(training)
    assert model(torch.randn(2, 5, 7, 16, dtype=torch.float64)).dtype == torch.float64
