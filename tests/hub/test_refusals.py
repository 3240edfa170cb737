"""Offline use from the cache, and every refusal (404, bad revision, bad recipe, hostile names, pickle, token)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from s5cli.errors import RunFailure, UserError
from s5cli.hub import pull_recipes, push_checkpoint, push_recipe, resolve_checkpoint_dir, resolve_recipe_path
from tests.hub.fake_hub import FakeHub

# huggingface_hub's LFS upload passes a file object as `data=`, which httpx2 flags as deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")


def _tree(root: Path) -> list[Path]:
    return sorted(root.rglob("*")) if root.exists() else []


def _one_line(error: pytest.ExceptionInfo[UserError]) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


def test_offline_with_cache_pulls_without_any_request(
    hub: FakeHub, recipe_file: Path, run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.commit("bob/r", {"synthetic.yaml": recipe_file.read_bytes()})
    push_checkpoint(run_dir, "bob/ckpt")
    pull_recipes("bob/r", dest=tmp_path / "online")  # populates the cache
    online_ckpt = resolve_checkpoint_dir("bob/ckpt")
    seen = len(hub.requests)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    written = pull_recipes("bob/r", dest=tmp_path / "offline")
    assert written[0].read_bytes() == recipe_file.read_bytes()
    assert resolve_recipe_path("hf://bob/r/synthetic.yaml").read_bytes() == recipe_file.read_bytes()
    offline_ckpt = resolve_checkpoint_dir("hf://bob/ckpt")
    assert offline_ckpt == online_ckpt
    assert (offline_ckpt / "model.safetensors").read_bytes() == (run_dir / "best" / "model.safetensors").read_bytes()
    assert len(hub.requests) == seen  # nothing reached the server


def test_offline_without_cache_says_offline(
    hub: FakeHub, recipe_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.commit("bob/r", {"synthetic.yaml": recipe_file.read_bytes()})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for call in (lambda: pull_recipes("bob/r", dest=tmp_path / "d"),
                 lambda: pull_recipes("bob/r", "synthetic", dest=tmp_path / "d"),
                 lambda: resolve_recipe_path("hf://bob/r/synthetic.yaml"),
                 lambda: resolve_checkpoint_dir("bob/r")):
        with pytest.raises(UserError) as error:
            call()
        message = _one_line(error)
        assert "offline" in message and "HF_HUB_OFFLINE=1" in message and "bob/r" in message
    assert hub.requests == []
    assert _tree(tmp_path / "d") == []


def test_offline_with_a_partial_cache_says_what_is_missing(
    hub: FakeHub, recipe_file: Path, run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """Only the recipe of a checkpoint repo was fetched online: offline, the weights are not "missing"."""
    push_checkpoint(run_dir, "bob/ckpt")
    hub.commit("bob/ckpt", {"extra.yaml": recipe_file.read_bytes()})
    pull_recipes("bob/ckpt", "recipe.yaml", dest=tmp_path / "one")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as error:
        resolve_checkpoint_dir("hf://bob/ckpt")
    message = _one_line(error)
    assert "offline" in message and "Hub cache has no checkpoint of bob/ckpt" in message
    assert "holds no" not in message
    # Listing the repo offline can only list the cache: said, not hidden.
    assert [p.name for p in pull_recipes("bob/ckpt", dest=tmp_path / "all")] == ["recipe.yaml"]
    assert "listed from the Hub cache" in capsys.readouterr().err


def test_unknown_repo_is_refused(hub: FakeHub, tmp_path: Path) -> None:
    for call in (lambda: pull_recipes("nobody/missing", dest=tmp_path / "d"),
                 lambda: pull_recipes("nobody/missing", "x.yaml", dest=tmp_path / "d"),
                 lambda: resolve_recipe_path("hf://nobody/missing/x.yaml"),
                 lambda: resolve_checkpoint_dir("nobody/missing")):
        with pytest.raises(UserError) as error:
            call()
        assert "nobody/missing not found" in _one_line(error)
    assert _tree(tmp_path / "d") == []


def test_missing_revision_is_refused(hub: FakeHub, recipe_file: Path, tmp_path: Path) -> None:
    hub.commit("bob/r", {"synthetic.yaml": recipe_file.read_bytes()})
    for call in (lambda: pull_recipes("bob/r", revision="v9", dest=tmp_path / "d"),
                 lambda: pull_recipes("bob/r", "synthetic", revision="v9", dest=tmp_path / "d"),
                 lambda: resolve_checkpoint_dir("bob/r", revision="v9")):
        with pytest.raises(UserError) as error:
            call()
        message = _one_line(error)
        assert "revision 'v9' not found" in message and "bob/r" in message and "to --revision" in message
    assert _tree(tmp_path / "d") == []


def test_a_missing_revision_in_an_address_is_fixed_in_the_address(hub: FakeHub, recipe_file: Path) -> None:
    """`s5 finetune hf://bob/r@v9/x.yaml` was told to pass a revision to --revision, which finetune has not."""
    from s5cli.recipe import resolve_recipe_spec

    hub.commit("bob/r", {"synthetic.yaml": recipe_file.read_bytes()})
    for call in (lambda: resolve_recipe_spec("hf://bob/r@v9/synthetic.yaml"),
                 lambda: resolve_recipe_path("hf://bob/r@v9/synthetic.yaml"),
                 lambda: resolve_checkpoint_dir("hf://bob/r@v9"),
                 lambda: pull_recipes("hf://bob/r@v9", dest=Path("unused"))):
        with pytest.raises(UserError) as error:
            call()
        message = _one_line(error)
        assert "revision 'v9' not found in Hub repo bob/r" in message and "--revision" not in message, message
        assert "after @ in the address (hf://bob/r@REVISION" in message, message


def test_missing_file_is_refused(hub: FakeHub, recipe_file: Path, tmp_path: Path) -> None:
    hub.commit("bob/r", {"synthetic.yaml": recipe_file.read_bytes()})
    hub.commit("bob/r", {"other.yaml": recipe_file.read_bytes()}, branch="v2")
    with pytest.raises(UserError) as error:
        pull_recipes("bob/r", "nope.yaml", dest=tmp_path / "d")
    assert "nope.yaml" in _one_line(error) and "not found" in str(error.value)
    # huggingface_hub's CLI has no `hf ls`: the command named is one that lists a repo's files.
    assert "`hf models ls bob/r -R` lists the files" in str(error.value)
    with pytest.raises(UserError) as error:
        resolve_recipe_path("hf://bob/r@v2/nope.yaml")
    assert "`hf models ls bob/r -R --revision v2` lists the files" in _one_line(error)
    assert _tree(tmp_path / "d") == []


def test_recipe_names_that_name_no_file_or_two_files_are_refused_before_any_request(
    hub: FakeHub, recipe_file: Path, tmp_path: Path
) -> None:
    hub.commit("bob/r", {"lvu/genre.yaml": recipe_file.read_bytes(), "synthetic.yaml": recipe_file.read_bytes()})
    seen = len(hub.requests)
    with pytest.raises(UserError, match=re.escape("names the recipe 'lvu/genre.yaml' and NAME names 'synthetic.yaml': give it once")):
        pull_recipes("hf://bob/r/lvu/genre.yaml", "synthetic.yaml", dest=tmp_path / "d")
    for name in ("", ".", "lvu/.."):
        with pytest.raises(UserError, match=re.escape("names no file: give one like genre.yaml")):
            pull_recipes("bob/r", name, dest=tmp_path / "d")
    assert len(hub.requests) == seen and _tree(tmp_path / "d") == []
    # The same name in both places is fine, and a suffix in capitals is still a suffix.
    assert pull_recipes("hf://bob/r/lvu/genre.yaml", "lvu/genre.yaml", dest=tmp_path / "d") == [
        (tmp_path / "d" / "lvu" / "genre.yaml").resolve()]
    hub.commit("bob/r", {"UPPER.YAML": recipe_file.read_bytes()})
    assert pull_recipes("bob/r", "UPPER.YAML", dest=tmp_path / "e")[0].name == "UPPER.YAML"


def test_remote_recipe_with_unknown_key_writes_nothing(hub: FakeHub, recipe_file: Path, tmp_path: Path) -> None:
    bad = recipe_file.read_bytes().replace(b"  epochs:", b"  epochz:", 1)
    assert bad != recipe_file.read_bytes()
    hub.commit("bob/r", {"a.yaml": recipe_file.read_bytes(), "b.yaml": bad})
    with pytest.raises(UserError) as error:
        pull_recipes("bob/r", dest=tmp_path / "d")
    message = _one_line(error)
    assert "hf://bob/r@main/b.yaml" in message and "epochz" in message
    assert _tree(tmp_path / "d") == []  # not even the valid a.yaml


def test_remote_name_escaping_dest_is_refused_before_download(
    hub: FakeHub, recipe_file: Path, tmp_path: Path
) -> None:
    hub.commit("bob/r", {"good.yaml": recipe_file.read_bytes(), "../evil.yaml": recipe_file.read_bytes()})
    dest = tmp_path / "sub" / "d"
    with pytest.raises(UserError) as error:
        pull_recipes("bob/r", dest=dest)
    assert "'../evil.yaml'" in _one_line(error) and "outside" in str(error.value)
    with pytest.raises(UserError, match="outside"):
        pull_recipes("bob/r", "../evil.yaml", dest=dest)
    with pytest.raises(UserError, match="outside"):
        pull_recipes("bob/r", "/etc/evil.yaml", dest=dest)
    assert not any("/resolve/" in p for p in hub.paths_requested("GET"))
    assert _tree(tmp_path / "sub") == [] and not (tmp_path / "evil.yaml").exists()


def test_pickle_checkpoints_are_refused(hub: FakeHub, tmp_path: Path) -> None:
    hub.commit("bob/pickled", {"pytorch_model.bin": b"\x80\x04not really a pickle", "config.json": b"{}"})
    with pytest.raises(UserError) as error:
        resolve_checkpoint_dir("bob/pickled")
    assert "pytorch_model.bin" in _one_line(error) and "safetensors only" in str(error.value)
    with pytest.raises(UserError, match="safetensors only"):
        resolve_checkpoint_dir("hf://bob/pickled/pytorch_model.bin")
    assert not any(p.endswith(".bin") for p in hub.paths_requested("GET") + hub.paths_requested("HEAD"))
    cache = tmp_path / "hf-cache"
    assert not [p for p in _tree(cache) if p.name.endswith(".bin")]
    # and nothing pickled is ever pushed
    (tmp_path / "model.pt").write_bytes(b"x")
    with pytest.raises(UserError, match="pickle"):
        push_checkpoint(tmp_path / "model.pt", "bob/out")
    assert "bob/out" not in hub.repos


def test_push_without_token_names_the_fix(
    hub: FakeHub, recipe_file: Path, run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_TOKEN")
    for call in (lambda: push_recipe(recipe_file, "bob/r"), lambda: push_checkpoint(run_dir, "bob/c")):
        with pytest.raises(UserError) as error:
            call()
        assert "HF_TOKEN" in _one_line(error) and "hf auth login" in str(error.value)
    assert hub.repos == {}


def test_with_optimizer_on_a_run_without_step_checkpoints_names_the_run_and_the_fix(
    hub: FakeHub, run_dir: Path
) -> None:
    import shutil

    shutil.rmtree(run_dir / "checkpoints")
    (run_dir / "latest").unlink()
    with pytest.raises(UserError) as error:
        push_checkpoint(run_dir, "bob/c", with_optimizer=True)
    message = _one_line(error)
    assert str(run_dir) in message and "no step checkpoint" in message and "without --with-optimizer" in message
    assert hub.repos == {}  # refused before anything was created


def test_wrong_token_and_private_repo(hub: FakeHub, recipe_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.create("bob/secret", private=True)
    hub.commit("bob/secret", {"synthetic.yaml": recipe_file.read_bytes()})
    assert resolve_recipe_path("hf://bob/secret/synthetic.yaml").read_bytes() == recipe_file.read_bytes()
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(UserError) as error:
        push_recipe(recipe_file, "bob/new")
    assert "HF_TOKEN" in _one_line(error)
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(UserError) as error:
        resolve_recipe_path("hf://bob/secret@main/other.yaml")
    assert "private" in _one_line(error) and "HF_TOKEN" in str(error.value)


def test_a_path_in_repo_that_climbs_out_is_refused_in_push_words(hub: FakeHub, recipe_file: Path) -> None:
    with pytest.raises(UserError) as error:
        push_recipe(recipe_file, "bob/r", path_in_repo="../x.yaml")
    assert _one_line(error) == ("bob/r: refusing path in repo '../x.yaml': give a relative path without '..' or "
                                "backslashes (e.g. lvu/genre.yaml)")
    assert hub.repos == {}


def test_invalid_local_recipe_is_not_pushed(hub: FakeHub, recipe_file: Path) -> None:
    recipe_file.write_text(recipe_file.read_text().replace("  epochs:", "  epochz:", 1))
    with pytest.raises(UserError, match="epochz"):
        push_recipe(recipe_file, "bob/r")
    assert hub.repos == {}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("hf://bob", "not a Hub address"),
        ("hf://bob/r/../x.yaml", "outside"),
        ("hf://bob/r@/x.yaml", "empty revision"),
        ("hf://bo b/r/x.yaml", "not a valid Hub repo id"),
        ("bob/r/x.yaml", "hf://"),
        ("hf://bob/r/model.txt", "a recipe is a .yaml file"),
    ],
)
def test_malformed_addresses(hub: FakeHub, spec: str, expected: str) -> None:
    with pytest.raises(UserError, match=expected):
        resolve_recipe_path(spec)
    assert hub.requests == []


def test_revision_conflict_and_parse() -> None:
    from s5cli.hub.paths import parse_hub_spec

    spec = parse_hub_spec("hf://bob/r@refs%2Fpr%2F1/sub/file.yaml")
    assert (spec.repo_id, spec.revision, spec.path) == ("bob/r", "refs/pr/1", "sub/file.yaml")
    assert parse_hub_spec("bob/r", revision="v1").revision == "v1"
    with pytest.raises(UserError, match="give only one"):
        parse_hub_spec("hf://bob/r@v1", revision="v2")


@pytest.fixture
def refused_port():
    """A local port that refuses connections: bound but never listening, and held for the whole test.

    Why held: a port bound and released could be taken by another process before the test connects.
    """
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_unreachable_hub_lists_recipes_from_the_cache(
    hub: FakeHub, recipe_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
    refused_port: int,
) -> None:
    """Listing a repo needs the network; when it is down, what an earlier pull cached is used, with a warning."""
    import huggingface_hub

    hub.commit("bob/r", {"synthetic.yaml": recipe_file.read_bytes()})
    pull_recipes("bob/r", dest=tmp_path / "online")

    # The Hub goes away: a port nothing listens on refuses the connection, as an offline machine does.
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{refused_port}")
    # huggingface_hub's backoff sleeps before each of its five retries (~25 s in all); one refused request
    # must be enough to fall back.
    sleeps: list[float] = []
    monkeypatch.setattr(huggingface_hub.utils._http.time, "sleep", sleeps.append)
    written = pull_recipes("bob/r", dest=tmp_path / "later")
    assert [p.read_bytes() for p in written] == [recipe_file.read_bytes()]
    assert "cannot reach the Hub" in capsys.readouterr().err
    assert sleeps == []
    # Nothing cached for a repo: the network error itself, not an empty success.
    hub.commit("bob/never-pulled", {"synthetic.yaml": recipe_file.read_bytes()})
    with pytest.raises(RunFailure, match="cannot reach the Hub"):
        pull_recipes("bob/never-pulled", dest=tmp_path / "none")


def test_an_unreachable_hub_fails_or_falls_back_at_the_first_refusal(
    hub: FakeHub, recipe_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
    refused_port: int,
) -> None:
    """`hf://` recipes: hf_hub_download retried an unreachable Hub five times with backoff (~23 s and 11 lines
    of noise) before its error, for a file not cached yet; now one refused request decides."""
    import huggingface_hub

    hub.commit("bob/r", {"synthetic.yaml": recipe_file.read_bytes()})
    resolve_recipe_path("hf://bob/r/synthetic.yaml")  # cached once while online
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{refused_port}")
    sleeps: list[float] = []
    monkeypatch.setattr(huggingface_hub.utils._http.time, "sleep", sleeps.append)
    assert resolve_recipe_path("hf://bob/r/synthetic.yaml").read_bytes() == recipe_file.read_bytes()
    assert "cannot reach the Hub" in capsys.readouterr().err
    with pytest.raises(RunFailure, match=r"cannot reach the Hub for bob/r@main file 'other\.yaml' and it is not cached"):
        resolve_recipe_path("hf://bob/r/other.yaml")
    assert sleeps == []


@pytest.mark.parametrize("status", [503, 429])
def test_a_hub_outage_serves_cached_files_and_names_the_status_otherwise(
    hub: FakeHub, recipe_file: Path, capsys: pytest.CaptureFixture, status: int,
) -> None:
    """A server error or rate limit says nothing about the file: a cached copy is used (with a warning), as
    when the Hub cannot be reached; with nothing cached the status is named. A 404 still means not found."""
    hub.commit("bob/r", {"synthetic.yaml": recipe_file.read_bytes()})
    resolve_recipe_path("hf://bob/r/synthetic.yaml")  # cached once
    hub.outage = status
    assert resolve_recipe_path("hf://bob/r/synthetic.yaml").read_bytes() == recipe_file.read_bytes()
    err = capsys.readouterr().err
    assert "cannot reach the Hub" in err and str(status) in err and "using the cached synthetic.yaml" in err
    with pytest.raises((RunFailure, UserError), match=str(status)):
        resolve_recipe_path("hf://bob/r/other.yaml")
    hub.outage = None
    with pytest.raises(UserError):
        resolve_recipe_path("hf://bob/r/other.yaml")


def test_a_run_folder_on_the_hub_means_its_best_checkpoint_as_on_disk(hub: FakeHub, run_dir: Path) -> None:
    from s5cli.train.checkpoint_paths import run_best_checkpoint

    files = {path.relative_to(run_dir).as_posix(): path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}
    hub.commit("bob/runs", {f"run/{name}": data for name, data in files.items()})
    assert run_best_checkpoint(run_dir).name == "best"
    assert resolve_checkpoint_dir("hf://bob/runs/run").name == "best"
    # Without best/ (no validation), the checkpoint `latest` names, as on disk.
    hub.commit("bob/nobest", {name: data for name, data in files.items() if not name.startswith("best/")})
    assert resolve_checkpoint_dir("hf://bob/nobest").name == "step-0000007"


def test_push_refuses_a_checkpoint_file_that_is_a_link(hub: FakeHub, run_dir: Path, tmp_path: Path) -> None:
    secret = tmp_path / "config.json"
    secret.write_text('{"auths": {"registry": "s3cr3t"}}')
    metrics = run_dir / "best" / "metrics.json"
    metrics.unlink()
    metrics.symlink_to(secret)
    with pytest.raises(UserError, match="is a link or lies outside the checkpoint"):
        push_checkpoint(run_dir, "bob/c")
    assert hub.repos == {}


def test_a_checkpoint_is_fetched_by_its_own_files_not_the_whole_repo(hub: FakeHub, run_dir: Path) -> None:
    """fnmatch's * crosses '/': '*.safetensors' fetched every safetensors file anywhere in the repo."""
    step = run_dir / (run_dir / "latest").read_text().strip()
    files = {f"checkpoints/{step.name}/{p.name}": p.read_bytes() for p in step.iterdir() if p.is_file()}
    files.update({"latest": f"checkpoints/{step.name}\n".encode(), "old/huge.safetensors": b"\0" * 4096,
                  "notes/deep/notes.json": b"{}"})
    hub.commit("bob/run", files)
    local = resolve_checkpoint_dir("hf://bob/run")
    assert local.name == step.name and (local / "model.safetensors").is_file()
    requested = hub.paths_requested("GET")
    assert not any("huge" in p or "notes" in p for p in requested)


def test_a_checkpoint_fetch_prints_no_noise_of_huggingface_hub(
    hub: FakeHub, run_dir: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture,
) -> None:
    """A pickle repo, or a run folder without best/, printed huggingface_hub's "No files matched
    allow_patterns=[...]" warning and a "Fetching 0 files" bar before s5cli's own line."""
    hub.commit("bob/pickled", {"pytorch_model.bin": b"\x80\x04not really a pickle"})
    with pytest.raises(UserError, match="safetensors only"):
        resolve_checkpoint_dir("bob/pickled")
    files = {path.relative_to(run_dir).as_posix(): path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}
    hub.commit("bob/nobest", {name: data for name, data in files.items() if not name.startswith("best/")})
    assert resolve_checkpoint_dir("hf://bob/nobest").name == "step-0000007"
    noise = capsys.readouterr().err + caplog.text
    assert "No files matched" not in noise and "Fetching 0 files" not in noise, noise


def test_a_huge_remote_recipe_is_refused_by_its_size_before_it_is_read(hub: FakeHub, tmp_path: Path) -> None:
    """`recipes pull` read each remote file whole (and decoded it) before the 1 MiB cap: the size decides
    first, so a 2 MiB file whose end is not UTF-8 is refused for its size, not its bytes."""
    hub.commit("bob/big", {"big.yaml": b"a" * (2 << 20) + b"\xff"})
    with pytest.raises(UserError) as error:
        pull_recipes("bob/big", dest=tmp_path / "d")
    message = _one_line(error)
    assert "hf://bob/big@main/big.yaml" in message and "more than the 1 MiB a recipe may be" in message, message
    assert _tree(tmp_path / "d") == []
