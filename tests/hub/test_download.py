"""Recipes pulled from one commit, and hf:// recipe addresses reported with the commit they were fetched at."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from s5cli.hub import pull_recipes, resolve_recipe_path
from tests.hub.fake_hub import FakeHub


def _with_epochs(recipe: bytes, epochs: int) -> bytes:
    return re.sub(rb"epochs: \d+", f"epochs: {epochs}".encode(), recipe, count=1)


def test_pull_takes_every_listed_recipe_from_the_listed_commit(
    hub: FakeHub, recipe_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A push landing mid-pull gave a.yaml of one commit and b.yaml of the next."""
    from s5cli.hub import download

    v1, v2 = _with_epochs(recipe_file.read_bytes(), 3), _with_epochs(recipe_file.read_bytes(), 4)
    hub.commit("bob/r", {"a.yaml": v1, "b.yaml": v1})
    real = download.download_file
    calls: list[str] = []

    def push_lands_after_the_first_file(spec, filename):
        path = real(spec, filename)
        if not calls:
            hub.commit("bob/r", {"a.yaml": v2, "b.yaml": v2})
        calls.append(filename)
        return path

    monkeypatch.setattr(download, "download_file", push_lands_after_the_first_file)
    written = pull_recipes("bob/r", dest=tmp_path / "d")
    assert [p.read_bytes() for p in written] == [v1, v1]
    # The branch itself is still what a later pull (and offline use) follows.
    monkeypatch.setattr(download, "download_file", real)
    assert [p.read_bytes() for p in pull_recipes("bob/r", dest=tmp_path / "e")] == [v2, v2]


def test_show_names_an_hf_recipe_by_the_commit_it_was_fetched_at(hub: FakeHub, recipe_file: Path) -> None:
    from s5cli.cli.app import app
    from s5cli.hub.download import pinned_recipe_address

    sha = hub.commit("bob/r", {"synthetic.yaml": recipe_file.read_bytes()})
    result = CliRunner().invoke(app, ["recipes", "show", "hf://bob/r/synthetic.yaml"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert f"# Resolved s5cli recipe (from hf://bob/r@{sha}/synthetic.yaml)" in result.output
    resolve_recipe_path("hf://bob/r@main/synthetic.yaml")
    assert pinned_recipe_address("hf://bob/r@main/synthetic.yaml") == f"hf://bob/r@{sha}/synthetic.yaml"
    assert pinned_recipe_address("hf://bob/r/never-fetched.yaml") == "hf://bob/r/never-fetched.yaml"


def test_a_run_records_the_commit_of_its_hub_recipe(hub: FakeHub, recipe_file: Path, tmp_path: Path) -> None:
    """The run folder's recipe.yaml named the branch, so its "from" line followed every later push."""
    from s5cli.recipe import load_recipe_spec, save_recipe

    first = hub.commit("bob/r", {"synthetic.yaml": recipe_file.read_bytes()})
    save_recipe(load_recipe_spec("hf://bob/r/synthetic.yaml", ["train.epochs=2"]), tmp_path / "recipe.yaml")
    assert f"(from hf://bob/r@{first}/synthetic.yaml)\n# with overrides:\n#   train.epochs=2\n" in (
        tmp_path / "recipe.yaml").read_text()
    hub.commit("bob/r", {"synthetic.yaml": _with_epochs(recipe_file.read_bytes(), 7)})
    again = load_recipe_spec(f"hf://bob/r@{first}/synthetic.yaml")  # the recorded address reads the old one
    assert again.train.epochs != 7
