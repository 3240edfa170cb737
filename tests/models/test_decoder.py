"""ViS4mer decoder: LVU-size shapes, halving per block, heads."""

from __future__ import annotations

import torch

from s5cli.models.decoder import DecoderConfig, TemporalS4Decoder, ViS4mer


def test_lvu_setting_forward_and_backward() -> None:
    # ViS4mer's LVU setting: 60 frames x 197 tokens x 1024-d in, classes out.
    torch.manual_seed(0)
    model = ViS4mer(DecoderConfig(), num_outputs=4)
    tokens = torch.randn(1, 60, 197, 1024)
    logits = model(tokens)
    assert logits.shape == (1, 4)
    logits.sum().backward()
    assert isinstance(model.decoder.encoder, torch.nn.Identity)  # 1024 -> 1024: ViS4mer never applies it
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name


def test_blocks_halve_length_and_width() -> None:
    decoder = TemporalS4Decoder(DecoderConfig(d_input=24, d_model=32, n_blocks=3, d_state=8))
    assert isinstance(decoder.encoder, torch.nn.Linear)
    x = decoder.encoder(torch.randn(2, 101, 24))
    widths, lengths = [], []
    for block in decoder.blocks:
        x = block(x)
        widths.append(x.shape[-1])
        lengths.append(x.shape[1])
    assert widths == [16, 8, 4] and lengths == [51, 26, 13]
    assert decoder.feature_dim == 4


def test_identity_encoder_when_widths_match_and_regression_head() -> None:
    model = ViS4mer(DecoderConfig(d_input=32, d_model=32, n_blocks=2, d_state=8), num_outputs=1)
    assert isinstance(model.decoder.encoder, torch.nn.Identity)
    assert model(torch.randn(3, 5, 7, 32)).shape == (3, 1)
