"""What the token cache is keyed by: the extraction settings that change the tokens, and the key that names
their cache folder.

The folder name is a hash of every setting that changes the tokens (backbone, weights: a local file by its
contents, frames, fps, image size, storage dtype), so changing any of them can never reuse a stale cache.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from s5cli.data.frame_transform import RESIZE_MODES
from s5cli.data.weights_fingerprint import local_weights_fingerprint
from s5cli.errors import UserError

if TYPE_CHECKING:
    import torch

CACHE_FORMAT = "s5cli-tokens/1"
DTYPES = ("float16", "bfloat16", "float32")


def check_storage_dtype(name: str) -> None:
    """UserError unless `name` is a dtype the cache stores tokens in."""
    if name not in DTYPES:
        raise UserError(f"data.cache_dtype={name!r} is not supported: use one of {', '.join(DTYPES)}")


def storage_dtype(name: str) -> torch.dtype:
    """The torch dtype of a `data.cache_dtype` name; visualize-mask rounds its tokens to it as the cache does."""
    import torch

    check_storage_dtype(name)
    return getattr(torch, name)


@dataclass(frozen=True)
class ExtractionSettings:
    """Everything that changes the cached tokens; `key()` names the cache folder."""

    backbone: str
    backbone_weights: str | None
    frames: int | None
    fps: float | None
    image_size: int
    dtype: str = "float16"
    resize: str = "crop"  # `frame_transform.RESIZE_MODES`: how a frame becomes the backbone's square

    def __post_init__(self) -> None:
        check_storage_dtype(self.dtype)
        if self.resize not in RESIZE_MODES:
            raise UserError(f"data.resize={self.resize!r} is not one of {', '.join(RESIZE_MODES)}")

    @property
    def torch_dtype(self) -> torch.dtype:
        """The torch dtype tokens are stored in (`dtype` names it)."""
        return storage_dtype(self.dtype)

    def key(self) -> str:
        """Short stable hash of all fields (and the file format): any change gives a new key.

        A local weights file counts by its contents (`local_weights_fingerprint`), not by the path typed:
        the same path overwritten, or `weights.safetensors` in another folder, is another network, whose
        tokens were reused as the old one's. Without a local file (no weights, a Hub id) the key is the one
        earlier versions computed, so their caches stay found (but for a real ViT preset without weights,
        whose frames are now normalised with its own mean/std); a Hub id counts as its bare `OWNER/NAME[@REV]`
        (the spelling of the bundled recipes), so `hf://` and `hf-hub:` before it no longer split the cache.
        """
        values: dict[str, Any] = asdict(self)
        # 8 and 8.0 fps are the same setting; normalise so a YAML spelling does not split the cache.
        values["fps"] = None if self.fps is None else float(self.fps)
        if self.resize == "crop":  # the only mode before `resize` existed: caches made then keep their key
            del values["resize"]
        # The real ViT presets' own mean/std where no config.json states one (`normalisation_key`): earlier
        # keys held none, and their tokens were normalised with ImageNet's. Every other key stays as it was.
        from s5cli.models.backbone import normalisation_key

        fingerprint = local_weights_fingerprint(self.backbone_weights)
        if fingerprint is not None:
            values["backbone_weights"] = {**fingerprint, **normalisation_key(self.backbone, fingerprint)}
        elif self.backbone_weights:
            values["backbone_weights"] = hub_spelling(self.backbone_weights)
        elif unstated := normalisation_key(self.backbone, {}):  # a random preset: its input changed as well
            values["normalisation"] = unstated
        text = json.dumps({"format": CACHE_FORMAT, **values}, sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]

    def token_shape(self) -> tuple[int, int] | None:
        """(tokens per frame, width) the backbone gives at `image_size`; None for a backbone not known here.

        Why: an entry of another shape (hand-made, or written under other settings and copied in) passed every
        check and stopped training mid-epoch when a batch stacked it with the others. Weights load strictly
        into the preset (`load_timm_state_dict`), so the preset's shape is the shape of every weights file.
        """
        from s5cli.models.backbone import backbone_token_shape

        return backbone_token_shape(self.backbone, self.image_size)

    def metadata(self) -> dict[str, str]:
        """The settings as safetensors metadata (string values only)."""
        fingerprint = local_weights_fingerprint(self.backbone_weights)
        return {
            **({"backbone_weights_sha256": fingerprint["sha256"]} if fingerprint else {}),
            "format": CACHE_FORMAT,
            "backbone": self.backbone,
            "backbone_weights": self.backbone_weights or "",
            "frames": "" if self.frames is None else str(self.frames),
            "fps": "" if self.fps is None else str(float(self.fps)),
            "image_size": str(self.image_size),
            "dtype": self.dtype,
            "resize": self.resize,
            "settings_key": self.key(),
        }


def hub_spelling(weights: str) -> str:
    """A Hub id as the bundled recipes spell it (`resolve_weights` takes it with `hf://` or `hf-hub:` too);
    any other text as it is, so that no key of that spelling changes."""
    text = weights.strip()
    bare = text.removeprefix("hf-hub:").removeprefix("hf://")  # as `resolve_weights` reads it
    return bare if bare != text else weights

