"""What a local backbone weights file contributes to the token-cache key: its contents, not its path.

Why: the key hashed `data.backbone_weights` as typed, so the same path overwritten (a backbone finetuned
again) or `weights.safetensors` in another folder was taken for the old network, and its tokens reused.
Hashed once per process (memoised by path, size and mtime): every FeatureCache and saved video asks.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from typing import Any

from s5cli.errors import UserError


def local_weights_fingerprint(weights: str | None) -> dict[str, Any] | None:
    """What a local backbone weights file puts in the cache key: the sha256 of its contents and the mean/std
    of the config.json beside it (they normalise the frames); None without weights, for a Hub id, or for a
    file that is not there (building the backbone then says so)."""
    if not weights:
        return None
    from s5cli.models.backbone_weights import local_pretrained_cfg, local_weights_path

    path = local_weights_path(weights)
    if path is None or not path.is_file():
        return None
    try:
        stat = path.stat()
        digest = _file_sha256(os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    except OSError as error:  # no key without its contents: a guessed one could name another network's tokens
        raise UserError(f"data.backbone_weights={weights!r}: cannot read {path} ({error.strerror or error})",
                        hint="make the file readable, or point data.backbone_weights at a readable copy") from None
    return {"sha256": digest, **local_pretrained_cfg(path)}


HASH_NOTICE_SECONDS = 3.0  # reading weights for their hash longer than this says so, not to seem hung


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of the file `path`, read once per process while its size and mtime stay the same.

    Why memoised: every FeatureCache and every saved video asks for the key, and a ViT's weights are GBs.
    """
    from rich.markup import escape

    from s5cli.cli.console import stderr

    digest, started, told = hashlib.sha256(), time.monotonic(), False
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
            if not told and time.monotonic() - started > HASH_NOTICE_SECONDS:
                stderr.print(f"hashing backbone weights {escape(path)} ({size / 2**30:.1f} GiB) to name the token "
                             "cache folder (once per run)...")
                told = True
    return digest.hexdigest()
