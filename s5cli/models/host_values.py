"""Small device tensors (a DPLR kernel's length ℓ, LSMCL's queue fill, S5's guide channels) read on the host
without a device round trip while they are unchanged.

Why: such a buffer lives on the model's device so that checkpoints, `.to()` and DDP's buffer broadcast carry
it, but every forward needs its value on the host (FFT sizes, loop bounds, slices). Reading a CUDA tensor
waits for all queued GPU work, and three reads per DPLR layer per step stalled the launch queue 10-20
times a step. The value read last is remembered with the buffer object and its version counter: every
in-place write (`fill_`, `mul_`, `load_state_dict`'s `copy_`) bumps the counter and `.to()` makes a new
object, so a changed buffer is always read again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn


def _memo_slot(name: str) -> str:
    return f"_host_value_{name}"


def _remembered(owner: nn.Module, slot: str, tensor: Tensor, read: Callable[[Tensor], Any]) -> Any:
    """`read(tensor)`, kept in `owner.__dict__[slot]` with the tensor object and its version counter and
    returned from there while both are unchanged."""
    try:
        version = tensor._version
    except RuntimeError:  # a tensor made under torch.inference_mode has no version counter
        return read(tensor)
    seen = owner.__dict__.get(slot)
    if seen is not None and seen[0] is tensor and seen[1] == version:
        return seen[2]
    value = read(tensor)
    owner.__dict__[slot] = (tensor, version, value)
    return value


def buffer_int(module: nn.Module, name: str) -> int:
    """`int(module.<name>)`, from memory while the buffer is the same object at the same version."""
    return _remembered(module, _memo_slot(name), getattr(module, name), int)


def store_buffer_int(module: nn.Module, name: str, value: int) -> None:
    """Write `value` into the scalar buffer and remember it, so the next `buffer_int` needs no device read."""
    buffer = getattr(module, name)
    buffer.fill_(value)
    try:
        module.__dict__[_memo_slot(name)] = (buffer, buffer._version, int(value))
    except RuntimeError:
        module.__dict__.pop(_memo_slot(name), None)


def tensor_values(owner: nn.Module, tensor: Tensor, slot: str) -> tuple:
    """`tuple(tensor.tolist())`, remembered in `owner` under `slot` while `tensor` is the same object at the
    same version (a small index tensor that a cache key must name by value, e.g. S5's guide channels)."""
    return _remembered(owner, slot, tensor, lambda t: tuple(t.tolist()))
