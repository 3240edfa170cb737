"""The recipe schema: one dataclass per YAML section, with defaults and the allowed range of every field.

`s5cli.recipe` loads YAML into these classes and validates it; this module only describes what is allowed.
The `model:` section and `train.lsmcl` are not declared here: their fields are those of the model's config
dataclass (`s5cli.models.registry.model_config_class`) and of `s5cli.models.lsmcl.LSMCLConfig`, so a new
model setting never needs a schema change. Their ranges are in `MODEL_RULES` / `LSMCL_RULES`.
Also here: YAML value -> field type conversion, the clip length a data section gives (`clip_frames`) and
where the bundled recipes are (`bundled_recipes`). The rules that tie several keys together are in
`s5cli.recipe_cross_checks`.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s5cli.data.frame_transform import RESIZE_MODES

DATASETS = ("synthetic", "lvu", "breakfast", "coin")
LVU_TASKS = (
    "relationship", "way_speaking", "scene", "director", "genre", "writer", "year", "like_ratio", "view_count",
)
SPLITS = ("train", "val", "test")
PATCH_SIZE = 16
_FLOAT_TEXT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
# Keys that name files or folders: a control character in one is a typo or a broken file (and NUL ended in
# a traceback when the path was first opened).
PATH_KEYS = frozenset({"data.root", "data.annotations", "data.cache_dir", "data.backbone_weights", "train.out_dir",
                       "train.init"})
# Sections inside sections, with a key to set in them: a value for the whole section (`data.synthetic={clutter:
# 0.2}`) replaced it, every key it did not name reset to its default.
NESTED_SECTIONS = {"data.synthetic": "data.synthetic.clutter=0.2", "train.lsmcl": "train.lsmcl.mask_ratio=0.5"}


@dataclass(frozen=True)
class Rule:
    """Allowed values of one field: a numeric interval, a set of choices, a multiple, a list length."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] | None = None
    multiple_of: int | None = None
    length: int | None = None

    def allows(self, value: Any) -> bool:
        """True if `value` (already of the right type) is allowed; lists are checked item by item."""
        if isinstance(value, list):
            if self.length is not None and len(value) != self.length:
                return False
            return all(self.allows(item) for item in value)
        if value is None:
            return True
        if self.choices is not None and value not in self.choices:
            return False
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                return False
            if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
                return False
            if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
                return False
            if self.multiple_of is not None and value % self.multiple_of:
                return False
        return True

    def describe(self) -> str:
        """The allowed values in words, e.g. 'in (0, 1]' or 'one of cosine, plateau, constant'."""
        if self.choices is not None:
            return "one of " + ", ".join(str(c) for c in self.choices)
        parts = []
        if self.length is not None:
            parts.append(f"a list of {self.length} numbers")
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            parts.append(f"in {left}{_num(self.low)}, {_num(self.high)}{right}")
        elif self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {_num(self.low)}")
        elif self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {_num(self.high)}")
        if self.multiple_of is not None:
            parts.append(f"a multiple of {self.multiple_of}")
        return " and ".join(parts) if parts else "any value"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


POSITIVE = Rule(low=0, low_open=True)
AT_LEAST_1 = Rule(low=1)
NON_NEGATIVE = Rule(low=0)
FRACTION = Rule(low=0, high=1)  # [0, 1]
PROPER_FRACTION = Rule(low=0, high=1, high_open=True)  # [0, 1)
SEED = Rule(low=0, high=2**32 - 1)  # s5cli.seeding.MAX_SEED (not imported: this module stays light)


def knob(default: Any = None, rule: Rule | None = None) -> Any:
    """A dataclass field with a default and the rule its values must follow."""
    return field(default=default, metadata={"rule": rule} if rule is not None else {})


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


# ------------------------------------------------------------------------------ types and model fields
INT64_MAX = 2**63 - 1
# Digits past which YAML text is not converted to a number (Python's int() refuses over 4300): no field holds
# such a number, and a text field keeps the text as it is.
MAX_NUMBER_DIGITS = 1000
# The largest integer str() is asked to write (about 3000 digits), kept under Python's 4300-digit limit.
_MAX_STR_BITS = 10_000


class _RemembersText:
    """A number read from YAML that remembers the text it was written as (mixed into int and float).

    Why: a text field (a path, a revision) takes its value as written: str() of the number made
    `hub.revision=0123456` '123456', `train.out_dir=0x10` '16' and `data.root=0.10` '0.1'.
    """

    text: str

    def __new__(cls, value: Any, text: str) -> Any:
        number = super().__new__(cls, value)  # type: ignore[call-arg]  # int's or float's
        number.text = text
        return number


class WrittenInt(_RemembersText, int):
    """An integer read from YAML, with the text it was written as."""


class WrittenFloat(_RemembersText, float):
    """A float read from YAML, with the text it was written as."""


class LongNumber(str):
    """Digits YAML would read as a number, too many to convert (`MAX_NUMBER_DIGITS`): text for a text field,
    too large for any number field."""


class OverrideText(str):
    """A command-line value kept as typed because YAML would have cut or reread it (`#` starts a comment, `&`
    an anchor, ...); `why` says what YAML does with it, for the error when the key takes no text."""

    why: str

    def __new__(cls, text: str, why: str) -> OverrideText:
        value = super().__new__(cls, text)
        value.why = why
        return value


def written_text(value: Any) -> str | None:
    """The text a number was written as in the YAML (None for other values)."""
    if isinstance(value, _RemembersText):
        return value.text
    return str(value) if isinstance(value, LongNumber) else None


def too_large(value: Any) -> bool:
    """Whether `value` is a number past any field's range: past a 64-bit integer, or too long to convert."""
    if isinstance(value, LongNumber):
        return True
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT64_MAX


def coerce(value: Any, hint: Any) -> tuple[bool, Any]:
    """(ok, value converted to `hint`): ints for floats, numbers for '1e-3' strings, text as written for numbers.

    The value comes back a plain int, float or str: the loader's `WrittenInt` and kin stop here (a subclass
    in the Recipe would not even dump back to YAML).
    """
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None:
            return type(None) in args, None
        for arg in args:
            if arg is not type(None):
                ok, converted = coerce(value, arg)
                if ok:
                    return True, converted
        return False, value
    if hint is Any:
        return True, _plain(value)
    if origin is list:
        (item_hint,) = typing.get_args(hint) or (Any,)
        if not isinstance(value, (list, tuple)):
            return False, value
        items = [coerce(item, item_hint) for item in value]
        return all(ok for ok, _ in items), [converted for _, converted in items]
    if value is None or isinstance(value, bool):
        return hint is bool and isinstance(value, bool), value
    if hint is str:
        return _coerce_text(value)
    if isinstance(value, LongNumber):
        return False, value
    if hint is int:
        # Within a 64-bit integer: Python's ints are unbounded, and a value past that ended in a traceback
        # wherever it became a size or an index (`eval.batch_size=99999999999999999999`).
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        ok = isinstance(value, int) and abs(value) <= INT64_MAX
        return ok, int(value) if ok else value
    if hint is float:
        return _coerce_float(value)
    return isinstance(value, hint) if isinstance(hint, type) else True, value


def _coerce_float(value: Any) -> tuple[bool, Any]:
    """A float field's value; an integer past a float's range is refused (float() raised OverflowError)."""
    if isinstance(value, (int, float)):
        try:
            return True, float(value)
        except OverflowError:
            return False, value
    if isinstance(value, str) and _FLOAT_TEXT.match(value.strip()):
        return True, float(value)
    return False, value


def _coerce_text(value: Any) -> tuple[bool, Any]:
    """A text field's value: a number as it was written (`0123456`, not 123456), never str() of a huge int."""
    if isinstance(value, str):
        return True, str(value)
    text = written_text(value)
    if text is not None:
        return True, text
    if isinstance(value, int) and value.bit_length() > _MAX_STR_BITS:
        return False, value
    if isinstance(value, (int, float)):
        return True, str(value)
    return False, value


def _plain(value: Any) -> Any:
    """`value` as the plain int, float or str it stands for (what a field of any type stores)."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, WrittenInt):
        return int(value)
    return float(value) if isinstance(value, WrittenFloat) else value


def describe_type(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [describe_type(a) for a in typing.get_args(hint) if a is not type(None)]
        nullable = type(None) in typing.get_args(hint)
        return " or ".join(parts) + (" or null" if nullable else "")
    if origin is list:
        plurals = {int: "integers", float: "numbers", str: "strings", bool: "true/false values"}
        item = typing.get_args(hint)[0]
        return f"a list of {plurals.get(item) or describe_type(item)}"
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


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


# ---------------------------------------------------------------------------------- bundled recipes
def bundled_recipes_dir() -> Path:
    """Folder of the recipes that ship with s5cli (package data `s5cli.recipes`, or the checkout's recipes/)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("s5cli.recipes")
    except ModuleNotFoundError:
        spec = None
    # submodule_search_locations works for a regular and a namespace package (no __init__.py in recipes/).
    locations = list(spec.submodule_search_locations or ()) if spec is not None else []
    for location in locations:
        if Path(location).is_dir():
            return Path(location)
    return Path(__file__).resolve().parent.parent / "recipes"


def bundled_recipes() -> dict[str, Path]:
    """Name (e.g. 'synthetic', 'lvu/genre') -> path of every bundled recipe, sorted by name."""
    folder = bundled_recipes_dir()
    found = {p.relative_to(folder).with_suffix("").as_posix(): p for p in folder.rglob("*.yaml")}
    return dict(sorted(found.items()))
