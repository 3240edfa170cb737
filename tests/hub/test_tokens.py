"""A Hub token that cannot be sent (non-ASCII, spaces, control characters): one line naming where it came from, never the token."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from s5cli.cli.app import app
from s5cli.errors import UserError
from s5cli.hub import pull_recipes, push_checkpoint
from tests.hub.fake_hub import FakeHub

# huggingface_hub's LFS upload passes a file object as `data=`, which httpx2 flags as deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")

BAD = "hf_LEAKMEé"


def _lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def test_a_non_ascii_hf_token_is_one_line_for_pull_push_and_eval(
    hub: FakeHub, recipe_file: Path, run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It gave an 87-line UnicodeEncodeError traceback (exit 1) from the HTTP client."""
    hub.commit("alice/r", {"synthetic.yaml": recipe_file.read_bytes()})
    push_checkpoint(run_dir, "alice/ckpt")
    seen = len(hub.requests)
    monkeypatch.setenv("HF_TOKEN", BAD)
    for args in (["recipes", "pull", "alice/r", "--dest", str(tmp_path / "d")],
                 ["recipes", "push", str(recipe_file), "alice/new"],
                 ["push", str(run_dir), "alice/new"],
                 ["eval", "-c", "hf://alice/ckpt"]):
        result = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
        assert result.exit_code == 2, (args, result.output)
        lines = _lines(result.output)
        assert len(lines) == 1 and lines[0].startswith("error:"), (args, result.output)
        assert "HF_TOKEN holds characters a Hub token cannot have" in lines[0] and "set it again" in lines[0]
        assert "LEAKME" not in result.output
    assert len(hub.requests) == seen and not (tmp_path / "d").exists()


@pytest.mark.parametrize("token", ["hf_with space", "hf_tab\there", "hf_\x1b[31m"])
def test_spaces_and_control_characters_are_refused_too(
    hub: FakeHub, recipe_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, token: str
) -> None:
    hub.commit("alice/r", {"synthetic.yaml": recipe_file.read_bytes()})
    monkeypatch.setenv("HF_TOKEN", token)
    with pytest.raises(UserError) as error:
        pull_recipes("alice/r", dest=tmp_path / "d")
    message = str(error.value)
    assert message.startswith("HF_TOKEN holds characters") and token not in message
    # It said "(non-ASCII or spaces)" for a tab or an escape too.
    assert "(non-ASCII characters, spaces or control characters)" in message


def test_a_bad_saved_login_token_says_to_log_in_again(
    hub: FakeHub, recipe_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    saved = tmp_path / "saved-token"
    saved.write_text(BAD, encoding="utf-8")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(saved))
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    hub.commit("alice/r", {"synthetic.yaml": recipe_file.read_bytes()})
    with pytest.raises(UserError) as error:
        pull_recipes("alice/r", dest=tmp_path / "d")
    message = str(error.value)
    assert "saved Hugging Face token" in message and "hf auth login" in message and "LEAKME" not in message


def test_offline_the_token_is_never_sent_so_a_bad_one_does_not_stop_a_cached_pull(
    hub: FakeHub, recipe_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.commit("alice/r", {"synthetic.yaml": recipe_file.read_bytes()})
    pull_recipes("alice/r", dest=tmp_path / "online")
    monkeypatch.setenv("HF_TOKEN", BAD)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    written = pull_recipes("alice/r", dest=tmp_path / "offline")
    assert written[0].read_bytes() == recipe_file.read_bytes()
