"""Frozen image backbones that turn each video frame into tokens `(1 + P, D)`: a ViT and a parameter-free one.

Backbones by name: the ViT presets (`vit.VisionTransformer` shapes with their weights' own mean/std), the
parameter-free `patch_pool.PatchPool`, the tokens each makes, and `build_backbone`, which builds one frozen,
with weights resolved and loaded by `backbone_weights`.
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import replace
from pathlib import Path

from torch import nn

from s5cli.errors import UserError
from s5cli.models.backbone_weights import (
    load_timm_state_dict,
    local_weights_path,
    read_safetensors,
    resolve_weights,
)
from s5cli.models.patch_pool import PatchPool
from s5cli.models.vit import IMAGENET_MEAN, IMAGENET_STD, VisionTransformer, ViTConfig

# timm's ViT-S/B/L/16 weights (ImageNet-21k, augreg) were trained on frames normalised with mean = std = 0.5.
HALF = (0.5, 0.5, 0.5)

# The real presets' mean/std are their timm weights' own: what a weights file without a config.json beside it
# (or a Hub repo without one) is normalised with. ImageNet's made other tokens than the network was trained on.
PRESETS: dict[str, ViTConfig] = {
    "vit_small_patch16_224": ViTConfig(dim=384, depth=12, heads=6, mean=HALF, std=HALF),
    "vit_base_patch16_224": ViTConfig(dim=768, depth=12, heads=12, mean=HALF, std=HALF),
    "vit_large_patch16_224": ViTConfig(dim=1024, depth=24, heads=16, mean=HALF, std=HALF),
    # Random but seeded: the same tokens on every machine, fast enough for tests.
    "vit_tiny_test": ViTConfig(image_size=64, dim=32, depth=2, heads=2),
}
# The mean/std every preset had before the real ones took their weights' own: token-cache keys that did not
# state the normalisation were made with these (`normalisation_key`).
FORMER_NORMALISATION = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
PATCH_POOL = "patch_pool"
BACKBONE_NAMES = (*PRESETS, PATCH_POOL)


def backbone_token_shape(name: str, image_size: int) -> tuple[int, int] | None:
    """(tokens per frame, width) the backbone `name` makes of one `image_size` frame, class token included;
    None for a name not known here. Read from the settings, so nothing is built.

    Why one place: the recipe checks (a model's input width, a transformer's position tables) and the token
    cache (an entry of another shape is re-extracted) must count as the backbones' own `num_tokens` does."""
    import inspect

    if name == PATCH_POOL:  # build_backbone makes PatchPool() with its defaults
        defaults = inspect.signature(PatchPool).parameters
        patch, width, prefix = int(defaults["patch_size"].default), int(defaults["dim"].default), 1
    elif name in PRESETS:
        preset = PRESETS[name]
        patch, width, prefix = preset.patch_size, preset.dim, int(preset.class_token)
    else:
        return None
    return prefix + (int(image_size) // patch) ** 2, width


def random_weights_unwarned(name: str, weights: str | None) -> bool:
    """Whether backbone `name` with `weights` would run a ViT preset's random initialisation, which callers
    warn about (its tokens are a random network's). Not patch_pool (no parameters), nor vit_tiny_test, which
    tests build without weights on purpose."""
    return name in PRESETS and name != "vit_tiny_test" and not weights


def _freeze(module: nn.Module) -> nn.Module:
    module.requires_grad_(False)
    return module.eval()


def build_backbone(name: str, weights: str | None = None, image_size: int | None = None) -> nn.Module:
    """A frozen, eval-mode backbone by name; `weights` = local .safetensors path or Hugging Face Hub id."""
    if name == PATCH_POOL:
        if weights:
            raise UserError(
                f"backbone {PATCH_POOL!r} has no weights: remove data.backbone_weights={weights!r}"
            )
        return _freeze(PatchPool())
    if name not in PRESETS:
        close = difflib.get_close_matches(name, BACKBONE_NAMES, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"use one of {', '.join(BACKBONE_NAMES)}"
        raise UserError(f"unknown backbone {name!r}", hint=hint)
    config = PRESETS[name]
    if image_size is not None:
        config = replace(config, image_size=int(image_size))
    if not weights:
        return _freeze(VisionTransformer(config))
    file, pretrained_cfg = resolve_weights(weights)
    if local_weights_path(weights) is not None and name != "vit_tiny_test":  # a test network: no trained weights
        _warn_unstated_normalisation(file, name, tuple(sorted(pretrained_cfg)))
    if pretrained_cfg:
        # Weights define their own input normalisation (timm's augreg ViTs use mean = std = 0.5).
        config = replace(
            config,
            mean=tuple(pretrained_cfg.get("mean", config.mean)),
            std=tuple(pretrained_cfg.get("std", config.std)),
        )
    model = VisionTransformer(config)
    load_timm_state_dict(model, read_safetensors(file), source=weights)
    return _freeze(model)


@functools.lru_cache(maxsize=64)
def _warn_unstated_normalisation(file: Path, name: str, stated: tuple[str, ...]) -> None:
    """Warn (once per file) that a local weights file has no config.json stating its mean/std beside it.

    Why: the frames are normalised with what the weights were trained with, which only that file says;
    without it the preset's values are used, and weights trained with others give other tokens silently.
    """
    missing = [key for key in ("mean", "std") if key not in stated]
    if not missing:
        return
    from s5cli.cli.console import print_warning

    preset = PRESETS[name]
    used = f"mean {_values(preset.mean)} / std {_values(preset.std)}"
    has_config = file.with_name("config.json").is_file()
    where = f"its config.json states no {' or '.join(missing)}" if has_config else "no config.json beside it"
    print_warning(f"backbone weights {file}: {where}: normalising frames with the {name} preset's {used}; if the "
                  'weights were trained with others, put a config.json beside them ({"pretrained_cfg": {"mean": '
                  '[...], "std": [...]}})')


def _values(values: tuple[float, ...]) -> str:
    return f"({', '.join(f'{v:g}' for v in values)})"


def normalisation_key(name: str, stated: dict) -> dict:
    """The preset mean/std backbone `name` uses where `stated` (a config.json's) gives none, for the token-cache
    key; only those that differ from `FORMER_NORMALISATION`.

    Why: keys of weights without a stated mean/std held none, and the tokens cached under them were made
    with ImageNet's; the real ViT presets now normalise with 0.5, so their key must differ, while every
    other key (vit_tiny_test, a config.json that states both) stays as it was.
    """
    preset = PRESETS.get(name)
    if preset is None:
        return {}
    defaults = {"mean": tuple(preset.mean), "std": tuple(preset.std)}
    return {key: list(value) for key, value in defaults.items()
            if key not in stated and value != FORMER_NORMALISATION[key]}
