"""One place that seeds every random number generator a run touches."""

from __future__ import annotations

import os
import random

# Seeds are 32-bit: NumPy's legacy seeding takes no more, and a larger one would be folded onto a smaller one.
MAX_SEED = 2**32 - 1


def check_seed(seed: int) -> None:
    """UserError for a --seed outside [0, MAX_SEED] (torch would fail on it with a bare 'Overflow')."""
    if not 0 <= seed <= MAX_SEED:
        from s5cli.errors import UserError

        raise UserError(f"--seed {seed} is out of range: use a whole number from 0 to {MAX_SEED}")


def seed_everything(seed: int, *, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so the same seed gives the same numbers on one machine."""
    import numpy as np
    import torch

    check_seed(seed)

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        # cuBLAS needs this workspace setting for deterministic matmuls on CUDA; harmless on CPU.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def rank_seed(seed: int, rank: int) -> int:
    """The torch seed of one torchrun rank's training draws (dropout, Gumbel noise, LSMCL's clips and masks).

    Why not `seed` on every rank: rank r's i-th clip then got the same dropout channels, Gumbel noise and
    LSMCL token mask as rank 0's i-th clip, so W processes did not optimise what one process with the same
    global batch does. Rank 0 keeps `seed` (a one-process run draws the same numbers as before); the others
    are above every valid seed (`MAX_SEED`), so no rank of one run repeats another run's rank 0."""
    return seed + rank * (MAX_SEED + 1)
