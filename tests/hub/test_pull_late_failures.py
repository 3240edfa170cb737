"""`s5 recipes pull` stays all-or-nothing when it fails late: at the flush to disk, at the rename into place,
and it takes away the folders it made for a pull that failed."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from s5cli.hub import pull_recipes
from tests.hub.fake_hub import FakeHub

# Where the fsync fault finds the file a descriptor belongs to.
needs_proc = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc/self/fd")


def _tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def _two_recipes(hub: FakeHub, recipe_file: Path, first: str = "a.yaml", second: str = "b.yaml") -> bytes:
    data = recipe_file.read_bytes()
    hub.commit("carol/two", {first: data, second: data})
    return data


def _fail_fsync_of_temp(monkeypatch: pytest.MonkeyPatch, stem: str) -> None:
    """os.fsync fails (ENOSPC, as NFS or a quota reports a full disk at the flush) for the temp file of `stem`."""
    real = os.fsync

    def fsync(fd: int) -> None:
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(f".{stem}."):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def _is_temp_of(temp: str, name: str) -> bool:
    return temp.startswith(f".{Path(name).stem}.") and ".tmp" in temp


def _fail_rename_onto(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """os.replace fails (EIO) when a temp file is renamed onto `name`; other renames (rollback) work."""
    real = os.replace

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if Path(dst).name == name and _is_temp_of(Path(src).name, name):
            raise OSError(errno.EIO, "Input/output error", str(src))
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)


@needs_proc
@pytest.mark.parametrize("stem", ["a", "b"])
def test_a_failed_flush_to_disk_writes_nothing(
    hub: FakeHub, recipe_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stem: str
) -> None:
    """The flush and rename ran per file, last file first: b.yaml was in place before a.yaml's flush failed."""
    _two_recipes(hub, recipe_file)
    dest = tmp_path / "d"
    dest.mkdir()
    _fail_fsync_of_temp(monkeypatch, stem)
    with pytest.raises(OSError, match="No space left") as error:
        pull_recipes("carol/two", dest=dest)
    assert error.value.filename == str(dest / f"{stem}.yaml")  # the recipe, not the hidden temp file
    assert _tree(dest) == []


@pytest.mark.parametrize("name", ["a.yaml", "b.yaml"])
def test_a_failed_rename_puts_back_what_was_renamed(
    hub: FakeHub, recipe_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    _two_recipes(hub, recipe_file)
    dest = tmp_path / "d"
    dest.mkdir()
    _fail_rename_onto(monkeypatch, name)
    with pytest.raises(OSError, match="Input/output error") as error:
        pull_recipes("carol/two", dest=dest)
    assert error.value.filename == str(dest / name)
    assert _tree(dest) == []


@pytest.mark.parametrize("name", ["a.yaml", "b.yaml"])
def test_a_failed_rename_with_force_leaves_the_old_files(
    hub: FakeHub, recipe_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """The files a forced pull had already replaced get their old content back (same file: kept by a hard link)."""
    _two_recipes(hub, recipe_file)
    dest = tmp_path / "d"
    dest.mkdir()
    for old in ("a.yaml", "b.yaml"):
        (dest / old).write_text(f"old {old}\n")
    inode = (dest / "a.yaml").stat().st_ino
    _fail_rename_onto(monkeypatch, name)
    with pytest.raises(OSError, match="Input/output error"):
        pull_recipes("carol/two", dest=dest, force=True)
    assert _tree(dest) == ["a.yaml", "b.yaml"]
    assert [(dest / old).read_text() for old in ("a.yaml", "b.yaml")] == ["old a.yaml\n", "old b.yaml\n"]
    assert (dest / "a.yaml").stat().st_ino == inode


def test_without_hard_links_a_replaced_file_is_kept_as_a_copy(
    hub: FakeHub, recipe_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Where the folder takes no hard link (FAT/exFAT, some network mounts) the old a.yaml is kept as a copy
    and put back: only a hard link was tried, and the old content was lost."""
    _two_recipes(hub, recipe_file)
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "a.yaml").write_text("old\n")

    def no_links(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    _fail_rename_onto(monkeypatch, "b.yaml")
    with pytest.raises(OSError, match="Input/output error"):
        pull_recipes("carol/two", dest=dest, force=True)
    assert _tree(dest) == ["a.yaml"] and (dest / "a.yaml").read_text() == "old\n"
    assert "could not undo" not in capsys.readouterr().err


def test_a_replaced_file_that_cannot_be_kept_at_all_is_named_as_lost(
    hub: FakeHub, recipe_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Neither a hard link nor a copy can be made: the warning names the file and says its old content is lost."""
    import shutil

    data = _two_recipes(hub, recipe_file)
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "a.yaml").write_text("old\n")

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", refuse)
    monkeypatch.setattr(shutil, "copy2", refuse)
    _fail_rename_onto(monkeypatch, "b.yaml")
    with pytest.raises(OSError, match="Input/output error"):
        pull_recipes("carol/two", dest=dest, force=True)
    assert _tree(dest) == ["a.yaml"] and (dest / "a.yaml").read_bytes() == data
    err = " ".join(capsys.readouterr().err.split())
    assert f"could not undo 1 file(s) it had replaced: {dest / 'a.yaml'} (its old content is lost)" in err


def test_a_forced_pull_that_succeeds_leaves_no_backup(hub: FakeHub, recipe_file: Path, tmp_path: Path) -> None:
    data = _two_recipes(hub, recipe_file)
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "a.yaml").write_text("old\n")
    pull_recipes("carol/two", dest=dest, force=True)
    assert _tree(dest) == ["a.yaml", "b.yaml"] and (dest / "a.yaml").read_bytes() == data


def test_a_failed_pull_takes_away_the_folders_it_made(
    hub: FakeHub, recipe_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk on z.yaml left d/, d/lvu and d/lvu/deep behind, empty."""
    from pathlib import Path as RealPath

    _two_recipes(hub, recipe_file, "lvu/deep/a.yaml", "z.yaml")
    outer = tmp_path / "outer"
    outer.mkdir()
    dest = outer / "d"
    real = RealPath.write_bytes

    def disk_full_on_z(self: Path, data: bytes) -> int:
        if self.name.startswith(".z."):
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, data)

    monkeypatch.setattr(RealPath, "write_bytes", disk_full_on_z)
    with pytest.raises(OSError, match="No space left"):
        pull_recipes("carol/two", dest=dest)
    assert _tree(outer) == []


def test_a_failed_pull_keeps_folders_that_were_there(
    hub: FakeHub, recipe_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the folders this pull made go; the user's own (even empty) stay."""
    _two_recipes(hub, recipe_file, "lvu/deep/a.yaml", "lvu/z.yaml")
    dest = tmp_path / "d"
    (dest / "lvu").mkdir(parents=True)
    _fail_rename_onto(monkeypatch, "z.yaml")
    with pytest.raises(OSError, match="Input/output error"):
        pull_recipes("carol/two", dest=dest)
    assert _tree(dest) == ["lvu"]


def test_a_pipe_where_a_recipe_goes_is_refused_before_anything_is_written(
    hub: FakeHub, recipe_file: Path, tmp_path: Path
) -> None:
    from s5cli.errors import UserError

    _two_recipes(hub, recipe_file)
    dest = tmp_path / "d"
    dest.mkdir()
    os.mkfifo(dest / "b.yaml")
    with pytest.raises(UserError) as error:
        pull_recipes("carol/two", dest=dest, force=True)
    assert str(dest / "b.yaml") in str(error.value) and "\n" not in str(error.value)
    assert _tree(dest) == ["b.yaml"]
