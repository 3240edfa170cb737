"""HiPPO initialisations for the state matrix of S4 and S4D.

Everything here runs once at construction, in float64, so that the eigen-decomposition of the
HiPPO-LegS matrix is accurate (state-spaces v1 did it in float32 with `eig`, which loses the
conjugate-pair structure for larger N). Returned tensors are complex128; callers cast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


def legs_matrix(n: int) -> tuple[Tensor, Tensor]:
    """HiPPO-LegS (A, B) in float64: A[n,k] = -sqrt(2n+1)sqrt(2k+1) (n>k), -(n+1) (n=k), 0 (n<k)."""
    q = torch.sqrt(2 * torch.arange(n, dtype=torch.float64) + 1)
    a = -torch.tril(q[:, None] * q[None, :], diagonal=-1) - torch.diag(torch.arange(n, dtype=torch.float64) + 1)
    return a, q.clone()


@dataclass
class NPLRInit:
    """Half of a conjugate-symmetric diagonal-plus-low-rank system A = diag(Λ) − P Pᴴ (diagonal basis)."""

    eigenvalues: Tensor  # Λ, (N/2,) complex
    low_rank: Tensor  # P̃, (N/2,) complex
    input_matrix: Tensor  # B̃, (N/2,) complex


def legs_nplr(n: int) -> NPLRInit:
    """Normal-plus-low-rank form of HiPPO-LegS, diagonalised exactly, keeping one mode of each conjugate pair.

    A + P Pᵀ = −½ I + S with S skew-symmetric (P_n = sqrt(n + ½)), so its eigenvalues are −½ + i·e with
    real e from `eigh` of the Hermitian matrix −i·S. Because A, P and B are real, modes with −e are the
    complex conjugates of modes with +e, so keeping the N/2 modes with e > 0 loses nothing.
    """
    if n % 2:
        raise ValueError(f"d_state must be even for conjugate pairs, got {n}")
    a, b = legs_matrix(n)
    p = torch.sqrt(torch.arange(n, dtype=torch.float64) + 0.5)
    normal = a + p[:, None] * p[None, :]
    skew = normal + 0.5 * torch.eye(n, dtype=torch.float64)
    evals, evecs = torch.linalg.eigh(-1j * skew.to(torch.complex128))
    keep = evals > 0
    evals, evecs = evals[keep], evecs[:, keep]
    order = torch.argsort(evals)
    evals, evecs = evals[order], evecs[:, order]
    vh = evecs.conj().T
    lam = torch.complex(torch.full_like(evals, -0.5), evals)
    return NPLRInit(lam, vh @ p.to(torch.complex128), vh @ b.to(torch.complex128))


def diagonal_init(n: int, init: str) -> tuple[Tensor, Tensor]:
    """Eigenvalues Λ and input vector B (N/2 modes, complex128) for S4D's "lin", "inv" and "legs" inits."""
    half = n // 2
    idx = torch.arange(half, dtype=torch.float64)
    if init == "lin":
        lam = torch.complex(torch.full_like(idx, -0.5), math.pi * idx)
        return lam, torch.ones(half, dtype=torch.complex128)
    if init == "inv":
        imag = (n / math.pi) * (n / (2 * idx + 1) - 1)
        return torch.complex(torch.full_like(idx, -0.5), imag), torch.ones(half, dtype=torch.complex128)
    if init == "legs":
        nplr = legs_nplr(n)
        return nplr.eigenvalues, nplr.input_matrix
    raise ValueError(f"unknown S4D init {init!r}; use lin, inv or legs")
