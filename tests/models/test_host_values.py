"""buffer_int / store_buffer_int: a scalar buffer's value on the host, read again whenever the buffer changed."""

from __future__ import annotations

import copy

import torch
from torch import nn

from s5cli.models.host_values import buffer_int, store_buffer_int, tensor_values


class Holder(nn.Module):
    def __init__(self, value: int = 0):
        super().__init__()
        self.register_buffer("count", torch.tensor(value))


def _count_reads(monkeypatch, method: str = "__int__") -> dict[str, int]:
    """Count calls of a Tensor method that copies values to the host (`__int__`, `tolist`)."""
    reads = {"n": 0}
    real = getattr(torch.Tensor, method)

    def counting(tensor):
        reads["n"] += 1
        return real(tensor)

    monkeypatch.setattr(torch.Tensor, method, counting)
    return reads


def test_an_unchanged_buffer_is_read_once(monkeypatch) -> None:
    holder = Holder(7)
    reads = _count_reads(monkeypatch)
    assert [buffer_int(holder, "count") for _ in range(5)] == [7] * 5
    assert reads["n"] == 1
    store_buffer_int(holder, "count", 9)
    assert buffer_int(holder, "count") == 9 and int(holder.count) == 9
    assert reads["n"] == 2  # only the explicit int() above: a stored value needs no read back


def test_every_kind_of_write_is_seen() -> None:
    holder = Holder(3)
    assert buffer_int(holder, "count") == 3
    holder.count.fill_(4)  # an in-place write made elsewhere
    assert buffer_int(holder, "count") == 4
    holder.load_state_dict({"count": torch.tensor(11)})  # copy_ into the buffer
    assert buffer_int(holder, "count") == 11
    holder.count = torch.tensor(12)  # a new buffer object, as `.to(device)` makes
    assert buffer_int(holder, "count") == 12
    twin = copy.deepcopy(holder)
    twin.count.mul_(2)
    assert (buffer_int(twin, "count"), buffer_int(holder, "count")) == (24, 12)


def test_a_buffer_made_in_inference_mode_is_always_read() -> None:
    with torch.inference_mode():
        holder = Holder(5)
        assert buffer_int(holder, "count") == 5
        store_buffer_int(holder, "count", 6)
        assert buffer_int(holder, "count") == 6
        holder.count.fill_(8)
        assert buffer_int(holder, "count") == 8


def test_index_values_are_read_once_while_unchanged(monkeypatch) -> None:
    owner = Holder()
    channels = torch.tensor([0, 4, 8])
    calls = _count_reads(monkeypatch, "tolist")
    assert [tensor_values(owner, channels, "_seen") for _ in range(3)] == [(0, 4, 8)] * 3
    assert calls["n"] == 1
    channels[1] = 5  # an in-place write
    assert tensor_values(owner, channels, "_seen") == (0, 5, 8)
    assert tensor_values(owner, torch.tensor([1, 2]), "_seen") == (1, 2)  # another tensor
    assert calls["n"] == 3


def test_the_guides_inference_forward_reads_its_channels_once() -> None:
    # S5's guide names its channel subset in its kernel-cache key on every inference forward.
    from s5cli.models.s5 import S5Config, S5Model

    torch.manual_seed(0)
    model = S5Model(S5Config(d_input=16, d_model=32, n_blocks=2, d_state=8, guide_channels=8, dropout=0.0), 3).eval()
    tokens = torch.randn(1, 6, 4, 16)
    with torch.no_grad():
        first = model(tokens)
        seen = model.guide.s4.__dict__["_picked_seen"]
        assert model(tokens).equal(first)
        assert model.guide.s4.__dict__["_picked_seen"] is seen  # remembered, not read again
