"""What a checkpoint says about itself: its model.safetensors metadata (format, model, recipe …) and the
task it was trained for."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors import safe_open

from s5cli.errors import UserError
from s5cli.train.checkpoint import FORMAT, MODEL_FILE
from s5cli.train.checkpoint_paths import checkpoint_dir


def read_metadata(path: str | Path) -> dict[str, str]:
    """Metadata of a checkpoint's model.safetensors (format, model_name, num_outputs, recipe …)."""
    file = checkpoint_dir(path) / MODEL_FILE
    try:  # safetensors reports a file it may not read as "No such file or directory"
        with open(file, "rb"):
            pass
    except OSError as error:
        raise UserError(f"{file}: cannot be read ({error.strerror}): check its permissions") from None
    try:
        with safe_open(str(file), framework="pt") as handle:
            meta = handle.metadata() or {}
    except Exception as exc:  # safetensors raises several error types for corrupt headers
        raise UserError(f"{file}: not a readable safetensors file ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise UserError(f"{file}: not an s5cli checkpoint (format {meta.get('format')!r}, expected {FORMAT})")
    return meta


def task_metadata(task: Any) -> str:
    """The task's metadata entry (JSON of kind, num_outputs and class names).

    Stored so that a checkpoint names its own classes: `s5 eval --video` on a downloaded checkpoint then
    needs neither the dataset's split files (LVU's class names live only there) nor the dataset itself.
    """
    return json.dumps({"kind": task.kind, "num_outputs": int(task.num_outputs), "class_names": task.class_names,
                       "target_offset": float(getattr(task, "target_offset", 0.0))})


def stored_task(meta: Mapping[str, str]) -> dict[str, Any] | None:
    """The task a checkpoint was trained for ({kind, num_outputs, class_names, target_offset}); None for
    checkpoints written before it was stored (2026-11-29) or whose entry is unreadable, so callers fall back
    to the recipe's. `target_offset` is None in checkpoints from before 2026-12-01, which did not store it."""
    try:
        task = json.loads(meta["task"])
    except (KeyError, ValueError):
        return None
    names = task.get("class_names") if isinstance(task, dict) else None
    valid = (isinstance(task, dict) and task.get("kind") in ("classification", "regression")
             and isinstance(task.get("num_outputs"), int)
             # A regression head has one output: a claim of 9 failed `eval --video` with a traceback.
             and (task["kind"] == "classification" or task["num_outputs"] == 1)
             and (names is None or (isinstance(names, list) and len(names) == task["num_outputs"]
                                    and all(isinstance(name, str) for name in names)))
             and isinstance(task.get("target_offset", 0.0), (int, float)))
    if not valid:
        return None
    if names is not None:  # printed by `eval --video`: an escape sequence in a name cleared the terminal
        task = {**task, "class_names": [_printable(name) for name in names]}
    return {**task, "target_offset": task.get("target_offset")}


def _printable(text: str) -> str:
    """`text` with control characters shown as escapes (\x1b), so printing it cannot drive the terminal."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
