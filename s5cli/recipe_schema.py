"""The recipe schema: one dataclass per YAML section, with defaults and the allowed range of every field.

`s5cli.recipe` loads YAML into these classes and validates it; this module only describes what is allowed.
The `model:` section and `train.lsmcl` are not declared here: their fields are those of the model's config
dataclass (`s5cli.models.registry.model_config_class`) and of `s5cli.models.lsmcl.LSMCLConfig`, so a new
model setting never needs a schema change. Their ranges are in `MODEL_RULES` / `LSMCL_RULES`.
Also here: the clip length a data section gives (`clip_frames`). A field's `Rule` and `knob` are in
`s5cli.recipe_rules`, YAML value -> field type conversion in `s5cli.recipe_values`, where the bundled recipes
are in `s5cli.bundled_recipes`. The rules that tie several keys together are in `s5cli.recipe_cross_checks`.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from s5cli.data.frame_transform import RESIZE_MODES
from s5cli.recipe_rules import (
    AT_LEAST_1,
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    PROPER_FRACTION,
    SEED,
    Rule,
    knob,
)

DATASETS = ("synthetic", "lvu", "breakfast", "coin")
LVU_TASKS = (
    "relationship", "way_speaking", "scene", "director", "genre", "writer", "year", "like_ratio", "view_count",
)
SPLITS = ("train", "val", "test")
PATCH_SIZE = 16
# Keys that name files or folders: a control character in one is a typo or a broken file (and NUL ended in
# a traceback when the path was first opened).
PATH_KEYS = frozenset({"data.root", "data.annotations", "data.cache_dir", "data.backbone_weights", "train.out_dir",
                       "train.init"})
# Sections inside sections, with a key to set in them: a value for the whole section (`data.synthetic={clutter:
# 0.2}`) replaced it, every key it did not name reset to its default.
NESTED_SECTIONS = {"data.synthetic": "data.synthetic.clutter=0.2", "train.lsmcl": "train.lsmcl.mask_ratio=0.5"}


@dataclass
class SyntheticSection:
    """Knobs of the bundled synthetic task (see s5cli.data.synthetic_video.SyntheticSpec)."""

    seed: int = knob(0, SEED)
    num_train: int = knob(400, NON_NEGATIVE)
    num_val: int = knob(100, NON_NEGATIVE)
    num_test: int = knob(100, NON_NEGATIVE)
    frames: int = knob(32, Rule(low=2))
    size: int = knob(96, Rule(low=8))
    grid: int = knob(6, AT_LEAST_1)
    num_event_types: int = knob(3, Rule(low=1, high=8))
    events_per_video: int = knob(3, AT_LEAST_1)
    clutter: float = knob(0.5, FRACTION)
    fps: float = knob(8.0, POSITIVE)
    shared_background: bool = knob(False)


@dataclass
class DataSection:
    """Which videos, where they are, how frames are sampled and which frozen backbone turns them into tokens."""

    dataset: str = knob("synthetic", Rule(choices=DATASETS))
    root: str | None = None  # videos; synthetic: generated here (default: a folder per settings under .s5cache)
    annotations: str | None = None  # split files: lvu_1.0 folder, Breakfast folder, COIN.json
    task: str | None = knob(None, Rule(choices=LVU_TASKS))  # LVU only
    cache_dir: str = ".s5cache/features"
    frames: int | None = knob(32, AT_LEAST_1)  # T frames per video (uniform), or the clip length with fps
    fps: float | None = knob(None, POSITIVE)  # sample at this rate instead (LVU: 1 fps)
    window_seconds: float | None = knob(None, POSITIVE)  # clip = window_seconds * fps frames (LVU: 60)
    # Cache this many uniform frames per video instead of `frames`, and make each training clip `frames` of
    # them drawn at random and sorted, anew every epoch (ViS4mer's temporal augmentation on Breakfast and
    # COIN: 512 / 256 segments); evaluation reads `frames` uniformly spaced ones. null: cache `frames`.
    frame_pool: int | None = knob(None, AT_LEAST_1)
    image_size: int = knob(224, Rule(low=PATCH_SIZE, multiple_of=PATCH_SIZE))
    # How a frame becomes the image_size square: "crop" (shorter side to image_size, centre crop) or
    # "squash" (the whole frame resized, aspect lost; ViS4mer's features).
    resize: str = knob("crop", Rule(choices=RESIZE_MODES))
    backbone: str = "patch_pool"
    backbone_weights: str | None = None  # local .safetensors or Hugging Face Hub id
    cache_dtype: str = knob("float16", Rule(choices=("float16", "bfloat16", "float32")))
    decode_threads: int = knob(2, AT_LEAST_1)
    # Processes that load training clips and evaluation windows ahead of the model (0: the training
    # process loads them). Results do not depend on it: a clip's start comes from its own (seed, epoch,
    # video) generator (TokenDataset.training_clip).
    num_workers: int = knob(0, NON_NEGATIVE)
    # Batches each of those processes keeps ready (PyTorch's prefetch_factor). The loaders hold up to
    # num_workers x prefetch_batches batches at once: at the LVU recipes' batch of 16 one-minute float16
    # clips, ~390 MB each, so 4 workers x 2 hold ~3 GB of host memory; 1 halves that. Ignored without workers.
    prefetch_batches: int = knob(2, AT_LEAST_1)
    val_fraction: float = knob(0.0, PROPER_FRACTION)  # Breakfast/COIN: hold out this share of train as val
    synthetic: SyntheticSection = field(default_factory=SyntheticSection)


@dataclass
class ModelSection:
    """`name` of a registered model; `s5cli.recipe` adds the fields of that model's config dataclass."""

    name: str = "s5"


@dataclass
class OptimSection:
    """AdamW (SSM parameters in their own no-weight-decay group) and the learning-rate schedule."""

    lr: float = knob(1e-3, POSITIVE)
    ssm_lr: float | None = knob(None, POSITIVE)  # None: the model's own hint (model.ssm_lr)
    weight_decay: float = knob(0.01, NON_NEGATIVE)
    betas: list[float] = field(
        default_factory=lambda: [0.9, 0.999], metadata={"rule": Rule(low=0, high=1, high_open=True, length=2)}
    )
    grad_clip: float | None = knob(None, NON_NEGATIVE)  # max gradient norm; None or 0 = off
    schedule: str = knob("cosine", Rule(choices=("cosine", "plateau", "constant")))
    warmup_steps: int = knob(0, NON_NEGATIVE)
    plateau_factor: float = knob(0.2, Rule(low=0, high=1, low_open=True, high_open=True))
    plateau_patience: int = knob(10, NON_NEGATIVE)


@dataclass
class TrainSection:
    """The training run: objective, length, batch, seed, output folder, checkpoints and logging."""

    objective: str = knob("supervised", Rule(choices=("supervised", "lsmcl")))
    epochs: int = knob(15, AT_LEAST_1)
    batch_size: int = knob(16, AT_LEAST_1)  # global batch (split across DDP ranks)
    # Micro-batches per optimizer step (gradient accumulation): each process's batch is split into this many
    # and their gradients summed, so activation memory is that of batch_size / accumulate clips.
    accumulate: int = knob(1, AT_LEAST_1)
    seed: int = knob(0, SEED)
    out_dir: str = "runs/synthetic"
    keep_last: int = knob(2, AT_LEAST_1)
    eval_every: int = knob(1, AT_LEAST_1)  # epochs between validations (and plateau steps)
    # Stop once this many validations in a row brought no better headline metric; None = train all epochs.
    early_stop_patience: int | None = knob(None, AT_LEAST_1)
    amp: bool = True  # mixed precision, used on CUDA only
    init: str | None = None  # pretrained checkpoint folder or Hub id to start from
    log_every: int = knob(10, AT_LEAST_1)
    tensorboard: bool = False
    # An s5cli.models.lsmcl.LSMCLConfig after loading; its fields are validated against LSMCL_RULES.
    lsmcl: Any = field(default_factory=dict)


@dataclass
class EvalSection:
    """Evaluation batch, split, and how window predictions become one prediction per video."""

    batch_size: int = knob(32, AT_LEAST_1)
    split: str = knob("test", Rule(choices=SPLITS))
    aggregate: str = knob("mean", Rule(choices=("mean", "none")))
    # Frames between the starts of a video's evaluation windows; null = the clip length (consecutive,
    # non-overlapping windows). LVU at 1 fps: 1 = a window starting every second, ViS4mer's protocol.
    window_stride: int | None = knob(None, AT_LEAST_1)


@dataclass
class HubSection:
    """Where `s5 push` (of a checkpoint trained with this recipe) and `s5 recipes push` publish when no repo
    is given on the command line: repo OWNER/NAME and branch."""

    repo_id: str | None = None
    revision: str | None = None


@dataclass
class Recipe:
    """Everything a command needs, loaded from one YAML file plus key=value overrides."""

    data: DataSection = field(default_factory=DataSection)
    model: Any = field(default_factory=ModelSection)  # a ModelSection subclass with the model's config fields
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
    hub: HubSection = field(default_factory=HubSection)


SECTIONS: dict[str, type] = {
    "data": DataSection, "model": ModelSection, "optim": OptimSection, "train": TrainSection,
    "eval": EvalSection, "hub": HubSection,
}

# Ranges of the model config fields (any registered model; fields a model lacks are ignored).
MODEL_RULES: dict[str, Rule] = {
    "d_input": AT_LEAST_1, "d_model": AT_LEAST_1, "n_blocks": AT_LEAST_1, "pool": AT_LEAST_1,
    "dropout": PROPER_FRACTION, "d_state": Rule(low=2, multiple_of=2),
    "kernel": Rule(choices=("dplr", "s4d")), "init": Rule(choices=("legs", "lin", "inv")),
    "dt_min": POSITIVE, "dt_max": POSITIVE, "ssm_lr": POSITIVE,
    "keep_ratio": Rule(low=0, high=1, low_open=True),
    "selection": Rule(choices=("per_frame", "global")),
    "selector": Rule(choices=("learned", "random", "uniform", "none")),
    "head_norm": Rule(choices=("none", "batch")),
    "gumbel_tau": POSITIVE, "explore_temperature": Rule(low=1), "explore_fraction": Rule(low=0, high=1, low_open=True),
    "momentum": FRACTION, "guide_channels": AT_LEAST_1, "mg_hidden": AT_LEAST_1,
    "depth": AT_LEAST_1, "heads": AT_LEAST_1, "mlp_ratio": POSITIVE, "max_frames": AT_LEAST_1,
    "max_tokens_per_frame": AT_LEAST_1,
}
LSMCL_RULES: dict[str, Rule] = {
    "short_frames": AT_LEAST_1, "long_frames": AT_LEAST_1, "mask_ratio": PROPER_FRACTION,
    "temperature": POSITIVE, "proj_dim": AT_LEAST_1, "momentum": FRACTION, "queue_size": NON_NEGATIVE,
    "projector_norm": Rule(choices=("none", "batch")),
}


# ------------------------------------------------------------------------------------- model fields
_MODEL_SECTIONS: dict[type, type] = {}


def model_section_class(config_cls: type) -> type:
    """A ModelSection subclass holding `name` plus every field of the model config dataclass `config_cls`."""
    if config_cls not in _MODEL_SECTIONS:
        hints = typing.get_type_hints(config_cls)
        specs = []
        for f in dataclasses.fields(config_cls):
            if f.default is not dataclasses.MISSING:
                default = dataclasses.field(default=f.default)
            elif f.default_factory is not dataclasses.MISSING:
                default = dataclasses.field(default_factory=f.default_factory)
            else:  # a required config field: the recipe must set it; validation reports it when missing
                default = dataclasses.field(default=None)
            specs.append((f.name, hints[f.name], default))
        _MODEL_SECTIONS[config_cls] = dataclasses.make_dataclass(
            f"{config_cls.__name__}Section", specs, bases=(ModelSection,), namespace={"config_class": config_cls}
        )
    return _MODEL_SECTIONS[config_cls]


# -------------------------------------------------------------------------------------- clip length
def clip_frames(data: Any) -> int | None:
    """Frames per training/eval clip: a window of `window_seconds` at `fps` (LVU), else `frames`.

    `data` is a recipe's data section or, as a checkpoint stores it, a plain dict of one."""
    field = data.get if isinstance(data, Mapping) else (lambda name: getattr(data, name, None))
    window, fps = field("window_seconds"), field("fps")
    if window and fps:
        return max(1, round(window * fps))
    return field("frames")
