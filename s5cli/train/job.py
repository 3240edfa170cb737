"""Build a training job from one Recipe: data, model, objective. Shared by pretrain/finetune."""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from typing import Any

from s5cli.errors import UserError


def recipe_objects(recipe_path: str, overrides: list[str] | None, seed: int | None, check_paths: bool = True):
    """Load + validate the recipe (before any work); `--seed` overrides train.seed.

    `check_paths` also checks that the recipe's videos and split files exist on this machine.
    """
    from s5cli.recipe import check_data_paths, load_recipe_spec

    extra = list(overrides or [])
    if seed is not None:
        from s5cli.seeding import check_seed

        check_seed(seed)  # named as typed (--seed), not as the train.seed override it becomes
        if not _seed_set_alike(extra, seed):  # `seed=0 --seed 0`: RUN/recipe.yaml's header listed both
            extra.append(f"train.seed={seed}")
    recipe = load_recipe_spec(recipe_path, extra)
    if check_paths:
        check_data_paths(recipe)
    return recipe


def _seed_set_alike(overrides: list[str], seed: int) -> bool:
    """Whether an override already sets train.seed to `seed`; UserError when one sets another value (the
    one given last won)."""
    from s5cli.recipe import parse_overrides, show_value

    alike = False
    for key, value in parse_overrides(overrides):
        if overrides_key(key, "train.seed"):
            if value != seed:
                raise UserError(f"--seed {seed} and the override {key}={show_value(value)} both set train.seed: "
                                "give one")
            alike = True
    return alike


def overrides_key(key: str, full: str, model_name: str = "s5") -> bool:
    """Whether an override's `key` as typed (`out_dir`, `train.out_dir`) sets the recipe key `full`.

    Why resolved: bare keys set the one section's key that has that name, and a check of the text alone
    missed `out_dir=runs/a`, so `s5 finetune RUN/recipe.yaml out_dir=runs/d --resume` trained RUN.
    """
    from s5cli.recipe import full_override_key

    return full_override_key({"model": {"name": model_name}}, key) == full


# What torch imports on first use once training runs: torch._dynamo when the first optimizer is built
# (`torch._compile` wraps Optimizer.add_param_group; with it sympy and triton, ~900 modules, seconds), the
# CUPTI monitor at the first optimizer step (`record_function`).
LAZY_TORCH_MODULES = ("torch._dynamo", "torch.profiler._cupti_monitor")


def import_lazy_torch_modules() -> None:
    """Import LAZY_TORCH_MODULES now, with Ctrl-C and SIGTERM deferred until they are in.

    Why: the CLI's SIGTERM handler raises `Terminated` wherever Python is, and raised while torch.optim
    imported torch._dynamo (triton's C++ extension loading) it aborted the process: exit 134, "terminate
    called after throwing an instance of 'nanobind::python_error'", instead of the clean stop with exit 143.
    A signal that comes meanwhile is raised as the imports end, where Python stops cleanly (a few seconds
    later). Call before the optimizer is built.
    """
    import contextlib
    import importlib

    from s5cli.signals_deferred import stop_signals_deferred

    with stop_signals_deferred():
        for name in LAZY_TORCH_MODULES:
            # Not in this torch version: torch imports what it needs where it did.
            with contextlib.suppress(ImportError):
                importlib.import_module(name)


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
