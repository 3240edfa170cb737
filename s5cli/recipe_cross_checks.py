"""Recipe rules that tie several keys together (`cross_checks`), run once every section is valid on its own.

Each rule reports the keys a user sets that it involves, so that the message says "command-line override"
when one of them came from there. What each key alone allows is `s5cli.recipe_schema`; the backbone and
synthetic-task rules import their modules only when run, so that this module stays as light as the schema.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Sequence
from typing import Any

from s5cli.errors import UserError
from s5cli.recipe_schema import LVU_TASKS, Recipe, SyntheticSection, clip_frames


def suggest_choice(value: str, choices: Sequence[str]) -> str:
    """' (did you mean X?)' for the closest choice, or a unique one that starts with `value`, else ''.

    In any case: `PATCH_POOL` means patch_pool, as `model.kernel=DPLR` is dplr."""
    lowered = {choice.lower(): choice for choice in choices}
    value = value.lower()
    close = [lowered[m] for m in difflib.get_close_matches(value, list(lowered), n=1, cutoff=0.6)]
    starts = [c for low, c in lowered.items() if len(value) >= 3 and low.startswith(value)]
    if not close and len(starts) == 1:
        close = starts
    return f" (did you mean {close[0]}?)" if close else ""


def cross_checks(recipe: Recipe, add: Callable[[str | tuple[str, ...], str], None]) -> None:
    """Rules that tie several keys together; each names the keys a user sets, so that the message says
    "command-line override" when one of them came from there. Not `train.objective`: `s5 pretrain` and
    `s5 finetune` add it as an override themselves, and a mistake in the file would read as the user's
    command line."""
    data, model = recipe.data, recipe.model
    if data.dataset == "lvu" and not data.task:
        add(("data.task", "data.dataset"), "data.task is not set: LVU needs one of " + ", ".join(LVU_TASKS))
    # A dataset's own keys beside another dataset: most often a recipe written without `dataset:`, which
    # made it the synthetic task (generated into data.root, beside the user's own videos).
    if data.task and data.dataset != "lvu":
        add(("data.task", "data.dataset"), f"data.task={data.task} is an LVU task, but data.dataset is "
            f"{data.dataset}: set data.dataset: lvu, or remove data.task")
    if data.annotations and data.dataset == "synthetic":
        add(("data.annotations", "data.dataset"), "data.annotations names split files, which the synthetic task "
            "does not read: set data.dataset (lvu, breakfast or coin), or remove data.annotations")
    if data.frames is None and data.fps is None:
        add(("data.frames", "data.fps"), "data.frames and data.fps are both null: set one (T frames, or frames per second)")
    if (data.fps is not None and data.frames is None and data.window_seconds is None and data.dataset != "synthetic"
            and recipe.train.objective != "lsmcl"):  # LSMCL cuts every clip to train.lsmcl.long_frames
        # Each clip is then a whole video, and real videos differ in length: a batch of two cannot be
        # stacked, which surfaced as a traceback on the first batch, after extracting every video.
        wide = [f"{key}={size}" for key, size in (("train.batch_size", recipe.train.batch_size),
                                                   ("eval.batch_size", recipe.eval.batch_size)) if size > 1]
        if wide:
            add(("data.frames", "data.window_seconds", "train.batch_size", "eval.batch_size"),
                f"data.frames and data.window_seconds are null with data.fps={data.fps}, so each clip is a whole "
                f"video and videos differ in length: set data.window_seconds (clip = seconds x fps) or data.frames, "
                f"or use batches of 1 ({', '.join(wide)})")
    if data.window_seconds is not None and data.fps is None:
        add(("data.window_seconds", "data.fps"), f"data.window_seconds={data.window_seconds} needs data.fps to be set")
    if data.frame_pool is not None:
        if data.fps is not None:
            add(("data.frame_pool", "data.fps"), f"data.frame_pool={data.frame_pool} draws from uniform frames over "
                "a whole video, not frames at data.fps: set data.fps=null, or data.frame_pool=null")
        elif data.frames is not None and data.frame_pool < data.frames:
            add(("data.frame_pool", "data.frames"), f"data.frame_pool={data.frame_pool} is fewer frames than a clip "
                f"of data.frames={data.frames} draws from it: use data.frame_pool >= {data.frames}")
    if data.dataset == "synthetic":
        _check_synthetic(data.synthetic, add)
    _check_backbone(recipe, add)
    _check_position_embeddings(recipe, add)
    d_model, n_blocks = getattr(model, "d_model", None), getattr(model, "n_blocks", None)
    if d_model is not None and n_blocks is not None and hasattr(model, "pool") and d_model % (2**n_blocks):
        add(("model.d_model", "model.n_blocks"), f"model.d_model={d_model} must be divisible by 2**model.n_blocks = {2**n_blocks}")
    heads = getattr(model, "heads", None)
    if d_model is not None and heads and d_model % heads:
        add(("model.heads", "model.d_model"), f"model.heads={heads} must divide model.d_model={d_model}")
    if getattr(model, "kernel", None) == "dplr" and getattr(model, "init", "legs") != "legs":
        add(("model.init", "model.kernel"), f"model.init={model.init!r} is not allowed with kernel dplr: use legs (or kernel: s4d)")
    repo_id = recipe.hub.repo_id
    if repo_id is not None:
        from s5cli.hub.paths import is_repo_id

        if not is_repo_id(repo_id):  # the rule `s5 push` applies: what it would refuse is refused up front
            add("hub.repo_id", f"hub.repo_id={repo_id!r} is not a Hub repo id: use OWNER/NAME (letters, digits, - _ .)")
    dt_min, dt_max = getattr(model, "dt_min", None), getattr(model, "dt_max", None)
    if dt_min is not None and dt_max is not None and dt_min > dt_max:
        add(("model.dt_min", "model.dt_max"), f"model.dt_min={dt_min} must not exceed model.dt_max={dt_max}")
    stride, clip = recipe.eval.window_stride, clip_frames(data)
    if stride is not None and clip is not None and stride > clip:
        add(("eval.window_stride", "data.frames", "data.fps", "data.window_seconds"), f"eval.window_stride={stride} is longer than a clip ({clip} frames): frames "
            f"between windows would never be seen; use at most {clip}")
    train = recipe.train
    if not str(train.out_dir).strip():
        add("train.out_dir", "train.out_dir is empty: name the run folder, e.g. runs/mine")
    if train.early_stop_patience is not None and train.objective == "lsmcl":
        add("train.early_stop_patience", "train.early_stop_patience needs validation metrics, and LSMCL "
            "pretraining has none: set it to null")
    if recipe.optim.schedule == "plateau" and train.objective == "lsmcl":
        # The plateau schedule steps on validation metrics only: pretraining kept optim.lr throughout, and
        # ignored optim.warmup_steps, without a word (the paper recipes, which pretraining copies, use it).
        add("optim.schedule", "optim.schedule=plateau lowers the rate when validation stalls, and LSMCL "
            "pretraining has no validation: use cosine or constant")
    # train.lsmcl is an LSMCLConfig here: cross checks run once every section has been built without problems.
    if train.objective == "lsmcl" and train.batch_size < 2 and not train.lsmcl.queue_size:
        add(("train.batch_size", "train.lsmcl.queue_size"), f"train.batch_size={train.batch_size} with LSMCL and no queue contrasts each video "
            "with no other (the loss is 0 and nothing is learnt): use train.batch_size >= 2 or set "
            "train.lsmcl.queue_size")
    cached = data.frame_pool or data.frames
    if train.objective == "lsmcl" and data.fps is None and cached is not None and train.lsmcl.long_frames > cached:
        # Uniform sampling caches `cached` frames a video: a longer clip only repeats its last frame.
        add(("train.lsmcl.long_frames", "data.frames", "data.frame_pool"), f"train.lsmcl.long_frames="
            f"{train.lsmcl.long_frames} is more frames than the {cached} each video has cached (data.frames"
            f"{', data.frame_pool' if data.frame_pool else ''}): use train.lsmcl.long_frames <= {cached}")
    if data.dataset == "synthetic":  # after the rules above: theirs is the message when both apply
        _check_synthetic_frames(data, add)
    if data.dataset == "synthetic" and train.objective == "supervised" and data.synthetic.num_event_types < 2:
        # Classes are (first, last) event-type pairs: one type is one class, a loss of 0 and top-1 of 1.0.
        add("data.synthetic.num_event_types", f"data.synthetic.num_event_types={data.synthetic.num_event_types} "
            "makes a task of one class (classes are pairs of event types), which teaches nothing: use at least 2")
    if train.accumulate > train.batch_size:  # per DDP process it is checked again when training starts
        add(("train.accumulate", "train.batch_size"), f"train.accumulate={train.accumulate} is more micro-batches than train.batch_size="
            f"{train.batch_size} has clips: use train.accumulate <= {train.batch_size}")


def _check_synthetic(section: SyntheticSection, add: Callable[[str, str], None]) -> None:
    from s5cli.data.synthetic_video import SyntheticSpec

    try:
        SyntheticSpec(**dataclasses.asdict(section))
    except UserError as error:
        add("data.synthetic", str(error))


def _check_synthetic_frames(data: Any, add: Callable[[str | tuple[str, ...], str], None]) -> None:
    """Uniform sampling must not ask a synthetic video for more frames than it has (data.synthetic.frames).

    Why: `data.frames=64` on the bundled recipe's 16-frame videos was accepted, and the run then warned for
    every video that it repeated the last frame 48 times. At a rate (data.fps) a clip's frames depend on
    the video's length, and `s5 eval --video` reads other videos: neither is checked here."""
    if data.fps is not None:
        return
    key, cached = ("data.frame_pool", data.frame_pool) if data.frame_pool else ("data.frames", data.frames)
    have = data.synthetic.frames
    if cached is not None and cached > have:
        add((key, "data.synthetic.frames"), f"{key}={cached} is more frames than the synthetic videos have "
            f"(data.synthetic.frames={have}): each would repeat its last frame {cached - have} times; use "
            f"{key} <= {have}, or raise data.synthetic.frames")


def backbone_width(backbone: str) -> int | None:
    """Token width of a known backbone (None for unknown names, reported elsewhere)."""
    from s5cli.models.backbone import backbone_token_shape

    shape = backbone_token_shape(backbone, 224)
    return None if shape is None else shape[1]


def backbone_tokens_per_frame(backbone: str, image_size: int) -> int | None:
    """Tokens a known backbone makes of one `image_size` frame, its class token included (None if unknown)."""
    from s5cli.models.backbone import backbone_token_shape

    shape = backbone_token_shape(backbone, image_size)
    return None if shape is None else shape[0]


def _model_frames(recipe: Recipe) -> int | None:
    """The most frames one clip gives the model (None when a clip is a whole video of unknown length)."""
    frames = clip_frames(recipe.data)
    if recipe.train.objective == "lsmcl":  # pretraining's long views are clips of their own length
        return max(frames or 0, recipe.train.lsmcl.long_frames)
    return frames


def _check_position_embeddings(recipe: Recipe, add: Callable[[str | tuple[str, ...], str], None]) -> None:
    """A model with position embeddings (the transformer) must have one for every frame and token it is given.

    Why up front: the transformer refused the first batch ("input has 16 frames x 290 tokens") after
    every video had been extracted, minutes or hours into the run."""
    data, model = recipe.data, recipe.model
    max_tokens, max_frames = getattr(model, "max_tokens_per_frame", None), getattr(model, "max_frames", None)
    tokens = backbone_tokens_per_frame(data.backbone, data.image_size)
    if max_tokens is not None and tokens is not None and max_tokens < tokens:
        add(("model.max_tokens_per_frame", "data.image_size", "data.backbone"),
            f"model.max_tokens_per_frame={max_tokens} < {tokens} tokens per frame of data.image_size="
            f"{data.image_size} (data.backbone={data.backbone}): raise it to at least {tokens}, or lower "
            "data.image_size")
    frames = _model_frames(recipe)
    if max_frames is not None and frames is not None and max_frames < frames:
        add(("model.max_frames", "data.frames", "data.fps", "data.window_seconds", "train.lsmcl.long_frames"),
            f"model.max_frames={max_frames} < {frames} frames per clip: raise it to at least {frames}, or use "
            "shorter clips")


def _check_backbone(recipe: Recipe, add: Callable[[str | tuple[str, ...], str], None]) -> None:
    """The backbone must exist, and the model's input width must equal its token width."""
    from s5cli.models.backbone import BACKBONE_NAMES, PATCH_POOL

    data = recipe.data
    if data.backbone not in BACKBONE_NAMES:
        add("data.backbone", f"data.backbone={data.backbone!r} is not allowed: must be one of "
                     f"{', '.join(BACKBONE_NAMES)}{suggest_choice(data.backbone, BACKBONE_NAMES)}")
        return
    if data.backbone == PATCH_POOL and data.backbone_weights:
        add(("data.backbone_weights", "data.backbone"), f"data.backbone_weights={data.backbone_weights!r}: "
                     f"backbone {PATCH_POOL} has no weights, set it to null")
    width = backbone_width(data.backbone)
    d_input = getattr(recipe.model, "d_input", None)
    if d_input is not None and d_input != width:
        add(("model.d_input", "data.backbone"), f"model.d_input={d_input} does not match the {width}-d tokens of "
                     f"data.backbone={data.backbone}: set model.d_input={width}")
