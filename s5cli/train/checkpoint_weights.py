"""A checkpoint's weights read back: the model's own (retired keys left out), checked against the module
they load into."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from s5cli.errors import UserError
from s5cli.train.checkpoint import MODEL_FILE
from s5cli.train.checkpoint_paths import checkpoint_dir


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Model weights of a checkpoint."""
    return load_file(str(checkpoint_dir(path) / MODEL_FILE))


# Weights that earlier builds saved and this one no longer has: S5's guide kept an unused copy of its S4
# layer's output projection until 2026-11-29 (0.1.0, unreleased). Checkpoints with them load without them.
RETIRED_KEY_PARTS = ("guide.s4.out_linear.",)


def model_weights(path: str | Path, meta: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """The weights of the model a checkpoint holds (`meta`: its metadata), without retired ones: of an
    LSMCL checkpoint, its encoder's (the key encoder and projectors are pretraining's own)."""
    state = load_state(path)
    if meta.get("objective") == "lsmcl":
        state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    return {k: v for k, v in state.items() if not any(part in k for part in RETIRED_KEY_PARTS)}


def weight_mismatch(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]
                    ) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, mis-shaped) keys of `state` against a module's state dict `own`, sorted."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    return missing, unexpected, wrong


def load_into(module: nn.Module, state: Mapping[str, torch.Tensor], source: str, *, strict: bool = True) -> None:
    """Load weights, naming mismatched keys and shapes (another architecture) in one line."""
    state = {k: v for k, v in state.items() if not any(part in k for part in RETIRED_KEY_PARTS)}
    # Buffers added since a checkpoint was written, at the value that module gives an older one (LSMCL's
    # queue ids): its resume otherwise failed as "another model".
    defaults = getattr(module, "defaults_for_older_checkpoints", None)
    if defaults is not None:
        state = {**{k: v for k, v in defaults().items() if k not in state}, **state}
    own = module.state_dict()
    missing, unexpected, wrong = weight_mismatch(own, state)
    if (strict and (missing or unexpected)) or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (e.g. {', '.join(missing[:3])})")
        if unexpected and strict:
            parts.append(f"unexpected {len(unexpected)} keys (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(
                "shape mismatch " + ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in wrong[:3])
            )
        raise UserError(f"{source} does not fit this model: {'; '.join(parts)} — was it trained with another model?")
    # Training stops on a non-finite loss before it saves, so non-finite weights mean a damaged or foreign
    # file: they loaded silently and evaluated to plausible-looking numbers (every video one class).
    broken = nonfinite_weights({k: state[k] for k in own if k in state})
    if broken:
        raise UserError(f"{source} holds non-finite (NaN/inf) weights in {len(broken)} tensors (e.g. {broken[0]}): "
                        "the checkpoint is damaged; use another one")
    module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


def nonfinite_weights(state: Mapping[str, torch.Tensor]) -> list[str]:
    """The floating-point tensors of `state` holding NaN or inf, by name, sorted (a diverged or damaged model)."""
    return sorted(k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all())
