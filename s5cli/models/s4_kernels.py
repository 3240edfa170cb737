"""Convolution kernels of the S4 layer: DPLR (S4, Cauchy + Woodbury) and diagonal (S4D, Vandermonde).

A kernel module owns the SSM parameters (Λ, P, B, C, Δt) of H independent single-input channels and
produces the length-L convolution kernel K_j = C Ā^j B̄ (j < L) of each channel, plus the discrete
matrices for the recurrent step mode. Numerically delicate choices, and why:

* Complex parameters are stored as real tensors with a trailing (re, im) axis: safetensors has no
  complex dtype and optimisers/EMA treat them uniformly that way.
* Re Λ = −exp(·) keeps every mode strictly stable whatever the optimiser does.
* DPLR keeps one mode of each conjugate pair (N/2 complex) but evaluates sums over *both* members,
  so the result is exactly the real N-state system (not an approximation by 2·Re).
* DPLR learns C̃ = C (I − Ā^ℓ) for an internal length ℓ (`l_kernel`), as state-spaces does: the
  generating function at the ℓ-th roots of unity is then exactly the DFT of the first ℓ kernel taps.
  Shorter inputs truncate that kernel (so kernel(L) is a prefix of kernel(2L)); a longer input doubles ℓ
  with C̃ ← C̃ (I + Ā^ℓ), which leaves the underlying C unchanged.
* The generating function is rescaled by s = (1+ω)/2 so the bilinear transform has no pole at ω = −1.
* The Cauchy sums and their Woodbury combination live in `cauchy.py`: computed in chunks of frequencies
  with a hand-written backward, so memory stays bounded at the paper's 11,820-token length.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from s5cli.models.cauchy import dplr_generating_function
from s5cli.models.hippo import diagonal_init, legs_nplr
from s5cli.models.host_values import buffer_int, store_buffer_int


def _as_complex(param: Tensor) -> Tensor:
    return torch.view_as_complex(param.contiguous())


def _widened(values: Tensor) -> Tensor:
    """`values` in float64 / complex128, for re-expressing C̃ at another length ℓ.

    Why: Ā^ℓ in complex64 rounds a little on every doubling of ℓ, and whole-video training doubles it again
    and again: nine doublings (30 -> 15,360 frames) moved the learned kernel by 3e-4 to 6e-4 of its peak. The
    matrices are N x N per channel, so the wider type costs nothing that shows; MPS has no float64.
    """
    if values.device.type == "mps":
        return values
    return values.to(torch.complex128 if values.is_complex() else torch.float64)


def _real_param(value: Tensor) -> nn.Parameter:
    return nn.Parameter(torch.view_as_real(value.to(torch.complex64)).clone())


def _mark_ssm(params: list[nn.Parameter], lr: float | None) -> None:
    """Attach the optimiser hint: SSM dynamics get their own lr and never weight decay (S4 practice)."""
    for param in params:
        param._optim = {"weight_decay": 0.0, **({"lr": lr} if lr is not None else {})}  # type: ignore[attr-defined]


def _init_log_dt(channels: int, dt_min: float, dt_max: float) -> Tensor:
    return torch.rand(channels) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)


def _complex_exp(z: Tensor) -> Tensor:
    """exp of a complex tensor as polar(exp(Re), Im): same values, ~3.5x faster than torch.exp on CPU."""
    return torch.polar(torch.exp(z.real), z.imag)


class DiagonalKernel(nn.Module):
    """S4D: diagonal state matrix, zero-order-hold discretisation, Vandermonde kernel."""

    def __init__(self, channels: int, d_state: int, init: str, dt_min: float, dt_max: float, ssm_lr: float | None):
        super().__init__()
        lam, b = diagonal_init(d_state, init)
        self.log_dt = nn.Parameter(_init_log_dt(channels, dt_min, dt_max))
        self.lambda_re_log = nn.Parameter(torch.log(-lam.real).float().repeat(channels, 1))
        self.lambda_im = nn.Parameter(lam.imag.float().repeat(channels, 1))
        self.B = _real_param(b.repeat(channels, 1))
        self.C = _real_param(torch.randn(channels, d_state // 2, dtype=torch.complex64) * math.sqrt(0.5))
        _mark_ssm([self.log_dt, self.lambda_re_log, self.lambda_im, self.B], ssm_lr)

    def _discrete(self, channels: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """(exp(ΔΛ), B̄, C) for the selected channels; ZOH: B̄ = (exp(ΔΛ) − 1)/Λ · B."""
        pick = (lambda t: t) if channels is None else (lambda t: t[channels])
        dt = torch.exp(pick(self.log_dt))[:, None]
        lam = torch.complex(-torch.exp(pick(self.lambda_re_log)), pick(self.lambda_im))
        dt_lam = lam * dt
        a_bar = torch.exp(dt_lam)
        b_bar = (a_bar - 1) / lam * _as_complex(pick(self.B))
        return dt_lam, b_bar, _as_complex(pick(self.C))

    def forward(self, length: int, channels: Tensor | None = None) -> Tensor:
        """Real kernel (H', length): K_j = 2·Re Σ_m C_m B̄_m z_m^j with z = exp(ΔΛ).

        Why blocked: a direct Vandermonde needs one complex exp per (channel, mode, tap) — 387M at the
        paper's size. Writing j = c·q + r turns it into a batched matmul of (C B̄ z^{cq}) by z^r with
        q, r < ~sqrt(L), so only O(H·N·sqrt(L)) exps are computed and the rest runs in BLAS.
        """
        dt_lam, b_bar, c = self._discrete(channels)
        weights = c * b_bar  # (H, M)
        block = max(1, math.isqrt(length))
        blocks = -(-length // block)
        real = dt_lam.real.dtype
        inner = _complex_exp(dt_lam[..., None] * torch.arange(block, device=dt_lam.device, dtype=real))  # (H, M, r)
        outer = weights[:, None, :] * _complex_exp(
            dt_lam[:, None, :] * (block * torch.arange(blocks, device=dt_lam.device, dtype=real))[None, :, None]
        )  # (H, q, M)
        # 2·Re(outer @ inner) as one real bmm: [Re, −Im] @ [Re; Im]. Kept float32 under AMP (autocast runs
        # bmm in half precision): powers of z near the unit circle lose the kernel's tail in bfloat16.
        lhs = torch.cat([outer.real, -outer.imag], dim=-1)
        rhs = torch.cat([inner.real, inner.imag], dim=-2)
        with torch.autocast(lhs.device.type, enabled=False):
            return 2 * torch.bmm(lhs, rhs).reshape(lhs.shape[0], -1)[:, :length]

    def step_matrices(self) -> dict[str, Tensor]:
        """Diagonal Ā, B̄ and C for the recurrent mode (state: (B, H, N/2) complex)."""
        dt_lam, b_bar, c = self._discrete(None)
        return {"a": torch.exp(dt_lam), "b": b_bar, "c": c}

    @staticmethod
    def step(u: Tensor, state: Tensor, mats: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        state = mats["a"] * state + mats["b"] * u[..., None]
        return 2 * (state * mats["c"]).sum(-1).real, state


class DPLRKernel(nn.Module):
    """S4: A = Λ − P Pᴴ from HiPPO-LegS, bilinear discretisation, Cauchy sums with a Woodbury correction."""

    def __init__(self, channels: int, d_state: int, init: str, dt_min: float, dt_max: float, ssm_lr: float | None):
        super().__init__()
        if init != "legs":
            raise ValueError(f"the DPLR kernel supports init 'legs' only, got {init!r} (use kernel: s4d for lin/inv)")
        nplr = legs_nplr(d_state)
        self.log_dt = nn.Parameter(_init_log_dt(channels, dt_min, dt_max))
        self.lambda_re_log = nn.Parameter(torch.log(-nplr.eigenvalues.real).float().repeat(channels, 1))
        self.lambda_im = nn.Parameter(nplr.eigenvalues.imag.float().repeat(channels, 1))
        self.P = _real_param(nplr.low_rank.repeat(channels, 1))
        self.B = _real_param(nplr.input_matrix.repeat(channels, 1))
        # C̃ relative to l_kernel; 0 means "not fixed yet": the first call sets it to its length.
        self.C = _real_param(torch.randn(channels, d_state // 2, dtype=torch.complex64) * math.sqrt(0.5))
        self.register_buffer("l_kernel", torch.zeros((), dtype=torch.long))
        _mark_ssm([self.log_dt, self.lambda_re_log, self.lambda_im, self.P, self.B], ssm_lr)

    def _params(self, channels: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        pick = (lambda t: t) if channels is None else (lambda t: t[channels])
        dt = torch.exp(pick(self.log_dt))
        lam = torch.complex(-torch.exp(pick(self.lambda_re_log)), pick(self.lambda_im))
        return dt, lam, _as_complex(pick(self.P)), _as_complex(pick(self.B)), _as_complex(pick(self.C))

    # --- length bookkeeping -------------------------------------------------------------------------
    @property
    def length(self) -> int:
        """ℓ as a Python int, without a device read while the `l_kernel` buffer is unchanged (host_values)."""
        return buffer_int(self, "l_kernel")

    def _store_length(self, value: int) -> None:
        store_buffer_int(self, "l_kernel", value)

    def ensure_length(self, length: int) -> None:
        """Fix or double the internal length ℓ until ℓ ≥ length, keeping the underlying C unchanged."""
        if self.length == 0:
            self._store_length(length)
            return
        while self.length < length:
            ell = self.length
            with torch.no_grad():
                a_bar, _, c_full = self._full_system(None, wide=True)
                power = torch.linalg.matrix_power(a_bar, ell)
                eye = torch.eye(power.shape[-1], dtype=power.dtype, device=power.device)
                c_new = torch.einsum("hn,hnm->hm", c_full, eye + power)[:, : self.C.shape[1]]
                self.C.copy_(torch.view_as_real(c_new.to(_as_complex(self.C).dtype)))
                self._store_length(2 * ell)

    def set_length(self, length: int) -> None:
        """Re-express C̃ for internal length `length` (any value): C̃' = C̃ (I − Ā^ℓ)^{-1} (I − Ā^{ℓ'})."""
        if self.length in (0, length):
            self._store_length(length)
            return
        with torch.no_grad():
            a_bar, _, c_tilde = self._full_system(None, wide=True)
            eye = torch.eye(a_bar.shape[-1], dtype=a_bar.dtype, device=a_bar.device)
            old = eye - torch.linalg.matrix_power(a_bar, self.length)
            c_true = torch.linalg.solve(old.transpose(-1, -2), c_tilde[..., None])[..., 0]
            new = eye - torch.linalg.matrix_power(a_bar, length)
            c_new = torch.einsum("hn,hnm->hm", c_true, new)[:, : self.C.shape[1]]
            self.C.copy_(torch.view_as_real(c_new.to(_as_complex(self.C).dtype)))
            self._store_length(length)

    # --- convolution kernel ------------------------------------------------------------------------
    def forward(self, length: int, channels: Tensor | None = None) -> Tensor:
        """Real kernel (H', length), the first `length` taps of the ℓ-tap kernel."""
        self.ensure_length(length)
        ell = self.length
        k_hat = dplr_generating_function(*self.generating_inputs(ell, channels))
        return torch.fft.irfft(k_hat, n=ell)[..., :length]

    def generating_inputs(self, ell: int, channels: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(numerators (4, H', M), λ (H', M), g (H', F), s (F,)) of the generating function at the ℓ-th roots of unity."""
        dt, lam, p, b, c = self._params(channels)
        freqs = torch.arange(ell // 2 + 1, device=dt.device, dtype=torch.float64)
        omega = torch.exp(-2j * math.pi * freqs / ell).to(lam.dtype)
        half = (1 + omega) / 2  # s: the bilinear pole at ω = −1 cancels after rescaling by s
        g = (1 - omega)[None, :] / dt[:, None].to(lam.dtype)  # (H', F)
        # Numerators of the four Cauchy sums: C̃RB, C̃RP, PᴴRB, PᴴRP.
        numer = torch.stack([c * b, c * p, p.conj() * b, p.conj() * p])  # (4, H', M)
        return numer, lam, g, half

    # --- recurrent mode ---------------------------------------------------------------------------
    def _full_system(self, channels: Tensor | None, wide: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """Dense Ā (H, N, N), B̄ (H, N) and C̃ (H, N) of the full conjugate-symmetric N-state system.

        `wide`: in float64/complex128 (`_widened`), for re-expressing C̃ at another length ℓ."""
        dt, lam, p, b, c = self._params(channels)
        if wide:
            dt, lam, p, b, c = map(_widened, (dt, lam, p, b, c))
        full = lambda t: torch.cat([t, t.conj()], dim=-1)  # noqa: E731
        lam_f, p_f, b_f, c_f = full(lam), full(p), full(b), full(c)
        a = torch.diag_embed(lam_f) - p_f[:, :, None] * p_f.conj()[:, None, :]
        eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        half_dt = (dt / 2).to(a.dtype)[:, None, None]
        lhs = eye - half_dt * a
        a_bar = torch.linalg.solve(lhs, eye + half_dt * a)
        b_bar = torch.linalg.solve(lhs, (dt.to(a.dtype)[:, None] * b_f)[..., None])[..., 0]
        return a_bar, b_bar, c_f

    def step_matrices(self) -> dict[str, Tensor]:
        """Ā, B̄ and the true C = C̃ (I − Ā^ℓ)^{-1} for the recurrent mode (state: (B, H, N) complex)."""
        a_bar, b_bar, c_tilde = self._full_system(None, wide=True)
        ell = max(self.length, 1)
        eye = torch.eye(a_bar.shape[-1], dtype=a_bar.dtype, device=a_bar.device)
        lhs = (eye - torch.linalg.matrix_power(a_bar, ell)).transpose(-1, -2)
        c = torch.linalg.solve(lhs, c_tilde[..., None])[..., 0]
        dtype = _as_complex(self.C).dtype
        return {"a": a_bar.to(dtype), "b": b_bar.to(dtype), "c": c.to(dtype)}

    @staticmethod
    def step(u: Tensor, state: Tensor, mats: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        state = torch.einsum("hnm,bhm->bhn", mats["a"], state) + mats["b"] * u[..., None]
        return (state * mats["c"]).sum(-1).real, state


def sync_kernel_lengths(*modules: nn.Module) -> None:
    """Give corresponding DPLR kernels of structurally identical modules the same internal length ℓ.

    Needed before an EMA update (S5's momentum guide, LSMCL's key encoder): C̃ means C (I − Ā^ℓ), so
    averaging two C̃ is only meaningful when both use the same ℓ. The longer length wins.
    """
    kernels = [[m for m in module.modules() if isinstance(m, DPLRKernel)] for module in modules]
    for group in zip(*kernels, strict=True):
        target = max(k.length for k in group)
        if target:
            for k in group:
                if k.length != target:
                    k.set_length(target)


def build_kernel(kind: str, channels: int, d_state: int, init: str, dt_min: float, dt_max: float,
                 ssm_lr: float | None) -> nn.Module:
    """Kernel module by name: "dplr" (S4) or "s4d" (diagonal)."""
    if kind == "dplr":
        return DPLRKernel(channels, d_state, init, dt_min, dt_max, ssm_lr)
    if kind == "s4d":
        return DiagonalKernel(channels, d_state, init, dt_min, dt_max, ssm_lr)
    raise ValueError(f"unknown S4 kernel {kind!r}; use 'dplr' or 's4d'")


__all__ = ["DPLRKernel", "DiagonalKernel", "build_kernel"]
