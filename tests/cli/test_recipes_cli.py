"""`s5 recipes ls|show|cp` and bad recipes through the real CLI (one red line, exit code 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from s5cli.cli.app import app
from s5cli.recipe import load_recipe

REPO = Path(__file__).resolve().parents[2]
SYNTHETIC = REPO / "recipes" / "synthetic.yaml"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_ls_lists_every_bundled_recipe(runner: CliRunner) -> None:
    result = runner.invoke(app, ["recipes", "ls"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in ("synthetic", "breakfast", "coin", "pretrain-lsmcl", "lvu/relationship", "lvu/view_count"):
        assert name in result.output
    assert "S5 on the bundled synthetic" in result.output  # description from the top comment
    assert "LSMCL" in result.output


def test_show_prints_the_resolved_recipe_that_loads_back_the_same(runner: CliRunner, tmp_path: Path) -> None:
    from s5cli.recipe import recipe_to_dict

    result = runner.invoke(app, ["recipes", "show", "synthetic", "train.accumulate=2", "optim.lr=3e-4"])
    assert result.exit_code == 0, result.output
    shown = tmp_path / "shown.yaml"
    shown.write_text(result.stdout)
    expected = recipe_to_dict(load_recipe(SYNTHETIC, ["train.accumulate=2", "optim.lr=3e-4"]))
    assert recipe_to_dict(load_recipe(shown)) == expected  # every default filled in: the file stands alone
    assert expected["train"]["accumulate"] == 2 and expected["optim"]["lr"] == 3e-4


def test_show_validates_and_warns_about_data_that_is_not_here(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["recipes", "show", "synthetic", "train.bogus=1"])
    assert result.exit_code == 2 and "unknown key train.bogus" in result.output
    result = runner.invoke(app, ["recipes", "show", "lvu/genre", f"data.root={tmp_path / 'absent'}"])
    assert result.exit_code == 0, result.output
    assert "dataset: lvu" in result.stdout and "a run would stop here" in result.output


def test_cp_copies_and_refuses_to_overwrite(runner: CliRunner, tmp_path: Path) -> None:
    dest = tmp_path / "mine.yaml"
    result = runner.invoke(app, ["recipes", "cp", "synthetic", str(dest)])
    assert result.exit_code == 0, result.output
    assert dest.read_bytes() == SYNTHETIC.read_bytes()
    dest.write_text("# edited\n")
    result = runner.invoke(app, ["recipes", "cp", "synthetic", str(dest)])
    assert result.exit_code == 2 and "--force" in result.output
    assert dest.read_text() == "# edited\n"
    result = runner.invoke(app, ["recipes", "cp", "synthetic", str(dest), "--force"])
    assert result.exit_code == 0 and dest.read_bytes() == SYNTHETIC.read_bytes()


def test_cp_into_a_folder_and_unknown_names(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["recipes", "cp", "lvu/genre", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert load_recipe(tmp_path / "genre.yaml").data.task == "genre"
    result = runner.invoke(app, ["recipes", "cp", "synthetc", str(tmp_path)])
    assert result.exit_code == 2 and "did you mean 'synthetic'" in result.output


BAD = {
    "unknown key": ("optim:\n  lrr: 0.1\n", (), "did you mean optim.lr?"),
    "wrong type": ("train:\n  epochs: ten\n", (), "train.epochs='ten'"),
    "keep_ratio 0": ("model:\n  keep_ratio: 0\n", (), "model.keep_ratio=0"),
    "keep_ratio 1.5": ("model:\n  keep_ratio: 0.5\n", ("model.keep_ratio=1.5",), "model.keep_ratio=1.5"),
    "missing data root": ("data:\n  dataset: coin\n  root: /no/such/folder\n", (), "data.root='/no/such/folder'"),
    "yaml syntax": ("data:\n  frames: [8\n", (), "YAML syntax error at line"),
    "list": ("- data\n- model\n", (), "holds a list"),
    "empty": ("", (), "is empty"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_recipes_give_one_line_and_exit_2(runner: CliRunner, tmp_path: Path, case: str) -> None:
    text, overrides, expected = BAD[case]
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    out = tmp_path / "run"
    result = runner.invoke(app, ["finetune", str(path), *overrides, "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert expected in result.output and "Traceback" not in result.output
    assert not out.exists()  # nothing was started


def test_cp_destinations_that_are_not_what_they_seem(runner: CliRunner, tmp_path: Path) -> None:
    """DIR/ that does not exist once became a file named DIR; a file as the folder, or a folder where the
    file would go, are named as such (not as a missing folder or a temporary file's error)."""
    result = runner.invoke(app, ["recipes", "cp", "synthetic", f"{tmp_path / 'new'}/"])
    assert result.exit_code == 2 and f"folder {tmp_path / 'new'} does not exist" in result.output
    assert not (tmp_path / "new").exists()
    (tmp_path / "afile").write_text("x")
    result = runner.invoke(app, ["recipes", "cp", "synthetic", str(tmp_path / "afile" / "x.yaml")])
    assert result.exit_code == 2 and "afile is a file, not a folder" in result.output
    (tmp_path / "d" / "synthetic.yaml").mkdir(parents=True)
    result = runner.invoke(app, ["recipes", "cp", "synthetic", str(tmp_path / "d"), "--force"])
    assert result.exit_code == 2 and "synthetic.yaml is a folder" in result.output
    (tmp_path / "e").mkdir()
    result = runner.invoke(app, ["recipes", "cp", "synthetic", f"{tmp_path / 'e'}/"])
    assert result.exit_code == 0 and (tmp_path / "e" / "synthetic.yaml").is_file()
