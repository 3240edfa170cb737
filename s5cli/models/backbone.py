"""Frozen image backbones that turn each video frame into tokens `(1 + P, D)`: a ViT and a parameter-free one.

`VisionTransformer` uses timm's state-dict key names (`cls_token`, `pos_embed`, `patch_embed.proj.*`,
`blocks.N.attn.qkv.*`, ..., `norm.*`), so timm ViT weights load as they are, from a local safetensors file or a
Hugging Face Hub id. It returns every token after the final LayerNorm (what timm's `forward_features` returns).
`PatchPool` has no learned weights at all: it exists for tests and for the bundled synthetic task.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s5cli.errors import UserError, first_line

if TYPE_CHECKING:
    from s5cli.hub.paths import HubSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# timm's ViT-S/B/L/16 weights (ImageNet-21k, augreg) were trained on frames normalised with mean = std = 0.5.
HALF = (0.5, 0.5, 0.5)


@dataclass
class ViTConfig:
    """Shape of a ViT image encoder (timm's VisionTransformer with class token and absolute position embedding)."""

    image_size: int = 224
    patch_size: int = 16
    dim: int = 384
    depth: int = 12
    heads: int = 6
    mlp_ratio: float = 4.0
    class_token: bool = True
    qkv_bias: bool = True
    eps: float = 1e-6  # timm's ViTs use LayerNorm(eps=1e-6)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    init_seed: int = 0


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
# Keys of a timm checkpoint that a token extractor does not use (classification heads).
IGNORED_PREFIXES = ("head.", "head_drop.", "pre_logits.", "fc_norm.")
REFUSED_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt", ".pkl", ".npz", ".h5")


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection (timm layout: attn.qkv, attn.proj)."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        n, length, dim = x.shape
        q, k, v = self.qkv(x).view(n, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(n, length, dim))


class Mlp(nn.Module):
    """Two-layer GELU MLP (timm layout: mlp.fc1, mlp.fc2)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.dim, eps=config.eps)
        self.attn = Attention(config.dim, config.heads, config.qkv_bias)
        self.norm2 = nn.LayerNorm(config.dim, eps=config.eps)
        self.mlp = Mlp(config.dim, int(config.dim * config.mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Non-overlapping patches projected by a strided convolution (timm layout: patch_embed.proj)."""

    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: Tensor) -> Tensor:
        return self.proj(images).flatten(2).transpose(1, 2)


def resample_pos_embed(pos_embed: Tensor, new_grid: tuple[int, int], prefix_tokens: int = 1) -> Tensor:
    """Bicubic resampling of a `(1, prefix + h*w, D)` position embedding to another patch grid."""
    prefix, grid = pos_embed[:, :prefix_tokens], pos_embed[:, prefix_tokens:]
    old = math.isqrt(grid.shape[1])
    if old * old != grid.shape[1]:
        raise ValueError(f"position embedding of {grid.shape[1]} patches is not a square grid")
    if (old, old) == tuple(new_grid):
        return pos_embed
    grid = grid.reshape(1, old, old, -1).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=new_grid, mode="bicubic", align_corners=False, antialias=True)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], -1).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)


class VisionTransformer(nn.Module):
    """ViT image encoder: `(N, 3, H, W)` normalised images -> all tokens `(N, 1 + P, dim)` after the final norm."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        if config.image_size % config.patch_size:
            raise UserError(
                f"image_size {config.image_size} is not a multiple of patch size {config.patch_size}"
            )
        self.config = config
        self.dim = config.dim
        self.patch_size = config.patch_size
        self.mean, self.std = tuple(config.mean), tuple(config.std)
        grid = config.image_size // config.patch_size
        self.prefix_tokens = 1 if config.class_token else 0
        # nn.Linear's default init draws from the global RNG; fork it so building a backbone inside a seeded
        # run does not change that run's random numbers (every weight is re-drawn from init_seed anyway).
        with torch.random.fork_rng(devices=[]):
            self.patch_embed = PatchEmbed(config.patch_size, config.dim)
            if config.class_token:
                self.cls_token = nn.Parameter(torch.zeros(1, 1, config.dim))
            self.pos_embed = nn.Parameter(torch.zeros(1, self.prefix_tokens + grid * grid, config.dim))
            self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
            self.norm = nn.LayerNorm(config.dim, eps=config.eps)
        self._init_weights(config.init_seed)

    @torch.no_grad()
    def _init_weights(self, seed: int) -> None:
        # A private generator: building a backbone never moves the global RNG of a training run.
        gen = torch.Generator().manual_seed(seed)
        nn.init.trunc_normal_(self.pos_embed, std=0.02, a=-0.04, b=0.04, generator=gen)
        if self.prefix_tokens:
            self.cls_token.normal_(0.0, 1e-6, generator=gen)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.trunc_normal_(module.weight, std=0.02, a=-0.04, b=0.04, generator=gen)
                if module.bias is not None:
                    module.bias.zero_()

    def num_tokens(self, image_size: int) -> int:
        """Tokens per frame at `image_size` (CLS + patches)."""
        return self.prefix_tokens + (image_size // self.patch_size) ** 2

    def forward(self, images: Tensor) -> Tensor:
        x = self.patch_embed(images)
        grid = (images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size)
        pos = self.pos_embed
        if pos.shape[1] != self.prefix_tokens + grid[0] * grid[1]:
            pos = resample_pos_embed(pos, grid, self.prefix_tokens)
        if self.prefix_tokens:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + pos
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class PatchPool(nn.Module):
    """Parameter-free patch tokens: each patch area-averaged to 4x4 RGB (48 values), then a fixed orthogonal map.

    Input images are in [0, 1]. The projection is a seeded orthogonal matrix (a buffer, not a parameter), so the
    tokens keep the geometry of the pooled pixels and are identical on every machine. CLS = mean of the patches.
    """

    def __init__(self, patch_size: int = 16, dim: int = 96, pooled: int = 4, seed: int = 0) -> None:
        super().__init__()
        if patch_size % pooled:
            raise ValueError(f"patch_size {patch_size} must be a multiple of pooled {pooled}")
        in_features = 3 * pooled * pooled
        if dim < in_features:
            raise ValueError(f"dim {dim} must be at least {in_features} to keep the projection orthogonal")
        self.patch_size, self.pooled, self.dim = patch_size, pooled, dim
        self.mean, self.std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        self.prefix_tokens = 1
        gen = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(dim, in_features, generator=gen))
        # persistent=False: nothing to save or load; the matrix is rebuilt from the seed.
        self.register_buffer("projection", q.T.contiguous(), persistent=False)  # (48, dim), orthonormal rows

    def num_tokens(self, image_size: int) -> int:
        """Tokens per frame at `image_size` (CLS + patches)."""
        return 1 + (image_size // self.patch_size) ** 2

    def forward(self, images: Tensor) -> Tensor:
        n = images.shape[0]
        cell = self.patch_size // self.pooled
        small = F.avg_pool2d(images, kernel_size=cell)  # (N, 3, H/cell, W/cell): area downsampling
        gh, gw = images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size
        small = small[:, :, : gh * self.pooled, : gw * self.pooled]
        patches = small.reshape(n, 3, gh, self.pooled, gw, self.pooled).permute(0, 2, 4, 1, 3, 5)
        # Centre [0, 1] pixels on 0.5 so a mid-grey patch maps to the zero token.
        patches = patches.reshape(n, gh * gw, -1) - 0.5
        tokens = patches @ self.projection.to(patches.dtype)
        return torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)


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


def resolve_weights(weights: str) -> tuple[Path, dict]:
    """Local safetensors path or Hub id -> (safetensors file, timm pretrained_cfg if a config.json comes with it)."""
    text = str(weights).strip()
    lowered = text.lower()
    if lowered.endswith(REFUSED_SUFFIXES):
        raise UserError(
            f"backbone weights {text!r} are not safetensors: pickle checkpoints can run code when loaded",
            hint="convert them with safetensors.torch.save_file or use the Hub id of a safetensors release",
        )
    local = local_weights_path(text)
    if local is not None:
        if local.is_dir():
            raise UserError(f"backbone weights {local} is a folder: pass the .safetensors file in it")
        if not local.is_file():
            raise UserError(f"backbone weights file {local} not found")
        return local, local_pretrained_cfg(local)
    repo_id = text.removeprefix("hf-hub:").removeprefix("hf://")
    revision = None
    if "@" in repo_id:
        repo_id, revision = repo_id.split("@", 1)
    if repo_id.count("/") != 1:
        raise UserError(
            f"backbone weights {text!r} is neither a .safetensors file nor a Hub id like 'timm/vit_small_patch16_224.augreg_in21k'"
        )
    # Through s5cli's Hub download, as checkpoints and recipes are: one request decides whether the Hub
    # answers, so an unreachable one fails in a second with one line (hf_hub_download alone retried five
    # times, ~26 s and a dozen lines of retries), and a cached copy is used with a warning.
    from s5cli.errors import RunFailure
    from s5cli.hub.download import download_file
    from s5cli.hub.paths import HubSpec

    spec = HubSpec(repo_id, revision)
    try:
        file = download_file(spec, "model.safetensors")
    except UserError as error:
        raise UserError(f"backbone weights {text}: {error}") from None
    except RunFailure as error:  # the Hub unreachable and nothing cached: exit 1, as every Hub download
        raise RunFailure(f"backbone weights {text}: {error}") from None
    try:
        config_file = download_file(spec, "config.json")
    except (UserError, RunFailure) as error:
        # Optional where the repo has none: the backbone then keeps its preset normalisation. Said where it
        # could not be fetched (the Hub unreachable, or offline, and not cached): the preset mean/std may
        # not be the weights' own, which gave other tokens under the same token-cache key without a word.
        if not _config_known_absent(spec, error):
            from s5cli.cli.console import print_warning

            print_warning(f"backbone weights {text}: config.json (the normalisation the weights were trained "
                          f"with) could not be fetched ({first_line(error)[:160]}): using the preset mean/std; "
                          "extract again once it can be, if the tokens must match ones made with it")
        config_file = None
    return file, _read_pretrained_cfg(config_file)


def local_weights_path(weights: str) -> Path | None:
    """The path `weights` names when it is a local file rather than a Hub id (whether or not it exists).

    Why a function of its own: the token-cache key fingerprints a local file's contents
    (`cache.ExtractionSettings.key`), and must take the same text for a file that `resolve_weights` does.
    """
    text = str(weights).strip()
    if text.lower().endswith(REFUSED_SUFFIXES):  # never loaded (`resolve_weights` refuses it): nothing to hash
        return None
    local = Path(text).expanduser()
    return local if text.lower().endswith(".safetensors") or local.exists() else None


def local_pretrained_cfg(file: Path) -> dict:
    """The mean/std of the config.json beside a local weights file ({} without one): they change the tokens."""
    return _read_pretrained_cfg(file.with_name("config.json"))


def _config_known_absent(spec: HubSpec, error: Exception) -> bool:
    """Whether a failed config.json download means the repo has none: the Hub answered (online, not an
    outage), or the Hub cache remembers that it answered so (offline, or the Hub unreachable)."""
    from huggingface_hub import try_to_load_from_cache

    from s5cli.hub.client import hub_settings

    settings = hub_settings()
    if isinstance(error, UserError) and not settings.offline:
        return True
    cached = try_to_load_from_cache(spec.repo_id, "config.json", cache_dir=str(settings.cache_dir),
                                    revision=spec.revision)
    # A str is the cached file (then download_file had not failed); None: nothing known; anything else is
    # huggingface_hub's marker of a file the Hub said does not exist.
    return cached is not None and not isinstance(cached, str)


def _read_pretrained_cfg(path: Path | None) -> dict:
    if path is None or not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    cfg = config.get("pretrained_cfg", {}) if isinstance(config, dict) else {}
    return {key: cfg[key] for key in ("mean", "std") if isinstance(cfg.get(key), list) and len(cfg[key]) == 3}


def read_safetensors(path: Path) -> dict[str, Tensor]:
    """All tensors of a safetensors file; UserError naming the file if it is not one."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as error:
        raise UserError(
            f"{path}: not a readable safetensors file ({str(error).splitlines()[0][:120]})"
        ) from None


def load_timm_state_dict(model: VisionTransformer, state: dict[str, Tensor], source: str = "weights") -> None:
    """Strictly load a timm-layout ViT state dict (heads ignored, pos_embed resampled to the model's grid)."""
    state = {key: value for key, value in state.items() if not key.startswith(IGNORED_PREFIXES)}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_few(unexpected)}")
        raise UserError(f"backbone weights {source} do not fit the ViT layout: {'; '.join(parts)}")
    pos = state["pos_embed"]
    if pos.shape != expected["pos_embed"].shape and pos.shape[-1] == expected["pos_embed"].shape[-1]:
        grid = math.isqrt(expected["pos_embed"].shape[1] - model.prefix_tokens)
        patches = pos.shape[1] - model.prefix_tokens if pos.dim() == 3 else -1
        if patches < 1 or math.isqrt(patches) ** 2 != patches:
            raise UserError(f"backbone weights {source}: pos_embed {tuple(pos.shape)} is not (1, "
                            f"{model.prefix_tokens} + a square grid of patches, width): not timm ViT weights")
        state["pos_embed"] = resample_pos_embed(pos, (grid, grid), model.prefix_tokens)
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if state[k].shape != v.shape
    ]
    if wrong:
        raise UserError(f"backbone weights {source} have other shapes than the ViT preset: {_few(wrong)}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)


def _few(items: list[str], limit: int = 4) -> str:
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown} (+{len(items) - limit} more)"
