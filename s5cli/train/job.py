"""Build a training job from one Recipe: data, model, objective, output folder. Shared by pretrain/finetune."""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from s5cli.errors import UserError
from s5cli.train.distributed import DistContext


def recipe_objects(recipe_path: str, overrides: list[str] | None, seed: int | None):
    """Load + validate the recipe (before any work); `--seed` overrides train.seed."""
    from s5cli.recipe import check_data_paths, load_recipe, resolve_recipe_spec

    extra = list(overrides or [])
    if seed is not None:
        extra.append(f"train.seed={seed}")
    recipe = load_recipe(resolve_recipe_spec(recipe_path), extra)
    check_data_paths(recipe)
    return recipe


def build_model_from_recipe(recipe: Any, num_outputs: int):
    """The video model named in recipe.model."""
    from s5cli.models.registry import build_model
    from s5cli.recipe import model_config

    return build_model(recipe.model.name, model_config(recipe), num_outputs)


def lsmcl_config(recipe: Any):
    """LSMCLConfig from train.lsmcl."""
    from s5cli.models.lsmcl import LSMCLConfig

    section = recipe.train.lsmcl
    values = asdict(section) if is_dataclass(section) else dict(section or {})
    return LSMCLConfig(**values)


def init_from_pretrained(model: Any, spec: str) -> str:
    """Load encoder weights from an LSMCL (or any s5cli) checkpoint, skipping the classification head."""
    from s5cli.train import checkpoint as ckpt

    if spec.startswith("hf://") or ("/" in spec and not Path(spec).exists() and not spec.startswith((".", "/"))):
        from s5cli.hub import resolve_checkpoint_dir

        spec = str(resolve_checkpoint_dir(spec))
    meta = ckpt.read_metadata(spec)
    state = ckpt.load_state(spec)
    if meta.get("objective") == "lsmcl":
        state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    own = model.state_dict()
    state = {k: v for k, v in state.items() if not (k.startswith("head.") and (k not in own or own[k].shape != v.shape))}
    missing = [k for k in own if k not in state and not k.startswith("head.")]
    if missing:
        raise UserError(
            f"train.init={spec}: checkpoint does not fit model {meta.get('model_name')!r} → recipe model; "
            f"missing {len(missing)} keys (e.g. {', '.join(missing[:3])})"
        )
    ckpt.load_into(model, state, f"train.init={spec}", strict=False)
    return spec


def out_dir_for(recipe: Any, out: Path | None) -> Path:
    """Run folder: --out, else train.out_dir."""
    return Path(out) if out is not None else Path(recipe.train.out_dir)


def remember_last_run(out_dir: Path, ctx: DistContext) -> None:
    """Note the run folder in ./.s5/last_run so visualize-mask / eval can find it without flags."""
    if not ctx.is_main:
        return
    from s5cli.io import atomic_write_text

    marker = Path(".s5") / "last_run"
    marker.parent.mkdir(exist_ok=True)
    atomic_write_text(marker, str(out_dir.resolve()) + "\n")


def last_run() -> Path | None:
    """The run folder of the last `s5 finetune` in this working directory, if it still exists."""
    marker = Path(".s5") / "last_run"
    if not marker.is_file():
        return None
    path = Path(marker.read_text().strip())
    return path if (path / "latest").is_file() else None
