"""The wheel ships every subpackage and the bundled recipes (packages are listed by hand in pyproject.toml)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    """pyproject.toml read; skips the calling test on Python 3.10 (no tomllib), not the whole module."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _listed_packages() -> set[str]:
    return set(_pyproject()["tool"]["setuptools"]["packages"])


def test_every_subpackage_is_listed_in_pyproject() -> None:
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "s5cli").rglob("__init__.py")
    }
    missing = on_disk - _listed_packages()
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"


def test_every_recipes_folder_ships_as_a_package_with_its_yaml() -> None:
    """recipes/ ships as `s5cli.recipes` through package-dir: a new recipes/<sub>/ folder missing from
    `packages` or `package-data` would silently not be in the wheel (the editable install CI runs reads the
    checkout's recipes/, so no other test would notice)."""
    folders = {path.parent for path in (ROOT / "recipes").rglob("*.yaml")}
    wanted = {".".join(("s5cli", "recipes", *folder.relative_to(ROOT / "recipes").parts)) for folder in folders}
    assert not wanted - _listed_packages(), f"add {sorted(wanted - _listed_packages())} to packages in pyproject.toml"
    data = _pyproject()["tool"]["setuptools"]["package-data"]
    missing = sorted(name for name in wanted if "*.yaml" not in data.get(name, []))
    assert not missing, f"add {missing} = [\"*.yaml\"] to [tool.setuptools.package-data] in pyproject.toml"


def test_bundled_recipes_resolve_by_name() -> None:
    from s5cli.recipe import bundled_recipes, resolve_recipe_spec

    names = bundled_recipes()
    assert {"synthetic", "breakfast", "coin", "pretrain-lsmcl", "lvu/genre"} <= set(names)
    assert Path(resolve_recipe_spec("synthetic")) == names["synthetic"]
    assert Path(resolve_recipe_spec("lvu/genre.yaml")) == names["lvu/genre"]
    assert resolve_recipe_spec("no-such-recipe") == "no-such-recipe"


def test_the_version_is_kept_in_one_place() -> None:
    """pyproject.toml and s5cli.__version__ each held "0.1.0": one release would have bumped one of them."""
    config = _pyproject()
    assert "version" not in config["project"] and "version" in config["project"]["dynamic"]
    assert config["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "s5cli.__version__"}


def test_the_sdist_carries_the_whole_test_tree_and_the_changelog() -> None:
    """setuptools' default sdist took 6 of the tests (no conftest.py) and no CHANGELOG.md."""
    rules = (ROOT / "MANIFEST.in").read_text().splitlines()
    assert {"include CHANGELOG.md", "graft tests", "graft benchmarks"} <= set(rules)
