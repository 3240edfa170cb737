"""Hub addresses in forms other tools use: `hf://datasets/...` (HfFileSystem) and https://huggingface.co/... links."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from s5cli.cli.app import app
from s5cli.errors import UserError
from s5cli.hub.paths import HubSpec, parse_hub_spec
from s5cli.train.checkpoint_paths import checkpoint_dir
from tests.hub.fake_hub import FakeHub


def _lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


@pytest.mark.parametrize("spec", ["hf://datasets/alice/recipes", "hf://datasets/alice/recipes/x.yaml",
                                  "datasets/alice/recipes", "hf://spaces/alice/demo@main"])
def test_dataset_and_space_repos_are_named_as_such(spec: str) -> None:
    """`hf://datasets/alice/recipes` was read as the model repo `datasets/alice`: "not found (or private)"."""
    with pytest.raises(UserError) as error:
        parse_hub_spec(spec)
    message = str(error.value)
    kind = "a dataset" if "datasets/" in spec else "a Space"
    assert f"names {kind} repo" in message and "model repos only" in message and "hf://OWNER/NAME" in message
    assert "\n" not in message


def test_a_models_prefix_is_the_model_repo() -> None:
    assert parse_hub_spec("hf://models/alice/r@v1/x.yaml") == HubSpec("alice/r", "v1", "x.yaml")
    assert parse_hub_spec("models/alice/r") == HubSpec("alice/r")


def test_recipes_pull_of_a_dataset_address_is_one_line_and_asks_nothing(hub: FakeHub, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["recipes", "pull", "hf://datasets/alice/recipes", "--dest", str(tmp_path / "d")],
                                env={"COLUMNS": "400"})
    assert result.exit_code == 2, result.output
    lines = _lines(result.output)
    assert len(lines) == 1 and "model repos only" in lines[0] and "HF_TOKEN" not in lines[0], result.output
    assert hub.requests == []


@pytest.mark.parametrize(("url", "address"), [
    ("https://huggingface.co/alice/s5-synth", "hf://alice/s5-synth"),
    ("https://huggingface.co/alice/s5-synth/", "hf://alice/s5-synth"),
    ("http://hf.co/alice/s5-synth", "hf://alice/s5-synth"),
    ("https://huggingface.co/models/alice/s5-synth", "hf://alice/s5-synth"),
    ("https://huggingface.co/alice/s5-synth/tree/v2/run", "hf://alice/s5-synth@v2/run"),
    ("https://huggingface.co/alice/s5-synth/blob/main/recipe.yaml", "hf://alice/s5-synth@main/recipe.yaml"),
    ("https://huggingface.co/alice/s5-synth/resolve/refs%2Fpr%2F1/best/model.safetensors",
     "hf://alice/s5-synth@refs%2Fpr%2F1/best/model.safetensors"),
    ("https://huggingface.co/alice/x/raw/main/a.yaml", "hf://alice/x@main/a.yaml"),
    ("https://huggingface.co/alice/x/commits/v2", "hf://alice/x@v2"),
    ("https://huggingface.co/alice/x/commits/main/lvu/a.yaml", "hf://alice/x@main/lvu/a.yaml"),
    ("https://huggingface.co/alice/x/edit/main/a.yaml", "hf://alice/x@main/a.yaml"),
    ("https://huggingface.co/alice/x/commit/0123abc", "hf://alice/x@0123abc"),
    ("https://huggingface.co/alice/x/commit/0123abc#diff", "hf://alice/x@0123abc"),
    ("https://huggingface.co/alice/x/resolve/main", "hf://alice/x@main"),
    ("https://huggingface.co/alice/x/tree", "hf://alice/x"),
    ("https://huggingface.co/alice/x/discussions/3", "hf://alice/x"),
    ("https://huggingface.co/alice/x/settings", "hf://alice/x"),
    ("https://huggingface.co/datasets/alice/recipes", None),
    ("https://huggingface.co/alice", None),
    ("https://example.com/alice/s5-synth", None),
])
def test_a_hub_link_maps_to_its_hf_address(url: str, address: str | None) -> None:
    """Only the file and history routes carry a revision and path; `discussions/3` or `settings` became a
    path in the repo (`hf://alice/x/discussions/3`), and `raw/main/a.yaml` the path `raw/main/a.yaml`."""
    from s5cli.hub.paths import hub_address_of_url

    assert hub_address_of_url(url) == address


def test_eval_of_a_hub_link_names_it_as_typed_and_suggests_the_address() -> None:
    """It said "checkpoint https:/huggingface.co/alice/s5-synth does not exist" (one slash: Path folded it)."""
    result = CliRunner().invoke(app, ["eval", "-c", "https://huggingface.co/alice/s5-synth"], env={"COLUMNS": "400"})
    assert result.exit_code == 2, result.output
    lines = _lines(result.output)
    assert len(lines) == 1, result.output
    assert "https://huggingface.co/alice/s5-synth is a web address" in lines[0]
    assert "hf://alice/s5-synth" in lines[0] and "https:/h" not in lines[0]


def test_a_link_that_is_no_hub_repo_suggests_the_form_without_inventing_one() -> None:
    with pytest.raises(UserError) as error:
        checkpoint_dir("https://example.com/x")
    message = str(error.value)
    assert "https://example.com/x is a web address" in message and "hf://OWNER/NAME" in message


def test_pull_of_a_hub_link_suggests_the_address() -> None:
    with pytest.raises(UserError) as error:
        parse_hub_spec("https://huggingface.co/alice/recipes/blob/main/genre.yaml")
    assert "use hf://alice/recipes@main/genre.yaml" in str(error.value)


def test_push_of_a_hub_link_says_to_download_it_first() -> None:
    """The checkpoint error suggested `hf://bob/model`, which push refuses as well: say what push needs."""
    result = CliRunner().invoke(app, ["push", "https://huggingface.co/bob/model/tree/v1/best", "erin/x"],
                                env={"COLUMNS": "400"})
    assert result.exit_code == 2, result.output
    lines = _lines(result.output)
    assert len(lines) == 1 and "takes a local checkpoint or run folder" in lines[0], result.output
    assert "hf download bob/model --revision v1 --include 'best/*' --local-dir DIR" in lines[0]
