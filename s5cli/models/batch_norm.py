"""BatchNorm over a batch of pooled video features that also accepts a batch of one video."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

# Choices of the `model.head_norm` and `train.lsmcl.projector_norm` knobs.
FEATURE_NORMS = ("none", "batch")


class VideoBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d on (B, C) that uses its running statistics when a training batch holds a single video.

    Why: the last batch of an epoch (or one rank's share of a small global batch) can be one video, and
    plain BatchNorm1d refuses to normalise one sample by its own statistics. Running statistics are what
    evaluation uses anyway, so that step still trains everything else.
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] < 2:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)
