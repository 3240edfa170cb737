"""The S4 layer: a bank of independent linear state-space models applied as a long convolution.

`S4Layer.forward` = out_linear(dropout(gelu(ssm(x)))) on (B, L, H) sequences, as in ViS4mer's S4 v1
(postact None, so no GLU). `ssm` is the depthwise SSM convolution plus the D skip alone, and can run on a
subset of channels — S5's momentum guide uses that to stay cheaper than the model it guides.
The convolution itself is `s5cli.models.fft_conv`; `step_state`/`step` run the same SSM as a recurrence
for streaming.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s5cli.models.fft_conv import causal_fft_conv, kernel_spectrum
from s5cli.models.host_values import tensor_values
from s5cli.models.s4_kernels import build_kernel


@dataclass
class S4Config:
    """Hyper-parameters of one S4 layer (defaults: ViS4mer's LVU setting)."""

    d_model: int
    d_state: int = 64
    kernel: str = "dplr"  # "dplr" (S4, HiPPO-LegS NPLR, Cauchy + Woodbury) | "s4d" (diagonal, Vandermonde)
    init: str = "legs"  # dplr: "legs"; s4d: "lin" | "inv" | "legs"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    bidirectional: bool = False
    dropout: float = 0.0
    ssm_lr: float | None = 1e-3  # lr of A, B, Δt (never weight-decayed); None = the main lr


class TiedDropout(nn.Module):
    """Dropout whose mask is shared along the sequence (drops whole channels), as S4 does for (B, L, H)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        mask = torch.rand(x.shape[0], 1, x.shape[2], device=x.device) >= self.p
        return x * mask.to(x.dtype) / (1 - self.p)


class S4Layer(nn.Module):
    """One S4 layer over (B, L, H): SSM convolution + D skip → GELU → dropout → position-wise linear."""

    def __init__(self, config: S4Config):
        super().__init__()
        self.config = config
        h = config.d_model
        directions = 2 if config.bidirectional else 1
        self.kernel_gen = build_kernel(
            config.kernel, h * directions, config.d_state, config.init, config.dt_min, config.dt_max, config.ssm_lr
        )
        self.D = nn.Parameter(torch.randn(h))
        self.dropout = TiedDropout(config.dropout)
        self.out_linear = nn.Linear(h, h)

    def kernel(self, length: int, channels: Tensor | None = None) -> Tensor:
        """Real convolution kernel (H', length); (2, H', length) [forward, backward] when bidirectional.

        Without autograd (evaluation, the momentum guide) the kernel is reused while the SSM parameters are
        unchanged: it depends on nothing else, and generating it (Cauchy / Vandermonde sums over all
        frequencies) costs more than the convolution itself at inference.
        """
        if torch.is_grad_enabled():
            self.drop_reused_kernel()  # stale once training changes the parameters
            return self._generate_kernel(length, channels)
        return self._reused("_kernel_cache", length, channels, (), lambda: self._generate_kernel(length, channels))

    def drop_reused_kernel(self) -> None:
        """Forget the kernel and spectrum kept for inference; the next call generates them again."""
        self.__dict__.pop("_kernel_cache", None)
        self.__dict__.pop("_spectrum_cache", None)

    def _reused(self, slot: str, length: int, channels: Tensor | None, extra: tuple, make) -> Tensor:
        """`make()`'s value, kept in `slot` and returned again while the kernel's inputs are unchanged.

        The key is taken again after `make()`: generating a DPLR kernel may grow its internal length in
        place, and the value then belongs to the new state. A module in training mode keeps nothing: its
        parameters change every step (the optimiser, or S5's momentum update of its guide), so a kept
        value would never be reused, only held through the step's memory peak (S5's guide spectrum: 1.1 MiB
        of a 27 MiB default-size training peak).
        """
        if self.training:
            self.__dict__.pop(slot, None)
            return make()
        key = self._kernel_key(length, channels)
        cached = self.__dict__.get(slot)
        if key is not None and cached is not None and cached[0] == (key, extra):
            return cached[1]
        value = make()
        key = self._kernel_key(length, channels)
        if key is not None:
            self.__dict__[slot] = ((key, extra), value)
        return value

    def _kernel_key(self, length: int, channels: Tensor | None) -> tuple | None:
        """What the kernel depends on; None where it cannot be told (inference-mode parameters)."""
        try:
            # The storage too: `p.data = ...`, `torch.func.functional_call` and `swap_tensors` replace a
            # parameter's tensor without bumping a version counter, and returned the old kernel.
            versions = tuple((t._version, t.data_ptr())
                             for t in (*self.kernel_gen.parameters(), *self.kernel_gen.buffers()))
        except RuntimeError:  # parameters created under torch.inference_mode have no version counter
            return None
        first = self.D
        picked = None if channels is None else (str(channels.device), tensor_values(self, channels, "_picked_seen"))
        # id(self): a deep copy (the S5 guide) starts with equal version numbers but its own future.
        return (id(self), length, picked, first.device, first.dtype, versions)

    def _inference_spectrum(self, kernel_length: int, channels: Tensor | None, length: int, dtype) -> Tensor:
        """FFT of the kernel for inputs of `length`, reused while the SSM parameters are unchanged.

        Only the spectrum is kept, not the time-domain kernel it came from: at inference the convolution
        needs nothing else, and at the paper's length the kernel alone is 48 MB per layer.
        """
        return self._reused(
            "_spectrum_cache", kernel_length, channels, (length, dtype),
            lambda: kernel_spectrum(self._generate_kernel(kernel_length, channels).to(dtype), length),
        )

    def _generate_kernel(self, length: int, channels: Tensor | None) -> Tensor:
        if not self.config.bidirectional:
            return self.kernel_gen(length, channels)
        h = self.config.d_model
        idx = torch.arange(h, device=self.D.device) if channels is None else channels
        both = self.kernel_gen(length, torch.cat([idx, idx + h]))
        return both.view(2, -1, length)

    def ssm(
        self, x: Tensor, channels: Tensor | None = None, max_kernel_length: int | None = None,
        preselected: bool = False,
    ) -> Tensor:
        """Depthwise SSM convolution plus the D skip: (B, L, H) → (B, L, H'), H' = len(channels) or H.

        `max_kernel_length` truncates the impulse response (the SSM then remembers at most that many steps);
        S5's guide uses it to share the decoder's kernel length. `preselected`: x already holds only
        `channels` (B, L, H'), so the caller never had to build the full-width input.
        """
        u = x if channels is None or preselected else x.index_select(-1, channels)
        out_dtype = u.dtype
        u = u.float() if u.dtype in (torch.float16, torch.bfloat16) else u  # FFT in at least fp32
        length = u.shape[1]
        kernel_length = min(length, max_kernel_length or length)
        d = (self.D if channels is None else self.D.index_select(0, channels)).to(u.dtype)
        if not self.config.bidirectional and not torch.is_grad_enabled():
            spectrum = self._inference_spectrum(kernel_length, channels, length, u.dtype)
            y = causal_fft_conv(u, None, spectrum, kernel_length)
            return y.addcmul_(u, d).to(out_dtype)  # in place: one activation less at inference
        k = self.kernel(kernel_length, channels).to(u.dtype)
        if self.config.bidirectional:
            forward_k, backward_k = k[0], k[1]
            y = causal_fft_conv(u, forward_k)
            # The backward branch sees strictly future inputs (lag ≥ 1), so the present is not counted twice.
            shifted = F.pad(backward_k, (1, 0))[..., : backward_k.shape[-1]]
            y = y + causal_fft_conv(u.flip(1), shifted).flip(1)
        else:
            y = causal_fft_conv(u, k)
        return (y + u * d).to(out_dtype)

    def forward(self, x: Tensor) -> Tensor:
        """(B, L, H) → (B, L, H)."""
        return self.out_linear(self.dropout(F.gelu(self.ssm(x))))

    # --- recurrent (streaming) mode -------------------------------------------------------------------
    def step_state(self, batch: int) -> Tensor:
        """Zero recurrent state for `batch` sequences; also prepares the discrete matrices for `step`."""
        if self.config.bidirectional:
            raise ValueError("step mode needs a causal layer; bidirectional S4 sees the future")
        self._step_mats = self.kernel_gen.step_matrices()
        a = self._step_mats["a"]
        n = a.shape[-1]
        return torch.zeros(batch, self.config.d_model, n, dtype=a.dtype, device=a.device)

    def step_ssm(self, x_t: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """One step of `ssm`: (B, H) input at time t → (B, H) output, new state."""
        y, state = self.kernel_gen.step(x_t, state, self._step_mats)
        return y.to(x_t.dtype) + x_t * self.D, state

    def step(self, x_t: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """One step of `forward`: equals forward(x)[:, t] given the state after inputs 0..t−1."""
        y, state = self.step_ssm(x_t, state)
        return self.out_linear(self.dropout(F.gelu(y[:, None]))[:, 0]), state


def ssm_param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: SSM dynamics (Λ, P, B, Δt) with their own lr and no weight decay; the rest."""
    hinted: dict[tuple, list[nn.Parameter]] = {}
    rest: list[nn.Parameter] = []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        hint = getattr(param, "_optim", None)
        if hint is None:
            rest.append(param)
        else:
            hinted.setdefault(tuple(sorted(hint.items())), []).append(param)
    groups = [{"params": rest, "lr": lr, "weight_decay": weight_decay}] if rest else []
    for key, params in hinted.items():
        hint = dict(key)
        groups.append({"params": params, "lr": hint.get("lr", lr), "weight_decay": hint.get("weight_decay", 0.0)})
    return groups
