"""Drawing, writers and selection helpers of visualize-mask, on hand-made inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from s5cli.errors import UserError
from s5cli.visualize.precision import kept_precision, merge_precision
from s5cli.visualize.render import DIM, colormap, patch_heat, render_frame
from s5cli.visualize.selection import random_init_model, select_per_frame
from s5cli.visualize.writers import check_output, contact_sheet, output_format, sheet_layout


def _frame(size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(80, 250, size=(size, size, 3), dtype=np.uint8)


def test_dim_style_keeps_exactly_the_kept_patches() -> None:
    pixels = _frame()
    kept = [0, 5, 15]
    out = render_frame(pixels, kept, None, 16, "dim", grid_lines=False).astype(float)
    assert out.shape == pixels.shape
    for p in range(16):
        r, c = divmod(p, 4)
        box = (slice(r * 16, r * 16 + 16), slice(c * 16, c * 16 + 16))
        expected = pixels[box].astype(float) * (1.0 if p in kept else DIM)
        assert np.abs(out[box] - expected).max() <= 0.51, p


@pytest.mark.parametrize("style", ["dim", "heatmap", "both"])
def test_a_scaled_frame_is_the_frame_in_blocks_of_scale_pixels(style: str) -> None:
    pixels = _frame()
    scores = list(np.linspace(-3.0, -1.0, 17))
    one = render_frame(pixels, [0, 5, 15], scores, 16, style, grid_lines=False)
    three = render_frame(pixels, [0, 5, 15], scores, 16, style, grid_lines=False, scale=3)
    if style == "heatmap":  # outlines of kept patches are 1 px at either scale: compare away from them
        one, three = one[2:14, 2:14], three[6:42, 6:42]
    assert np.array_equal(three, one.repeat(3, 0).repeat(3, 1))


def test_grid_lines_captions_and_banner_change_only_their_pixels() -> None:
    pixels = _frame(96)
    plain = render_frame(pixels, list(range(36)), None, 16, "dim", grid_lines=False)
    assert np.array_equal(plain, pixels)  # all kept, no overlay: the frame itself
    gridded = render_frame(pixels, list(range(36)), None, 16, "dim", grid_lines=True)
    changed = np.argwhere((gridded != pixels).any(-1))
    assert len(changed) and all(r % 16 == 0 or c % 16 == 0 for r, c in changed)
    banner = render_frame(pixels, list(range(36)), None, 16, "dim", banner="RANDOM INIT", grid_lines=False)
    rows = np.flatnonzero((banner != pixels).any(-1).any(-1))
    assert rows.min() >= 96 - 16  # the banner sits in the bottom strip
    captioned = render_frame(pixels, list(range(36)), None, 16, "dim", captions=["1/2 f0 0.0s", "kept 18/36"])
    rows = np.flatnonzero((captioned != gridded).any(-1).any(-1))
    assert rows.max() < 40  # two small lines at the top


def test_heatmap_follows_scores_and_unknown_style_is_refused() -> None:
    pixels = np.full((32, 32, 3), 128, dtype=np.uint8)
    scores = [0.0, math.log(0.1), math.log(0.2), math.log(0.3), math.log(0.4)]  # CLS, then 4 patches
    heat = patch_heat(scores, [3], 4)
    assert heat[0] == 0.0 and heat[3] == 1.0 and np.all(np.diff(heat) > 0)
    out = render_frame(pixels, [3], scores, 16, "heatmap", grid_lines=False)
    assert np.array_equal(out[20, 20], np.asarray((0.5 * 128 + 0.5 * colormap(np.array(1.0))).round(), np.uint8))
    assert colormap(np.array([0.0, 1.0])).shape == (2, 3)
    with pytest.raises(UserError, match="unknown"):
        render_frame(pixels, [0], None, 16, "sparkles")


def test_output_formats_and_contact_sheet_layout(tmp_path) -> None:
    assert output_format("a.GIF") == ".gif" and output_format("b.mp4") == ".mp4"
    with pytest.raises(UserError, match=r"unknown output format \(\.webm\)"):
        output_format("c.webm")
    with pytest.raises(UserError, match="folder"):
        check_output(tmp_path)
    assert sheet_layout(1) == (1, 1) and sheet_layout(5) == (2, 3) and sheet_layout(16) == (4, 4)
    frames = [np.full((8, 8, 3), i * 10, dtype=np.uint8) for i in range(5)]
    sheet = np.asarray(contact_sheet(frames))
    assert sheet.shape == (18, 28, 3)
    assert (sheet[8:10] == 24).all() and (sheet[:8, 8:10] == 24).all()  # the gaps: SHEET_BACKGROUND
    assert (sheet[10:18, 10:18] == 40).all()  # frame 4: row 1, column 1


def test_select_per_frame_groups_flat_indices_by_frame() -> None:
    model = random_init_model(d_input=12, keep_ratio=0.3, seed=1)
    tokens = torch.randn(4, 10, 12)
    kept, scores = select_per_frame(model, tokens, seed=0)
    assert len(kept) == 4 and all(len(row) == 3 for row in kept)
    assert all(row == sorted(row) and all(0 <= s < 10 for s in row) for row in kept)
    assert len(scores) == 4 and all(len(row) == 10 for row in scores)
    # the kept tokens are the top-scoring ones of each frame (deterministic at eval)
    for row, score in zip(kept, scores, strict=True):
        assert set(row) == set(np.argsort(score)[-3:].tolist())
    again, _ = select_per_frame(model, tokens, seed=0)
    assert again == kept


def _selection(kept_per_frame: list[list[int]], grid: int = 2) -> dict:
    return {
        "grid": grid,
        "frames": [{"source_frame": f, "kept": kept} for f, kept in enumerate(kept_per_frame)],
    }


def test_kept_precision_on_a_hand_made_example() -> None:
    # 2x2 grid (tokens 1..4), 4 frames; one event at row 1, col 0 (token 3) in frames 1-2, one at (0, 1)
    # (token 2) in frame 3.
    truth = {"grid": 2, "events": [{"type": 0, "start": 1, "end": 3, "row": 1, "col": 0},
                                   {"type": 1, "start": 3, "end": 4, "row": 0, "col": 1}]}
    selection = _selection([[0, 1], [3, 4], [1, 2], [0, 2]])
    result = kept_precision(selection, truth)
    assert result["event_cells"] == 3 and result["kept_on_event"] == 2  # frame 1 hit, frame 2 miss, frame 3 hit
    assert result["kept_patches"] == 6  # CLS (token 0) is not a patch
    assert result["coverage"] == pytest.approx(2 / 3)
    assert result["coverage_chance"] == pytest.approx(6 / 16)
    assert result["precision"] == pytest.approx(2 / 6)
    assert result["precision_chance"] == pytest.approx(3 / 16)
    assert result["coverage_lift"] == pytest.approx((2 / 3) / (6 / 16))
    # the events list alone works too, and pooling one result changes nothing
    assert kept_precision(selection, truth["events"])["coverage"] == result["coverage"]
    assert merge_precision([result])["coverage"] == result["coverage"]
    with pytest.raises(ValueError, match="grid"):
        kept_precision(selection, {**truth, "grid": 6})


def test_kept_precision_of_a_perfect_and_a_blind_selector() -> None:
    truth = {"grid": 2, "events": [{"type": 0, "start": 0, "end": 2, "row": 0, "col": 0}]}
    perfect = kept_precision(_selection([[1], [1]]), truth)
    blind = kept_precision(_selection([[4], [4]]), truth)
    assert perfect["coverage"] == 1.0 and perfect["precision"] == 1.0 and perfect["coverage_lift"] == 4.0
    assert blind["coverage"] == 0.0 and blind["precision"] == 0.0
    pooled = merge_precision([perfect, blind])
    assert pooled["coverage"] == 0.5 and pooled["coverage_chance"] == 0.25 and pooled["videos"] == 2
