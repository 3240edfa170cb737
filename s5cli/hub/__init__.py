"""Hugging Face Hub: pull and push recipes and checkpoints (`hf://OWNER/NAME[@REV][/path]`).

huggingface_hub is imported inside the functions, so importing this package costs nothing.
"""

from __future__ import annotations

from s5cli.hub.checkpoints import resolve_checkpoint_dir
from s5cli.hub.download import pull_recipes, resolve_recipe_path
from s5cli.hub.paths import HubSpec, looks_like_hub_spec, parse_hub_spec
from s5cli.hub.upload import PushResult, push_checkpoint, push_recipe

__all__ = [
    "HubSpec", "PushResult", "looks_like_hub_spec", "parse_hub_spec", "pull_recipes", "push_checkpoint",
    "push_recipe", "resolve_checkpoint_dir", "resolve_recipe_path",
]
