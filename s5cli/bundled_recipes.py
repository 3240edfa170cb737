"""Where the bundled recipes are: the recipes that ship with s5cli, by name."""

from __future__ import annotations

from pathlib import Path


def bundled_recipes_dir() -> Path:
    """Folder of the recipes that ship with s5cli (package data `s5cli.recipes`, or the checkout's recipes/)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("s5cli.recipes")
    except ModuleNotFoundError:
        spec = None
    # submodule_search_locations works for a regular and a namespace package (no __init__.py in recipes/).
    locations = list(spec.submodule_search_locations or ()) if spec is not None else []
    for location in locations:
        if Path(location).is_dir():
            return Path(location)
    return Path(__file__).resolve().parent.parent / "recipes"


def bundled_recipes() -> dict[str, Path]:
    """Name (e.g. 'synthetic', 'lvu/genre') -> path of every bundled recipe, sorted by name."""
    folder = bundled_recipes_dir()
    found = {p.relative_to(folder).with_suffix("").as_posix(): p for p in folder.rglob("*.yaml")}
    return dict(sorted(found.items()))
