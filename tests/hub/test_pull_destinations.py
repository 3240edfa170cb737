"""`s5 recipes pull` into a --dest that already holds things: nothing is written unless every file can be,
and the user's own links are written through (as `s5 recipes cp` does), while remote names still cannot
escape --dest."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from s5cli.cli.app import app
from s5cli.errors import UserError
from s5cli.hub import pull_recipes
from tests.hub.fake_hub import FakeHub


def _pull(*args: str):
    return CliRunner().invoke(app, ["recipes", "pull", *args], env={"COLUMNS": "400"})


def _lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def _tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


@pytest.mark.parametrize("force", [False, True])
def test_a_file_in_the_way_of_a_later_recipe_writes_nothing(
    hub: FakeHub, recipe_file: Path, tmp_path: Path, force: bool
) -> None:
    """d5/z was a file: a.yaml was written, then z/x.yaml failed, and a rerun said a.yaml exists."""
    hub.commit("carol/two", {"a.yaml": recipe_file.read_bytes(), "z/x.yaml": recipe_file.read_bytes()})
    dest = tmp_path / "d5"
    dest.mkdir()
    (dest / "z").write_text("notes\n")
    result = _pull("carol/two", "--dest", str(dest), *(["--force"] if force else []))
    assert result.exit_code == 2, result.output
    lines = _lines(result.output)
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert f"{dest / 'z'} is a file, not a folder" in lines[0] and "z/x.yaml" in lines[0]
    assert _tree(dest) == ["z"] and (dest / "z").read_text() == "notes\n"


def test_a_folder_where_a_recipe_goes_writes_nothing_even_with_force(
    hub: FakeHub, recipe_file: Path, tmp_path: Path
) -> None:
    hub.commit("carol/two", {"a.yaml": recipe_file.read_bytes(), "b.yaml": recipe_file.read_bytes()})
    dest = tmp_path / "d"
    (dest / "b.yaml").mkdir(parents=True)
    with pytest.raises(UserError) as error:
        pull_recipes("carol/two", dest=dest, force=True)
    assert f"{dest / 'b.yaml'} is a folder" in str(error.value) and "\n" not in str(error.value)
    assert _tree(dest) == ["b.yaml"]


def test_a_failed_write_leaves_no_recipe_behind(
    hub: FakeHub, recipe_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All files are written to temporary files first and renamed only when every one was written."""
    from pathlib import Path as RealPath

    hub.commit("carol/two", {"a.yaml": recipe_file.read_bytes(), "b.yaml": recipe_file.read_bytes()})
    dest = tmp_path / "d"
    real = RealPath.write_bytes

    def disk_full_on_b(self: Path, data: bytes) -> int:
        if ".b." in self.name:
            raise OSError(28, "No space left on device", str(self))
        return real(self, data)

    monkeypatch.setattr(RealPath, "write_bytes", disk_full_on_b)
    with pytest.raises(OSError, match="No space left"):
        pull_recipes("carol/two", dest=dest)
    assert not dest.exists()  # no recipe, no temporary file, not even the folder the pull made


def test_force_writes_through_the_users_own_link_as_recipes_cp_does(
    hub: FakeHub, recipe_file: Path, tmp_path: Path
) -> None:
    """A destination file that is a link to a file elsewhere was refused as "resolves outside d6"."""
    hub.commit("carol/r", {"synthetic.yaml": recipe_file.read_bytes()})
    mine = tmp_path / "elsewhere" / "mine.yaml"
    mine.parent.mkdir()
    mine.write_text("old\n")
    dest = tmp_path / "d6"
    dest.mkdir()
    (dest / "synthetic.yaml").symlink_to(mine)
    refused = _pull("carol/r", "--dest", str(dest))
    assert refused.exit_code == 2 and "already exists" in refused.output and "--force" in refused.output
    assert mine.read_text() == "old\n"
    result = _pull("carol/r", "--dest", str(dest), "--force")
    assert result.exit_code == 0, result.output
    assert (dest / "synthetic.yaml").is_symlink() and mine.read_bytes() == recipe_file.read_bytes()


def test_a_dangling_link_is_in_the_way_without_force(hub: FakeHub, recipe_file: Path, tmp_path: Path) -> None:
    """A link to nothing was "not there", so a pull without --force created the file it named, wherever."""
    hub.commit("carol/r", {"synthetic.yaml": recipe_file.read_bytes()})
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "synthetic.yaml").symlink_to(tmp_path / "elsewhere.yaml")
    with pytest.raises(UserError, match=r"synthetic.yaml is a link to nothing: pass --force to write through it"):
        pull_recipes("carol/r", dest=dest)
    assert not (tmp_path / "elsewhere.yaml").exists()


def test_a_linked_folder_leading_out_of_dest_is_still_refused(
    hub: FakeHub, recipe_file: Path, tmp_path: Path
) -> None:
    hub.commit("carol/r", {"lvu/genre.yaml": recipe_file.read_bytes()})
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "lvu").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UserError, match="resolves outside"):
        pull_recipes("carol/r", dest=dest, force=True)
    assert list(outside.iterdir()) == []
