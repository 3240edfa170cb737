"""Run the backbone and the S5 mask generator on one video; return, per sampled frame, the kept tokens and scores.

Token index `s` within a frame follows the backbone's layout: 0 = CLS, 1..P = patches in row-major order of the
(size/16) x (size/16) grid. The model sees all T·S tokens of the clip at once, exactly as in training, and its
`select` (deterministic top-K in eval mode) decides what reaches the S4 decoder; we only regroup the answer by
frame. A plan longer than the checkpoint's clip is selected a window at a time, the windows `s5 eval` cuts.
`s5cli.visualize.precision` scores a selection against the synthetic task's ground-truth event cells.
The video's frames become tokens in `s5cli.visualize.video_encoding`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from s5cli.errors import UserError
from s5cli.visualize.video_encoding import encode_video

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from s5cli.visualize.plan_warnings import TrainedClips
    from s5cli.visualize.progress import ProgressReport
    from s5cli.visualize.video_encoding import VideoSampling

PATCH_SIZE = 16  # every backbone we ship uses 16 px patches
JSON_FORMAT = "s5cli-mask-selection/1"
RANDOM_INIT = "random-init"


@dataclass
class MaskSelection:
    """Which tokens of each sampled frame the model kept, with the frames it saw (for drawing)."""

    video: str
    source_frames: list[int]  # frame index in the video of each sampled frame
    times: list[float]  # seconds into the video of each sampled frame
    image_size: int
    patch_size: int
    tokens_per_frame: int  # S = 1 + P
    keep_ratio: float
    selector: str  # "learned" | "random" | "uniform" | "none"
    selection: str  # "per_frame" | "global"
    kept: list[list[int]]  # per frame: kept token indices in [0, S), sorted (0 = CLS)
    scores: list[list[float]] | None  # per frame: S log-probabilities of the mask generator (learned only)
    model: str  # checkpoint path / Hub id, or "random-init"
    images: np.ndarray | None = field(default=None, repr=False)  # (T, size, size, 3) uint8 the backbone saw
    resize: str = "crop"  # how frames became the backbone's squares (`frame_transform.RESIZE_MODES`)

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def random_init(self) -> bool:
        """True when the selection came from untrained weights (a smoke test, not a result)."""
        return self.model == RANDOM_INIT

    def kept_patches(self, frame: int) -> list[int]:
        """Kept patch numbers (0-based, row-major over the grid) of one sampled frame; CLS left out."""
        return [s - 1 for s in self.kept[frame] if s >= 1]

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form (the `--json` side output)."""
        frames = []
        for t, kept in enumerate(self.kept):
            entry: dict[str, Any] = {
                "index": t,
                "source_frame": self.source_frames[t],
                "time": round(self.times[t], 4),
                "kept": list(kept),
                "kept_patches": len(self.kept_patches(t)),
            }
            if self.scores is not None:
                entry["scores"] = [round(v, 5) for v in self.scores[t]]
            frames.append(entry)
        return {
            "format": JSON_FORMAT,
            "video": self.video,
            "model": self.model,
            "random_init": self.random_init,
            "image_size": self.image_size,
            "resize": self.resize,
            "patch_size": self.patch_size,
            "grid": self.grid,
            "tokens_per_frame": self.tokens_per_frame,
            "token_layout": "0 = CLS, 1..P = patches row-major over the grid",
            "keep_ratio": self.keep_ratio,
            "selector": self.selector,
            "selection": self.selection,
            "frames": frames,
        }


def random_init_model(d_input: int, keep_ratio: float, seed: int = 0):
    """A small S5 with random weights (smoke tests only: its selection means nothing)."""
    import torch

    from s5cli.models.s5 import S5Config, S5Model

    config = S5Config(
        d_input=d_input, d_model=64, n_blocks=2, d_state=16, dropout=0.0, guide_channels=32, mg_hidden=32,
        keep_ratio=keep_ratio,
    )
    with torch.random.fork_rng(devices=[]):  # built on the CPU: no GPU generator to keep (nor a context to make)
        torch.manual_seed(seed)
        model = S5Model(config, num_outputs=2)
    return model.eval()


def set_keep_ratio(model: Any, keep_ratio: float | None) -> float:
    """Override the model's keep ratio (a selection-time setting, no retraining needed); returns the one in use."""
    if keep_ratio is not None:
        if not 0.0 < keep_ratio <= 1.0:
            raise UserError(f"--keep-ratio {keep_ratio} is out of range: use a value in (0, 1]")
        model.config.keep_ratio = float(keep_ratio)
    return float(model.config.keep_ratio)


def select_per_frame(
    model: Any, tokens: torch.Tensor, seed: int = 0
) -> tuple[list[list[int]], list[list[float]] | None]:
    """Kept token indices per frame (and per-frame score rows) for (T, S, D) tokens of one clip, in any float
    dtype: converted to the model's float32 input on its device (`as_model_input`), as evaluation
    converts the cache's float16 windows."""
    import torch

    from s5cli.train.evaluation import as_model_input

    if not hasattr(model, "select"):
        raise UserError(f"the model is a {type(model).__name__}, which keeps every token: visualize-mask needs an S5 model")
    t, s, _ = tokens.shape
    device = next(model.parameters()).device
    # A CPU generator whatever the device: the draw is then the same on a GPU, and at seed 0 it is the
    # random selector's evaluation draw (`S5Model._evaluation_noise`), so the picture shows what eval keeps.
    generator = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        chosen = model.select(as_model_input(tokens[None], device), generator=generator)
    flat = chosen.indices[0].cpu().tolist()
    kept: list[list[int]] = [[] for _ in range(t)]
    for index in flat:
        kept[index // s].append(index % s)
    scores = None
    if chosen.scores is not None:
        scores = chosen.scores[0].float().cpu().view(t, s).tolist()
    return [sorted(row) for row in kept], scores


def select_by_window(
    model: Any, tokens: torch.Tensor, trained: TrainedClips | None, seed: int = 0,
    report: ProgressReport | None = None,
) -> tuple[list[list[int]], list[list[float]] | None]:
    """`select_per_frame` over evaluation's windows of (T, S, D) tokens longer than the model's clip
    (`TokenDataset`'s: `trained.frames` frames every `trained.stride`, the last one ending at the last
    frame), each frame keeping the selection of the first window that covers it; one selection for a plan
    no longer than a clip, or a model without a clip length (as evaluation then reads it whole).

    Why: `s5 eval` selects each window on its own, and the guide's context and S4 kernel length depend on
    the sequence's length: one selection over a 16-frame plan of an 8-frame model kept other tokens in a
    quarter of the frames than evaluation's two windows. Windows adding no frame are skipped. A plan
    shorter than a clip is selected padded to it (`select_padded`), as evaluation pads it."""
    from s5cli.data.datasets.token_dataset import num_windows, window_start

    total = tokens.shape[0]
    if trained is None or total == trained.frames:
        return select_per_frame(model, tokens, seed)
    if total < trained.frames:
        return select_padded(model, tokens, trained.frames, seed)
    length = trained.frames
    stride = min(trained.stride or length, length)  # a longer one (refused in recipes) would leave frames out
    kept: list[list[int]] = []
    scores: list[list[float]] | None = []
    count = num_windows(total, length, stride)
    for window in range(count):
        first = window_start(total, length, window, stride)
        if first + length > len(kept):  # windows end later and later: the new frames are the last ones
            window_kept, window_scores = select_per_frame(model, tokens[first : first + length], seed)
            new = len(kept) - first
            kept += window_kept[new:]
            scores = None if window_scores is None or scores is None else scores + window_scores[new:]
        if report is not None:
            report("select", window + 1, count)
    return kept, scores


def select_padded(
    model: Any, tokens: torch.Tensor, frames: int, seed: int = 0
) -> tuple[list[list[int]], list[list[float]] | None]:
    """`select_per_frame` over (T, S, D) tokens padded with their last frame to `frames` frames (`fit_length`),
    cut back to the T real frames.

    Why: evaluation pads a sequence shorter than the clip length (a short video at --fps, a clip of fewer
    --frames) before the model sees it; selected unpadded, 2 of 3 frames of a 3-frame plan of an 8-frame
    model kept other tokens than `s5 eval --video` keeps."""
    from s5cli.data.datasets.token_dataset import fit_length

    total = tokens.shape[0]
    kept, scores = select_per_frame(model, fit_length(tokens, frames), seed)
    return kept[:total], None if scores is None else scores[:total]


def run_selection(
    video: str | os.PathLike[str],
    model: Any,
    backbone: nn.Module,
    sampling: VideoSampling,
    *,
    model_name: str,
    seed: int = 0,
    report: ProgressReport | None = None,
    trained: TrainedClips | None = None,
    scale: int = 1,
) -> MaskSelection:
    """Decode `video` (frames as `encode_video` samples them), run backbone + S5 selection (a window of the
    `trained` clip length at a time, `select_by_window`), and group the kept tokens by frame. `scale`: how
    many times larger the frames will be drawn (for `encode_video`'s memory warning)."""
    # Checked before decoding where the backbone states its width: a film takes minutes to encode.
    _check_width(getattr(backbone, "dim", None), model)
    encoded = encode_video(video, backbone, sampling, report=report, trained=trained, scale=scale)
    tokens = encoded.tokens
    _check_width(tokens.shape[-1], model)
    kept, scores = select_by_window(model, tokens, trained, seed, report)
    return MaskSelection(
        video=str(video),
        source_frames=encoded.source_frames,
        times=encoded.times,
        image_size=sampling.image_size,
        patch_size=PATCH_SIZE,
        tokens_per_frame=int(tokens.shape[1]),
        keep_ratio=float(model.config.keep_ratio),
        selector=str(model.config.selector),
        selection=str(model.config.selection),
        kept=kept,
        scores=scores,
        model=model_name,
        images=encoded.pixels,
        resize=sampling.resize,
    )


def _check_width(width: int | None, model: Any) -> None:
    """UserError when the backbone's token width is not the model's input width (None: not known yet)."""
    expected = getattr(model.config, "d_input", None)
    if width is not None and expected is not None and int(width) != int(expected):
        raise UserError(
            f"the backbone gives {width}-dim tokens but the model expects d_input={expected}: "
            "use the backbone the checkpoint was trained with"
        )
