"""`PatchPool`, the parameter-free backbone: it has no learned weights at all, and exists for tests and for the
bundled synthetic task.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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
