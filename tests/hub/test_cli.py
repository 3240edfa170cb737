"""`s5 push`, `s5 recipes push|pull` through the real CLI against the fake Hub (exit 2 + one line on mistakes)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from s5cli.cli.app import app
from tests.hub.fake_hub import FakeHub

# huggingface_hub's LFS upload passes a file object as `data=`, which httpx2 flags as deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def test_recipes_push_then_pull(runner: CliRunner, hub: FakeHub, recipe_file: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["recipes", "push", str(recipe_file), "carol/recipes", "--private",
                                 "--message", "add synthetic"])
    assert result.exit_code == 0, result.output
    assert hub.repos["carol/recipes"].private
    assert f"{hub.url}/carol/recipes/commit/" in result.output

    dest = tmp_path / "pulled"
    result = runner.invoke(app, ["recipes", "pull", "carol/recipes", "--dest", str(dest)])
    assert result.exit_code == 0, result.output
    assert (dest / "synthetic.yaml").read_bytes() == recipe_file.read_bytes()

    result = runner.invoke(app, ["recipes", "pull", "carol/recipes", "synthetic", "--dest", str(dest)])
    assert result.exit_code == 2
    lines = _lines(result.output)
    assert len(lines) == 1 and "already exists" in lines[0] and "--force" in lines[0]
    result = runner.invoke(app, ["recipes", "pull", "carol/recipes", "synthetic", "--dest", str(dest), "--force"])
    assert result.exit_code == 0, result.output


def test_push_checkpoint_cli(runner: CliRunner, hub: FakeHub, run_dir: Path) -> None:
    """A run folder with --with-optimizer pushes its latest step checkpoint (best/ has no trainer state)."""
    result = runner.invoke(app, ["push", str(run_dir), "carol/s5-tiny", "--with-optimizer", "-m", "tiny run"],
                           env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    files = hub.files("carol/s5-tiny")
    assert {"model.safetensors", "trainer_state.safetensors", "trainer_state.json", "metrics.json", "recipe.yaml",
            "README.md"} <= set(files)
    step_dir = run_dir / "checkpoints" / "step-0000007"
    assert files["trainer_state.json"] == (step_dir / "trainer_state.json").read_bytes()
    assert f"pushed the latest step checkpoint {step_dir}" in " ".join(result.output.split())


def test_push_with_optimizer_without_step_checkpoints_is_one_line(
    runner: CliRunner, hub: FakeHub, run_dir: Path
) -> None:
    import shutil

    shutil.rmtree(run_dir / "checkpoints")
    result = runner.invoke(app, ["push", str(run_dir), "carol/x", "--with-optimizer"], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    lines = _lines(result.output)
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert "no step checkpoint" in lines[0] and "without --with-optimizer" in lines[0], result.output
    assert hub.repos == {}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["recipes", "pull", "nobody/missing"], "nobody/missing not found"),
        (["recipes", "pull", "dave/r", "--revision", "nope"], "revision 'nope' not found"),
        (["push", "{tmp}/nothing-here", "dave/c"], "does not exist"),
        (["push", "{run}", "not a repo"], "not a Hub repo id"),
        (["recipes", "push", "{tmp}/missing.yaml", "dave/r"], "not found"),
    ],
)
def test_user_errors_are_one_line_exit_2(
    runner: CliRunner, hub: FakeHub, recipe_file: Path, run_dir: Path, tmp_path: Path, args: list[str],
    expected: str,
) -> None:
    hub.commit("dave/r", {"synthetic.yaml": recipe_file.read_bytes()})
    args = [a.format(tmp=tmp_path, run=run_dir) for a in args]
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 2, result.output
    lines = _lines(result.output)
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], result.output


def test_push_without_token_cli(runner: CliRunner, hub: FakeHub, run_dir: Path, monkeypatch) -> None:
    monkeypatch.delenv("HF_TOKEN")
    result = runner.invoke(app, ["push", str(run_dir), "carol/x"])
    assert result.exit_code == 2
    lines = _lines(result.output)
    assert len(lines) == 1 and "HF_TOKEN" in lines[0]
    assert hub.repos == {}


@pytest.mark.parametrize("command", [["push"], ["recipes", "push"], ["recipes", "pull"]])
def test_help_renders(runner: CliRunner, command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "REPO_ID" in result.output.upper()


def test_the_recipe_hub_section_is_the_default_target(
    runner: CliRunner, hub: FakeHub, recipe_file: Path, run_dir: Path
) -> None:
    """`hub.repo_id` / `hub.revision` name where a recipe (or a model trained with it) goes when no repo is given."""
    recipe_file.write_text(recipe_file.read_text().replace("repo_id: null", "repo_id: erin/recipes")
                           .replace("revision: null", "revision: drafts"))
    result = runner.invoke(app, ["recipes", "push", str(recipe_file)])
    assert result.exit_code == 0, result.output
    assert "synthetic.yaml" in hub.files("erin/recipes", revision="drafts")
    # The bundled synthetic recipe sets no repo; a bundled name is accepted, so the message is about the repo.
    result = runner.invoke(app, ["recipes", "push", "synthetic"])
    assert result.exit_code == 2 and "sets no hub.repo_id" in result.output
    result = runner.invoke(app, ["push", str(run_dir)])
    assert result.exit_code == 2 and "sets no hub.repo_id: pass OWNER/NAME" in result.output
    # hf://OWNER/NAME, the form pull and eval take, works for push too; the output names what was pushed.
    result = runner.invoke(app, ["push", str(run_dir), "hf://erin/model"])
    assert result.exit_code == 0, result.output
    assert f"pushed {run_dir / 'best'}" in " ".join(result.output.split())
    assert "model.safetensors" in hub.files("erin/model")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["push", "hf://bob/model", "erin/x"],
         "s5 push takes a local checkpoint or run folder, not hf://bob/model: download it first "
         "(hf download bob/model --local-dir DIR), then push DIR"),
        (["recipes", "push", "hf://alice/recipes/recipe.yaml", "carol/x"],
         "s5 recipes push takes a local recipe file, not hf://alice/recipes/recipe.yaml: download it first "
         "(s5 recipes pull hf://alice/recipes/recipe.yaml --dest DIR), then push DIR/recipe.yaml"),
    ],
)
def test_push_of_a_hub_address_says_to_download_it_first(
    runner: CliRunner, hub: FakeHub, args: list[str], expected: str
) -> None:
    """The address was printed with one slash dropped ("checkpoint hf:/bob/model does not exist")."""
    result = runner.invoke(app, args, env={"COLUMNS": "400"}, catch_exceptions=False)
    assert result.exit_code == 2, result.output
    lines = _lines(result.output)
    assert len(lines) == 1 and lines[0] == f"error: {expected}", result.output
    assert hub.requests == []


def test_a_recipe_named_like_a_repo_id_suggests_its_hub_address(runner: CliRunner, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """`s5 recipes show alice/recipes` said only "not found"; checkpoints named so suggest hf://alice/recipes."""
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["recipes", "show", "alice/recipes"], env={"COLUMNS": "400"})
    assert result.exit_code == 2, result.output
    lines = _lines(result.output)
    assert len(lines) == 1 and "recipe alice/recipes not found" in lines[0], result.output
    assert "hf://alice/recipes" in lines[0], result.output
    result = runner.invoke(app, ["recipes", "show", "alice/recipes.yaml"], env={"COLUMNS": "400"})
    assert result.exit_code == 2 and "hf://" not in result.output  # a file name, not a repo
