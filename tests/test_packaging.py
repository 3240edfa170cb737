"""The wheel ships every subpackage and the bundled recipes (packages are listed by hand in pyproject.toml)."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


def _listed_packages() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return set(config["tool"]["setuptools"]["packages"])


def test_every_subpackage_is_listed_in_pyproject() -> None:
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "s5cli").rglob("__init__.py")
    }
    missing = on_disk - _listed_packages()
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"


def test_bundled_recipes_resolve_by_name() -> None:
    from s5cli.recipe import bundled_recipes, resolve_recipe_spec

    names = bundled_recipes()
    assert {"synthetic", "breakfast", "coin", "pretrain-lsmcl", "lvu/genre"} <= set(names)
    assert Path(resolve_recipe_spec("synthetic")) == names["synthetic"]
    assert Path(resolve_recipe_spec("lvu/genre.yaml")) == names["lvu/genre"]
    assert resolve_recipe_spec("no-such-recipe") == "no-such-recipe"


def test_the_version_is_kept_in_one_place() -> None:
    """pyproject.toml and s5cli.__version__ each held "0.1.0": one release would have bumped one of them."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in config["project"] and "version" in config["project"]["dynamic"]
    assert config["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "s5cli.__version__"}


def test_the_sdist_carries_the_whole_test_tree_and_the_changelog() -> None:
    """setuptools' default sdist took 6 of the tests (no conftest.py) and no CHANGELOG.md."""
    rules = (ROOT / "MANIFEST.in").read_text().splitlines()
    assert {"include CHANGELOG.md", "graft tests", "graft benchmarks"} <= set(rules)
