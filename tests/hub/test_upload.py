"""Pushing again to a repo, pushing a checkpoint a trainer is replacing, and where a push lands."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from s5cli.errors import UserError
from s5cli.hub import push_checkpoint, push_recipe, resolve_checkpoint_dir
from s5cli.hub.upload import recipe_hub_target
from tests.hub.fake_hub import FakeHub

# huggingface_hub's LFS upload passes a file object as `data=`, which httpx2 flags as deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")

STATE_FILES = ("trainer_state.json", "trainer_state.safetensors")


def _weights_step(data: bytes) -> str:
    """The `step` a model.safetensors stores in its header metadata."""
    (size,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + size])["__metadata__"]["step"]


def _card_step(card: bytes) -> str:
    return re.search(r"^- step: (\w+)", card.decode(), re.MULTILINE).group(1)


def _save_best(run_dir: Path, step: int, top1: float) -> None:
    """What a trainer does on a better validation score: replace best/ (renamed aside, new one renamed in)."""
    import torch

    from s5cli.models.registry import build_model
    from s5cli.train import checkpoint as ckpt
    from s5cli.train.checkpoint_metadata import read_metadata
    from tests.hub.conftest import TINY_MODEL

    torch.manual_seed(step)
    model = build_model("s5", {k: v for k, v in TINY_MODEL.items() if k != "name"}, 9)
    metadata = {**read_metadata(run_dir / "best"), "step": str(step)}
    metadata.pop("format")
    ckpt.save_checkpoint(run_dir / "best", model, metadata, metrics={"top1": top1})


# ------------------------------------------------------------------------------- stale files (finding 1)
def test_a_second_push_deletes_the_checkpoint_files_it_does_not_upload(hub: FakeHub, run_dir: Path) -> None:
    """A commit only adds: a push of best/ after a resumable push kept the step's trainer state beside best's
    weights, and one without metrics.json kept the old metrics.json."""
    push_checkpoint(run_dir, "alice/c", with_optimizer=True)
    assert set(STATE_FILES) <= set(hub.files("alice/c"))
    hub.commit("alice/c", {"notes.md": b"mine\n", "old/model.safetensors": b"kept"})  # the user's own files
    (run_dir / "best" / "metrics.json").unlink()

    result = push_checkpoint(run_dir, "alice/c")
    remote = hub.files("alice/c")
    assert not set(STATE_FILES) & set(remote) and "metrics.json" not in remote
    assert remote["model.safetensors"] == (run_dir / "best" / "model.safetensors").read_bytes()
    assert remote["notes.md"] == b"mine\n" and remote["old/model.safetensors"] == b"kept"
    assert result.files == ["README.md", "model.safetensors", "recipe.yaml"]
    assert result.deleted == ["metrics.json", *STATE_FILES]
    local = resolve_checkpoint_dir("hf://alice/c")
    assert not any((local / name).exists() for name in (*STATE_FILES, "metrics.json"))


def test_push_cli_says_which_files_of_an_earlier_push_it_removed(hub: FakeHub, run_dir: Path) -> None:
    from s5cli.cli.app import app

    runner = CliRunner()
    result = runner.invoke(app, ["push", str(run_dir), "carol/c", "--with-optimizer"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert "removed" not in result.output
    result = runner.invoke(app, ["push", str(run_dir), "carol/c"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert "removed trainer_state.json, trainer_state.safetensors of an earlier push" in result.output


def test_a_push_to_a_new_branch_drops_the_checkpoint_files_it_inherits(hub: FakeHub, run_dir: Path) -> None:
    """A new branch starts as a copy of main: its trainer state is not this push's and goes; main keeps it."""
    push_checkpoint(run_dir, "alice/c", with_optimizer=True)
    push_checkpoint(run_dir, "alice/c", revision="weights-only")
    assert not set(STATE_FILES) & set(hub.files("alice/c", "weights-only"))
    assert set(STATE_FILES) <= set(hub.files("alice/c", "main"))


def test_a_first_push_deletes_nothing(hub: FakeHub, run_dir: Path) -> None:
    result = push_checkpoint(run_dir, "alice/new")
    assert set(hub.files("alice/new")) == {".gitattributes", *result.files}


# ------------------------------------------------------------------- one checkpoint per push (finding 2)
def test_card_and_files_come_from_the_same_checkpoint_when_best_is_replaced_during_the_push(
    hub: FakeHub, run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The card was written from step 7 while step 9's weights, saved meanwhile, were uploaded under it."""
    from s5cli.hub import upload

    real = upload.commit_files

    def trainer_saves_a_new_best(*args, **kwargs):
        _save_best(run_dir, step=9, top1=0.25)
        return real(*args, **kwargs)

    monkeypatch.setattr(upload, "commit_files", trainer_saves_a_new_best)
    push_checkpoint(run_dir, "alice/live")
    remote = hub.files("alice/live")
    assert _weights_step(remote["model.safetensors"]) == _card_step(remote["README.md"]) == "7"
    assert json.loads(remote["metrics.json"])["top1"] == 0.375
    assert "0.3750" in remote["README.md"].decode()


def test_a_checkpoint_replaced_while_it_is_copied_is_copied_again(
    hub: FakeHub, run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from s5cli.hub import snapshot

    monkeypatch.setattr(snapshot, "RETRY_PAUSE_S", 0)
    real = snapshot._link_or_copy
    calls: list[str] = []

    def replaced_once(file: Path, *args) -> None:
        calls.append(file.name)
        if len(calls) == 2:  # after the weights were taken, before metrics.json
            _save_best(run_dir, step=9, top1=0.25)
        real(file, *args)

    monkeypatch.setattr(snapshot, "_link_or_copy", replaced_once)
    push_checkpoint(run_dir, "alice/live")
    remote = hub.files("alice/live")
    assert _weights_step(remote["model.safetensors"]) == _card_step(remote["README.md"]) == "9"
    assert json.loads(remote["metrics.json"])["top1"] == 0.25


def test_a_checkpoint_that_keeps_changing_is_refused_in_one_line(
    hub: FakeHub, run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from s5cli.hub import snapshot

    monkeypatch.setattr(snapshot, "RETRY_PAUSE_S", 0)
    real = snapshot._link_or_copy
    steps = iter(range(10, 20))

    def always_replaced(*args) -> None:
        real(*args)
        _save_best(run_dir, step=next(steps), top1=0.1)

    monkeypatch.setattr(snapshot, "_link_or_copy", always_replaced)
    with pytest.raises(UserError) as error:
        push_checkpoint(run_dir, "alice/live")
    message = str(error.value)
    assert "\n" not in message and "changed while it was being read" in message
    assert str(run_dir / "best") in message and "push again, or after the training" in message
    assert hub.repos == {}


def test_a_file_that_vanishes_during_the_snapshot_is_taken_again(
    hub: FakeHub, run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mid-swap, the old best/ is deleted while it is read: a file is not found, and the copy is taken again."""
    from s5cli.hub import snapshot

    monkeypatch.setattr(snapshot, "RETRY_PAUSE_S", 0)
    real = snapshot._link_or_copy
    vanished: list[str] = []

    def deleted_once(file: Path, *args) -> None:
        if not vanished and file.name == "metrics.json":
            vanished.append(file.name)
            raise FileNotFoundError(2, "No such file or directory", str(file))
        real(file, *args)

    monkeypatch.setattr(snapshot, "_link_or_copy", deleted_once)
    push_checkpoint(run_dir, "alice/live")
    assert vanished and json.loads(hub.files("alice/live")["metrics.json"])["top1"] == 0.375


def test_a_checkpoint_is_copied_not_linked_across_file_systems(
    hub: FakeHub, run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """os.link fails across file systems (EXDEV) and on hardened /tmp (protected_hardlinks): bytes are copied."""
    import errno
    import os

    def no_links(*args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    push_checkpoint(run_dir, "alice/copied", with_optimizer=True)
    step = run_dir / "checkpoints" / "step-0000007"
    for name in ("model.safetensors", "metrics.json", *STATE_FILES):
        assert hub.files("alice/copied")[name] == (step / name).read_bytes(), name


def test_the_still_copy_is_made_beside_the_run_so_its_files_are_linked(
    hub: FakeHub, run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the system temp folder (often another file system: tmpfs /tmp, runs on NFS) links fail and every
    file, optimizer state included, was copied there; beside the run it is one file system, and nothing
    of the copy is left behind."""
    from s5cli.hub import snapshot

    real, targets = snapshot._link_or_copy, []

    def recording(file: Path, target: Path, *args) -> None:
        real(file, target, *args)
        targets.append((target, target.stat().st_nlink))

    monkeypatch.setattr(snapshot, "_link_or_copy", recording)
    push_checkpoint(run_dir, "alice/near", with_optimizer=True)
    assert targets and all(target.is_relative_to(run_dir.parent) for target, _ in targets)
    assert all(links == 2 for _, links in targets)  # linked, not copied
    assert not list(run_dir.parent.glob(".s5-push-*"))


def test_a_local_file_error_during_a_hub_call_names_the_file_not_the_network(tmp_path: Path) -> None:
    from s5cli.hub.client import hub_errors

    missing = tmp_path / "gone" / "model.safetensors"
    with pytest.raises(UserError) as error, hub_errors("alice/c", None, writing=True):
        missing.open("rb")
    message = str(error.value)
    assert str(missing) in message and "No such file" in message and "cannot reach the Hub" not in message


# ------------------------------------------------------------------------------- push target (finding 3)
def test_the_recipe_revision_goes_only_with_the_recipe_repo(hub: FakeHub, recipe_file: Path) -> None:
    hub_section = {"repo_id": "erin/recipes", "revision": "drafts"}
    assert recipe_hub_target(hub_section, None, None, "r.yaml") == ("erin/recipes", "drafts")
    assert recipe_hub_target(hub_section, None, "v2", "r.yaml") == ("erin/recipes", "v2")
    assert recipe_hub_target(hub_section, "frank/other", None, "r.yaml") == ("frank/other", None)
    assert recipe_hub_target(hub_section, "erin/recipes", None, "r.yaml") == ("erin/recipes", "drafts")  # its own
    assert recipe_hub_target(hub_section, "hf://erin/recipes@v3", None, "r.yaml") == ("erin/recipes", "v3")
    assert recipe_hub_target(hub_section, "hf://frank/other@exp", None, "r.yaml") == ("frank/other", "exp")

    recipe_file.write_text(recipe_file.read_text().replace("repo_id: null", "repo_id: erin/recipes")
                           .replace("revision: null", "revision: drafts"))
    result = push_recipe(recipe_file, "frank/other")
    assert result.revision == "main" and set(hub.repos["frank/other"].branches) == {"main"}
    assert "synthetic.yaml" in hub.files("frank/other", "main")


@pytest.mark.parametrize("command", [["push"], ["recipes", "push"]])
def test_push_help_says_when_the_recipe_revision_applies(command: list[str]) -> None:
    from s5cli.cli.app import app

    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.replace("│", " ").split())
    assert "hub.revision" in text and "otherwise main" in text


# ---------------------------------------------------------------------------- 403 with a token (finding 9)
def test_a_token_without_write_access_is_told_so_not_to_log_in(
    hub: FakeHub, recipe_file: Path, run_dir: Path
) -> None:
    from tests.hub.conftest import TOKEN

    hub.commit("bob/theirs", {"x.yaml": recipe_file.read_bytes()})
    hub.read_only |= {"bob/theirs", "bob/absent"}
    for call in (lambda: push_recipe(recipe_file, "bob/theirs"), lambda: push_checkpoint(run_dir, "bob/theirs"),
                 lambda: push_recipe(recipe_file, "bob/absent")):
        with pytest.raises(UserError) as error:
            call()
        message = str(error.value)
        assert "\n" not in message and "HTTP 403" in message
        assert "token has no write access to Hub repo bob/" in message and "write access" in message
        assert "own namespace (YOUR_NAME/" in message
        assert "hf auth login" not in message and TOKEN not in message
    assert set(hub.files("bob/theirs")) == {".gitattributes", "x.yaml"}


# ------------------------------------------------------------------------- --private on a public repo
def test_private_is_refused_for_an_existing_public_repo_before_anything_is_uploaded(
    hub: FakeHub, recipe_file: Path, run_dir: Path
) -> None:
    """`--private` was dropped without a word for a repo that exists: the push published to a public repo."""
    hub.create("bob/public")
    for call in (lambda: push_checkpoint(run_dir, "bob/public", private=True),
                 lambda: push_recipe(recipe_file, "bob/public", private=True)):
        with pytest.raises(UserError) as error:
            call()
        message = str(error.value)
        assert "\n" not in message
        assert message.startswith("bob/public exists and is public: make it private first"), message
        assert "hf repos settings bob/public --private" in message and "push without --private" in message
    assert set(hub.files("bob/public")) == {".gitattributes"}
    assert not hub.paths_requested("POST")  # not even the repo creation was asked for
    # A private repo that exists, and one created by the push, take it.
    hub.create("bob/secret", private=True)
    push_recipe(recipe_file, "bob/secret", private=True)
    push_checkpoint(run_dir, "bob/new", private=True)
    assert hub.repos["bob/new"].private and "model.safetensors" in hub.files("bob/new")


@pytest.mark.parametrize("command", [["push"], ["recipes", "push"]])
def test_private_help_says_an_existing_public_repo_is_refused(command: list[str]) -> None:
    from s5cli.cli.app import app

    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "300"})
    text = " ".join(result.output.replace("│", " ").split())
    assert "ignored if it exists" not in text
    assert "refused if it exists and is public" in text


# ------------------------------------------------------------------------------------- racing pushes
def test_a_push_that_lost_a_race_says_to_push_again(hub: FakeHub, run_dir: Path, monkeypatch) -> None:
    """HTTP 412 (the branch moved since it was listed) was "Hub request ... failed: Client error '412 ...'"."""
    from s5cli.hub import upload

    push_checkpoint(run_dir, "bob/model")
    listed = upload._stale_deletions

    def another_push_lands(*args, **kwargs):
        result = listed(*args, **kwargs)
        hub.commit("bob/model", {"notes.md": b"theirs\n"})
        return result

    monkeypatch.setattr(upload, "_stale_deletions", another_push_lands)
    with pytest.raises(UserError) as error:
        push_checkpoint(run_dir, "bob/model")
    assert str(error.value) == "bob/model@main changed while pushing (another push landed): push again"
