"""Backbone weights from a local safetensors file or a Hugging Face Hub id: finding the file, the mean/std its
config.json states, and loading timm-layout ViT weights into a `VisionTransformer`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from torch import Tensor

from s5cli.errors import UserError, first_line
from s5cli.models.vit import VisionTransformer, resample_pos_embed

if TYPE_CHECKING:
    from s5cli.hub.paths import HubSpec

# Keys of a timm checkpoint that a token extractor does not use (classification heads).
IGNORED_PREFIXES = ("head.", "head_drop.", "pre_logits.", "fc_norm.")
REFUSED_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt", ".pkl", ".npz", ".h5")


def resolve_weights(weights: str) -> tuple[Path, dict]:
    """Local safetensors path or Hub id -> (safetensors file, timm pretrained_cfg if a config.json comes with it)."""
    text = str(weights).strip()
    lowered = text.lower()
    if lowered.endswith(REFUSED_SUFFIXES):
        raise UserError(
            f"backbone weights {text!r} are not safetensors: pickle checkpoints can run code when loaded",
            hint="convert them with safetensors.torch.save_file or use the Hub id of a safetensors release",
        )
    local = local_weights_path(text)
    if local is not None:
        if local.is_dir():
            raise UserError(f"backbone weights {local} is a folder: pass the .safetensors file in it")
        if not local.is_file():
            raise UserError(f"backbone weights file {local} not found")
        return local, local_pretrained_cfg(local)
    repo_id = text.removeprefix("hf-hub:").removeprefix("hf://")
    revision = None
    if "@" in repo_id:
        repo_id, revision = repo_id.split("@", 1)
    if repo_id.count("/") != 1:
        raise UserError(
            f"backbone weights {text!r} is neither a .safetensors file nor a Hub id like 'timm/vit_small_patch16_224.augreg_in21k'"
        )
    # Through s5cli's Hub download, as checkpoints and recipes are: one request decides whether the Hub
    # answers, so an unreachable one fails in a second with one line (hf_hub_download alone retried five
    # times, ~26 s and a dozen lines of retries), and a cached copy is used with a warning.
    from s5cli.errors import RunFailure
    from s5cli.hub.download import download_file
    from s5cli.hub.paths import HubSpec

    spec = HubSpec(repo_id, revision)
    try:
        file = download_file(spec, "model.safetensors")
    except UserError as error:
        raise UserError(f"backbone weights {text}: {error}") from None
    except RunFailure as error:  # the Hub unreachable and nothing cached: exit 1, as every Hub download
        raise RunFailure(f"backbone weights {text}: {error}") from None
    try:
        config_file = download_file(spec, "config.json")
    except (UserError, RunFailure) as error:
        # Optional where the repo has none: the backbone then keeps its preset normalisation. Said where it
        # could not be fetched (the Hub unreachable, or offline, and not cached): the preset mean/std may
        # not be the weights' own, which gave other tokens under the same token-cache key without a word.
        if not _config_known_absent(spec, error):
            from s5cli.cli.console import print_warning

            print_warning(f"backbone weights {text}: config.json (the normalisation the weights were trained "
                          f"with) could not be fetched ({first_line(error)[:160]}): using the preset mean/std; "
                          "extract again once it can be, if the tokens must match ones made with it")
        config_file = None
    return file, _read_pretrained_cfg(config_file)


def local_weights_path(weights: str) -> Path | None:
    """The path `weights` names when it is a local file rather than a Hub id (whether or not it exists).

    Why a function of its own: the token-cache key fingerprints a local file's contents
    (`cache.ExtractionSettings.key`), and must take the same text for a file that `resolve_weights` does.
    """
    text = str(weights).strip()
    if text.lower().endswith(REFUSED_SUFFIXES):  # never loaded (`resolve_weights` refuses it): nothing to hash
        return None
    local = Path(text).expanduser()
    return local if text.lower().endswith(".safetensors") or local.exists() else None


def local_pretrained_cfg(file: Path) -> dict:
    """The mean/std of the config.json beside a local weights file ({} without one): they change the tokens."""
    return _read_pretrained_cfg(file.with_name("config.json"))


def _config_known_absent(spec: HubSpec, error: Exception) -> bool:
    """Whether a failed config.json download means the repo has none: the Hub answered (online, not an
    outage), or the Hub cache remembers that it answered so (offline, or the Hub unreachable)."""
    from huggingface_hub import try_to_load_from_cache

    from s5cli.hub.client import hub_settings

    settings = hub_settings()
    if isinstance(error, UserError) and not settings.offline:
        return True
    cached = try_to_load_from_cache(spec.repo_id, "config.json", cache_dir=str(settings.cache_dir),
                                    revision=spec.revision)
    # A str is the cached file (then download_file had not failed); None: nothing known; anything else is
    # huggingface_hub's marker of a file the Hub said does not exist.
    return cached is not None and not isinstance(cached, str)


def _read_pretrained_cfg(path: Path | None) -> dict:
    if path is None or not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    cfg = config.get("pretrained_cfg", {}) if isinstance(config, dict) else {}
    return {key: cfg[key] for key in ("mean", "std") if isinstance(cfg.get(key), list) and len(cfg[key]) == 3}


def read_safetensors(path: Path) -> dict[str, Tensor]:
    """All tensors of a safetensors file; UserError naming the file if it is not one."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as error:
        raise UserError(
            f"{path}: not a readable safetensors file ({str(error).splitlines()[0][:120]})"
        ) from None


def load_timm_state_dict(model: VisionTransformer, state: dict[str, Tensor], source: str = "weights") -> None:
    """Strictly load a timm-layout ViT state dict (heads ignored, pos_embed resampled to the model's grid)."""
    state = {key: value for key, value in state.items() if not key.startswith(IGNORED_PREFIXES)}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_few(unexpected)}")
        raise UserError(f"backbone weights {source} do not fit the ViT layout: {'; '.join(parts)}")
    pos = state["pos_embed"]
    if pos.shape != expected["pos_embed"].shape and pos.shape[-1] == expected["pos_embed"].shape[-1]:
        grid = math.isqrt(expected["pos_embed"].shape[1] - model.prefix_tokens)
        patches = pos.shape[1] - model.prefix_tokens if pos.dim() == 3 else -1
        if patches < 1 or math.isqrt(patches) ** 2 != patches:
            raise UserError(f"backbone weights {source}: pos_embed {tuple(pos.shape)} is not (1, "
                            f"{model.prefix_tokens} + a square grid of patches, width): not timm ViT weights")
        state["pos_embed"] = resample_pos_embed(pos, (grid, grid), model.prefix_tokens)
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if state[k].shape != v.shape
    ]
    if wrong:
        raise UserError(f"backbone weights {source} have other shapes than the ViT preset: {_few(wrong)}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)


def _few(items: list[str], limit: int = 4) -> str:
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown} (+{len(items) - limit} more)"
