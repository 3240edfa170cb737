"""Run the backbone and the S5 mask generator on one video; return, per sampled frame, the kept tokens and scores.

Token index `s` within a frame follows the backbone's layout: 0 = CLS, 1..P = patches in row-major order of the
(size/16) x (size/16) grid. The model sees all T·S tokens of the clip at once, exactly as in training, and its
`select` (deterministic top-K in eval mode) decides what reaches the S4 decoder; we only regroup the answer by
frame. A plan longer than the checkpoint's clip is selected a window at a time, the windows `s5 eval` cuts.
`s5cli.visualize.precision` scores a selection against the synthetic task's ground-truth event cells.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from s5cli.data.sampling import FramePlan
from s5cli.errors import UserError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from s5cli.data.decord_reading import VideoInfo

PATCH_SIZE = 16  # every backbone we ship uses 16 px patches
JSON_FORMAT = "s5cli-mask-selection/1"
RANDOM_INIT = "random-init"
# An --fps above this multiple of the video's own rate is refused (see `_open_sampled`); up to it, warned about.
MAX_FPS_OVER_SOURCE = 2.0
# A plan longer than this many of the checkpoint's clips is warned about (`long_plan_warning`), however it
# was asked for: --fps over a whole video, many uniform --frames, or a long clip of both.
LONG_PLAN_CLIPS = 4
# A plan whose frames to draw take more memory than this is warned about (`drawing_memory_warning`) where
# `long_plan_warning` says nothing (no clip length: --random-init, whole videos at data.fps): 2 GiB is
# ~7,000 frames at 224 px drawn 1:1, two hours at 1 fps.
LARGE_DRAWING_BYTES = 2 * 2**30
# report(stage, done, total): lets the CLI drive a progress bar without this module knowing about Rich.
ProgressReport = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TrainedClips:
    """How the checkpoint's clips were sampled: `frames` a clip, at `fps`, or spread uniformly over each
    video (fps None); `stride`: frames between the starts of evaluation's windows over a longer video
    (eval.window_stride; None: the clip length). A longer plan is selected a window at a time as `s5 eval`
    does (`select_by_window`); one many times that long is warned about with the fix that fits this kind
    of checkpoint and what was asked."""

    frames: int
    fps: float | None = None
    stride: int | None = None

    def advice(self, frames: int | None, fps: float | None) -> str:
        """The command-line change that shows the model one clip like its training clips, from a plan asked
        for with these --frames and --fps (None: not given)."""
        if self.fps and fps is not None:  # a rate is asked for: one clip of the trained length at it
            verb = "add" if frames is None else "give"
            return f"{verb} --frames {self.frames} (and --start SECONDS) to show one clip"
        given = " and ".join(flag for flag, value in (("--frames", frames), ("--fps", fps)) if value is not None)
        shown = (f"one {self.frames}-frame clip at {self.fps:g} fps" if self.fps
                 else f"{self.frames} frames spread over the video")
        return f"drop {given} to show {shown}, as in training"


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


@dataclass(frozen=True)
class VideoSampling:
    """How `encode_video` turns a video into tokens: which frames (`clip_plan`: `frames` uniform frames, every
    frame at `fps`, or with both one clip of `frames` frames at `fps`; from `start` seconds on), the crop
    size and how frames become it (`resize`: the checkpoint's data.resize), the decoder's threads and the dtype
    the tokens are rounded through (the feature cache's; None: not rounded). `frame_pool` (with `frames` and
    no fps): instead the `frames` rows of that many uniform frames, which evaluation reads of a checkpoint
    trained with data.frame_pool (`pool_rows_from_start`). One value that `run_selection` passes on whole,
    so a new setting is added in one place."""

    frames: int | None
    fps: float | None
    image_size: int
    start: float = 0.0
    threads: int = 2
    storage_dtype: str | None = "float16"
    resize: str = "crop"
    frame_pool: int | None = None


@dataclass
class EncodedVideo:
    """A video's sampled frames as backbone tokens, with the crops the backbone saw (to draw on)."""

    tokens: torch.Tensor  # (T, S, D) in the storage dtype, like the feature cache's (float32 without one)
    pixels: np.ndarray  # (T, size, size, 3) uint8
    source_frames: list[int]
    times: list[float]


def encode_video(
    video: str | os.PathLike[str],
    backbone: nn.Module,
    sampling: VideoSampling,
    *,
    report: ProgressReport | None = None,
    trained: TrainedClips | None = None,
    scale: int = 1,
) -> EncodedVideo:
    """Sample frames as `sampling` says, resize them to its `image_size` squares and run the backbone.

    Through the same code as `s5 extract` (`encode_clip`: decoder scaling, uint8 crops, batches,
    normalisation, float16 autocast on CUDA, rounding to the storage dtype), so the model scores exactly the
    tokens its feature cache would hold; and streamed, so a film sampled at `--fps` is held as uint8
    crops (to draw on) and tokens, never as float frames. The tokens stay in the storage dtype, as the cache
    holds them: a float32 copy of a whole film's float16 tokens doubled their memory for numbers that
    `select_per_frame` gets anyway by converting a window at a time (as `s5 eval --video` does).
    UserError if the video cannot be read. `trained`: how the model's training clips were sampled (a much
    longer plan is warned about); `scale`: how many times larger the CLI draws each frame (a plan whose
    drawing would take gigabytes is warned about).
    """
    import numpy as np

    from s5cli.data.cache import storage_dtype as cached_dtype
    from s5cli.data.encode import encode_clip

    clip = _open_sampled(video, sampling, trained, scale)
    image_size = sampling.image_size
    total = len(clip.plan)
    pixels = np.empty((total, image_size, image_size, 3), dtype=np.uint8)
    encoded = 0

    def keep_crops(row: int, crops: torch.Tensor) -> None:
        pixels[row : row + crops.shape[0]] = crops.permute(0, 2, 3, 1).numpy()
        if report is not None:
            report("decode", row + crops.shape[0], total)

    def batch_done(batch_frames: int) -> None:
        nonlocal encoded
        encoded += batch_frames
        if report is not None:
            report("backbone", encoded, total)

    dtype = cached_dtype(sampling.storage_dtype) if sampling.storage_dtype else None
    tokens = encode_clip(clip, backbone, image_size, dtype, on_batch=batch_done, on_crops=keep_crops,
                         resize=sampling.resize)
    times = [clip.info.time_of(index) for index in clip.plan.indices]
    return EncodedVideo(tokens, pixels, list(clip.plan.indices), times)


def _open_sampled(
    video: str | os.PathLike[str], sampling: VideoSampling, trained: TrainedClips | None = None, scale: int = 1
):
    """The video opened for the backbone with `clip_plan`'s frames (or a pool's rows, `pool_rows_from_start`);
    warns about padding, repeated frames and a plan far longer than the model's clips before decoding past
    the first chunk (`open_clip`). UserError for an unreadable video or a start past its last frame."""
    from s5cli.cli.console import print_warning
    from s5cli.data.decode import open_clip
    from s5cli.data.sampling import clip_plan

    frames, fps, start = sampling.frames, sampling.fps, sampling.start
    asked: list[int] = []  # the plan's length before padding was capped (see `cap_padding`)

    def plan_from_start(info: VideoInfo):
        asked.clear()  # a damaged video is planned again over the frames before the damage (`open_clip`)
        if fps is not None and frames is None and fps > MAX_FPS_OVER_SOURCE * info.fps:
            # Over the whole video every source frame would repeat fps / info.fps times: --fps 1000 on a 25 fps
            # video decoded, encoded and drew 2,000 frames (1.6 GB) to show 50, and --fps 1e5 ran out of
            # memory. With --frames the plan is that many frames whatever the rate.
            raise UserError(f"--fps {fps:g} is {fps / info.fps:.3g} times {video}'s own {info.fps:g} fps (each frame "
                            f"would repeat): give at most --fps {MAX_FPS_OVER_SOURCE * info.fps:.4g}, or a clip of "
                            "--frames N")
        last = info.time_of(info.num_frames - 1)  # when the last frame is shown
        if not 0.0 <= start <= last:
            raise UserError(f"--start {start:g} is past the last frame of {video} (at {last:.2f} s): give a time "
                            "in seconds from 0 to that")
        try:
            if sampling.frame_pool is not None and frames is not None and fps is None:
                plan = pool_rows_from_start(info, frames, sampling.frame_pool, start)
            else:
                plan = clip_plan(info.num_frames, info.fps, frames, fps, start, timeline=info.timeline)
        except ValueError as error:  # an fps plan past MAX_FPS_PLAN_FRAMES
            raise UserError(f"{video}: --fps {fps:g}: {error}") from None
        capped = cap_padding(plan, trained.frames if trained else 0)
        if len(capped) < len(plan):
            asked.append(len(plan))
        return capped

    clip = open_clip(video, frames, fps, num_threads=sampling.threads, shorter_side=sampling.image_size,
                     planner=plan_from_start, resize=sampling.resize)
    if asked:
        real = clip.plan.real_frames
        if clip.plan.padded:
            shown = f"padded to {len(clip.plan)} by repeating the last frame (the model's clip length), not to {asked[0]}"
        elif trained:
            shown = f"showing those {real} (no padding past the model's {trained.frames}-frame clips)"
        else:
            shown = f"showing those {real} (a model without a trained clip length needs no padding)"
        print_warning(f"{video}: only {real} frame{'s' if real != 1 else ''} to sample, asked for {asked[0]}; {shown}")
    clip.print_warnings(padding=not asked)
    if clip.repeats_frames:
        print_warning(f"--fps {fps:g} is above the video's own {clip.info.fps:g} fps: source frames will "
                      "repeat in the output")
    long_plan = (long_plan_warning(video, len(clip.plan), frames, fps, trained)
                 or drawing_memory_warning(video, len(clip.plan), sampling, scale))
    if long_plan:
        print_warning(long_plan)
    return clip


def pool_rows_from_start(info: VideoInfo, frames: int, pool: int, start: float = 0.0) -> FramePlan:
    """The source frames evaluation reads of a checkpoint trained with data.frame_pool (`pool_rows_planner`:
    `frames` uniform rows of a `pool`-frame uniform plan), over the video from `start` seconds on.

    Why not `clip_plan`'s `frames` uniform frames: they are other frames than the pool rows `s5 eval` and
    `s5 eval --video` score (source frame 3 where the rows give 5), so the picture showed another selection."""
    from dataclasses import replace

    from s5cli.data.encode import pool_rows_planner
    from s5cli.data.sampling import start_frame

    first = start_frame(info.num_frames, info.fps, start, info.timeline)
    rest = replace(info, num_frames=info.num_frames - first,
                   timeline=info.timeline.after(first) if info.timeline is not None else None)
    plan = pool_rows_planner({"frames": frames, "frame_pool": pool})(rest)  # a pool and no fps: never None
    return FramePlan(tuple(first + index for index in plan.indices), plan.padded)


def long_plan_warning(
    video: str | os.PathLike[str], planned: int, frames: int | None, fps: float | None, trained: TrainedClips | None
) -> str | None:
    """The warning for a plan of `planned` frames more than LONG_PLAN_CLIPS times the model's clip, sampled
    with these frames and fps (None: not set); None for a shorter plan or a model without a clip length.

    Why, however the plan was asked for: it is selected a window at a time (`select_by_window`), many
    pictures of windows rather than one of a clip like the model's; a film at 1 fps, or --frames 1000, is
    also gigabytes of tokens for a ViT-L checkpoint and minutes of windows."""
    if trained is None or planned <= LONG_PLAN_CLIPS * trained.frames:
        return None
    sampled = f"at {fps:g} fps" if fps is not None else "spread over the video"
    return (f"{video}: {planned} frames {sampled} are {planned / trained.frames:.0f} times the model's "
            f"{trained.frames}-frame clips, selected a clip-length window at a time: "
            f"{trained.advice(frames, fps)}")


def drawing_memory(frames: int, image_size: int, scale: int = 1) -> int:
    """Bytes of the uint8 RGB frames a plan of `frames` holds to draw on: the backbone's `image_size` crops
    (`encode_video`) and the frames drawn from them `scale` times larger (`render_selection`)."""
    return 3 * frames * image_size**2 * (1 + scale**2)


def drawing_memory_warning(
    video: str | os.PathLike[str], planned: int, sampling: VideoSampling, scale: int = 1
) -> str | None:
    """The warning for a plan of `planned` frames whose frames to draw (`drawing_memory`) take more than
    LARGE_DRAWING_BYTES; None for a smaller one.

    Why: `long_plan_warning` needs the model's clip length, so with --random-init or a checkpoint trained on
    whole videos a film at --fps 25 (180,000 frames, ~54 GB at 224 px) started without a word and ran out
    of memory partway, after minutes of decoding."""
    needed = drawing_memory(planned, sampling.image_size, scale)
    if needed <= LARGE_DRAWING_BYTES:
        return None
    sampled = f"at {sampling.fps:g} fps" if sampling.fps is not None else "spread over the video"
    drawn = f"{sampling.image_size} px" + (f" drawn x{scale}" if scale > 1 else "")
    fix = ("add --frames N (and --start SECONDS) to show one clip" if sampling.frames is None
           else "give fewer --frames")
    return (f"{video}: {planned} frames {sampled} need ~{needed / 2**30:.3g} GiB of memory to draw ({drawn}): "
            f"{fix}")


def cap_padding(plan: FramePlan, clip_frames: int) -> FramePlan:
    """`plan` with its trailing repeats of the last frame cut so it is no longer than the real frames or
    `clip_frames` (the checkpoint's clip length), whichever is more.

    Why: padding exists so a short video fills the clip length the model was trained on (what `s5 eval`
    does too); past that it only repeats one frozen frame. `--frames 100000` on a 250-frame video would
    encode and draw 99,750 copies of the last frame for minutes."""
    keep = max(plan.real_frames, clip_frames)
    if len(plan) <= keep:
        return plan
    return FramePlan(plan.indices[:keep], padded=keep - plan.real_frames)


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
