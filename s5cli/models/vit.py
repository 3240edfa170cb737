"""The ViT image encoder a backbone preset builds: `(N, 3, H, W)` normalised images -> every token `(N, 1 + P, D)`.

`VisionTransformer` uses timm's state-dict key names (`cls_token`, `pos_embed`, `patch_embed.proj.*`,
`blocks.N.attn.qkv.*`, ..., `norm.*`), so timm ViT weights load as they are, from a local safetensors file or a
Hugging Face Hub id. It returns every token after the final LayerNorm (what timm's `forward_features` returns).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s5cli.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
