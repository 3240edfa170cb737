"""Build any video model by name from a recipe's `model:` section: one way to create a model (timm style)."""

from __future__ import annotations

import difflib
from dataclasses import asdict, fields, is_dataclass
from typing import Any

from torch import nn

from s5cli.models.decoder import DecoderConfig, ViS4mer
from s5cli.models.s5 import S5Config, S5Model
from s5cli.models.video_transformer import VideoTransformer, VideoTransformerConfig

MODELS: dict[str, tuple[type, type]] = {
    "s5": (S5Config, S5Model),
    "s4": (DecoderConfig, ViS4mer),
    "transformer": (VideoTransformerConfig, VideoTransformer),
}
ALIASES = {"vis4mer": "s4", "vit": "transformer", "selective-s4": "s5"}


class UnknownModelError(ValueError):
    """A model name that is not registered; the message suggests the closest one."""


def canonical_name(name: str) -> str:
    """Registered name for `name` or an alias of it."""
    key = name.lower()
    key = ALIASES.get(key, key)
    if key not in MODELS:
        close = difflib.get_close_matches(key, [*MODELS, *ALIASES], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownModelError(f"unknown model {name!r}{hint}; available: {', '.join(sorted(MODELS))}")
    return key


def model_config_class(name: str) -> type:
    """The dataclass holding the settings of model `name` (used to validate recipes)."""
    return MODELS[canonical_name(name)][0]


def build_model(name: str, config: Any, num_outputs: int) -> nn.Module:
    """Instantiate model `name` from a config dataclass or a dict of its fields."""
    config_cls, model_cls = MODELS[canonical_name(name)]
    if is_dataclass(config) and not isinstance(config, type):
        config = asdict(config)
    values = {k: v for k, v in dict(config).items() if k != "name"}
    unknown = sorted(set(values) - {f.name for f in fields(config_cls)})
    if unknown:
        raise TypeError(f"unknown {name} model settings: {', '.join(unknown)}")
    return model_cls(config_cls(**values), num_outputs)
