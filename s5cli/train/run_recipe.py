"""RUN/recipe.yaml: the run's recipe, located in its run folder, its header keeping the run's provenance
(source and overrides) across resumes."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def save_run_recipe(recipe: Any, out_dir: Path, resume: bool = False) -> None:
    """Write RUN/recipe.yaml with train.out_dir set to the run folder itself; with `resume`, its header keeps
    the run's own provenance (`_with_saved_provenance`).

    So `s5 finetune RUN/recipe.yaml --resume` continues that run, not the recipe's original folder. Only
    this file says where the run lives: the recipe inside its checkpoints keeps train.out_dir as given, so
    two runs of the same recipe and seed in different folders still write byte-identical checkpoints.
    """
    import copy

    from s5cli.recipe import save_recipe

    located = copy.deepcopy(recipe)
    located.train.out_dir = str(out_dir)
    if resume:
        _with_saved_provenance(located, out_dir / "recipe.yaml")
    save_recipe(located, out_dir / "recipe.yaml")


def _with_saved_provenance(recipe: Any, saved: Path) -> None:
    """Give `recipe` the source and overrides the header of `saved` lists, then its own new overrides.

    Why: `s5 finetune runs/s4/recipe.yaml --resume train.epochs=2` rewrote the header as "(from
    runs/s4/recipe.yaml)" with train.epochs=2 alone, and the run's real origin (its recipe file and the
    `model.name=s4` it was started with) was lost. Left as it is when `saved` has no header to read."""
    provenance = saved_provenance(saved)
    if provenance is None:
        return
    source, listed = provenance
    recipe.source = source or getattr(recipe, "source", None)
    # A new override is listed unless the last one listed for its key already says the same (an earlier
    # `key=5` followed by `key=10` reads as 10: resuming with `key=5` must list it again).
    last = {item.split("=", 1)[0]: item for item in listed}
    recipe.overrides = (*listed, *(item for item in getattr(recipe, "overrides", ())
                                   if last.get(item.split("=", 1)[0]) != item))


_HEADER = "# Resolved s5cli recipe"


def saved_provenance(path: Path) -> tuple[str | None, tuple[str, ...]] | None:
    """(source, overrides) from the header `recipe_header` wrote at the top of a saved recipe; None when the
    file cannot be read or has no such header (written by hand, or by an older s5cli)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    if not lines or not lines[0].startswith(_HEADER):
        return None
    rest = lines[0][len(_HEADER):]
    source = rest[len(" (from "):-1] if rest.startswith(" (from ") and rest.endswith(")") else None
    overrides: list[str] = []
    if len(lines) > 1 and lines[1] == "# with overrides:":
        for line in lines[2:]:
            if not line.startswith("#   "):
                break
            overrides.append(line[len("#   "):])
    return source, tuple(overrides)
