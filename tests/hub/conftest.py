"""Fixtures: a fake Hub on 127.0.0.1 with the real huggingface_hub client pointed at it, tiny recipes/checkpoints."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hub.fake_hub import FakeHub

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN = "hf_test_token"


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A running fake Hub; HF_ENDPOINT, the Hub cache and the token all point at test-local places."""
    from huggingface_hub import constants

    with FakeHub(token=TOKEN) as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)  # huggingface_hub's other offline switch
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        # The saved-login token file is read from a path fixed at import time: point it at nothing.
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        # huggingface_hub 2.x builds its first request headers after fetching an "agent harness" registry
        # from huggingface.co (best effort, so no test failed; `_no_network` in tests/conftest.py caught
        # it) and caches it under HF_HOME: give it the empty registry it falls back to offline.
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        try:
            from huggingface_hub.utils import _detect_agent

            monkeypatch.setattr(_detect_agent, "_registry", _detect_agent._EMPTY_REGISTRY)
        except (ImportError, AttributeError):  # a huggingface_hub without the registry fetches nothing
            pass
        # With hf_xet installed the client sends LFS-mode files through Xet storage (a separate CAS service
        # the fake does not emulate); without it, through the classic LFS batch API, which the fake serves.
        import huggingface_hub._commit_api as commit_api

        monkeypatch.setattr(commit_api, "is_xet_available", lambda: False)
        yield fake


@pytest.fixture
def recipe_file(tmp_path: Path) -> Path:
    """A valid recipe (the bundled synthetic one, copied) in a temp folder."""
    path = tmp_path / "src" / "synthetic.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((REPO_ROOT / "recipes" / "synthetic.yaml").read_bytes())
    return path


TINY_MODEL = {"name": "s5", "d_input": 96, "d_model": 16, "n_blocks": 1, "d_state": 8, "guide_channels": 8,
              "mg_hidden": 8, "keep_ratio": 0.5}


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run folder laid out as the trainer writes it: a tiny S5 step checkpoint (optimizer state included)
    named by `latest`, and best/ with the same weights but, like every best/, no trainer state."""
    import torch

    from s5cli.models.registry import build_model
    from s5cli.recipe import load_recipe, recipe_to_dict
    from s5cli.train import checkpoint as ckpt
    from s5cli.train.checkpoint_paths import set_latest

    recipe_path = tmp_path / "tiny.yaml"
    recipe_path.write_bytes((REPO_ROOT / "recipes" / "synthetic.yaml").read_bytes())
    overrides = [f"model.{k}={v}" for k, v in TINY_MODEL.items() if k != "name"]
    recipe = recipe_to_dict(load_recipe(recipe_path, overrides))
    torch.manual_seed(0)
    model = build_model("s5", {k: v for k, v in TINY_MODEL.items() if k != "name"}, 9)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 4, 37, 96)).sum().backward()
    optimizer.step()
    run = tmp_path / "run"
    metadata = {"model_name": "s5", "num_outputs": "9", "recipe": json.dumps(recipe), "step": "7",
                "objective": "supervised"}
    metrics = {"top1": 0.375, "top5": 0.875, "count": 8, "windows": 8, "confusion_matrix": [[1]]}
    step = ckpt.save_checkpoint(run / "checkpoints" / "step-0000007", model, metadata, optimizer, {},
                                ckpt.TrainerState(step=7, epoch=1), metrics)
    set_latest(run, step)
    ckpt.save_checkpoint(run / "best", model, metadata, metrics=metrics)
    return run
