"""Mixed precision: which dtype on which GPU, whether a GradScaler is needed, and the recipe's switch.

No GPU here: `torch.cuda.get_device_capability` is faked, and only the autocast contexts' settings are read.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from s5cli.train.evaluation import amp_dtype, autocast, needs_grad_scaler

T4, A100 = torch.device("cuda", 0), torch.device("cuda", 1)


@pytest.fixture
def two_gpus(monkeypatch) -> None:
    """cuda:0 a T4 (compute capability 7.5, bfloat16 only emulated), cuda:1 an A100 (8.0)."""
    capability = {0: (7, 5), 1: (8, 0)}
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability[torch.device(device).index])


def test_bfloat16_only_where_the_gpu_computes_it(two_gpus) -> None:
    # torch.cuda.is_bf16_supported() says True on a T4 (it counts emulation) and asks the current device.
    assert amp_dtype(T4) == torch.float16 and amp_dtype(A100) == torch.bfloat16


def test_a_grad_scaler_only_for_float16_autocast(two_gpus) -> None:
    assert needs_grad_scaler(T4) and not needs_grad_scaler(A100)
    assert not needs_grad_scaler(T4, enabled=False)  # train.amp: false trains in float32
    assert not needs_grad_scaler(torch.device("cpu"))


def test_autocast_follows_the_recipe_switch(two_gpus) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CUDA is not available": only the settings are read here
        on, off = autocast(A100), autocast(A100, enabled=False)
    assert on.device == "cuda" and on.fast_dtype == torch.bfloat16
    assert off.device == "cuda" and not off._enabled  # train.amp=false used to be ignored
    assert not autocast(torch.device("cpu"))._enabled  # AMP on GPU only
