"""A Hub that accepts connections and never answers (a stalled proxy or firewall): every command gives up after
HF_HUB_ETAG_TIMEOUT seconds, using the Hub cache where it holds what was asked for."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from s5cli.errors import RunFailure
from s5cli.hub import pull_recipes, push_checkpoint, push_recipe, resolve_checkpoint_dir, resolve_recipe_path
from tests.hub.fake_hub import FakeHub

# huggingface_hub's LFS upload passes a file object as `data=`, which httpx2 flags as deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")

GIVE_UP_S = 20  # far above the 1 s limit the tests set: only a call that waits without a limit gets here


@pytest.fixture
def stalled(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], None]]:
    """Calling it points HF_ENDPOINT at a server that accepts connections and never answers, with a 1 s limit."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):  # the 0.2 s accept timeout, to check `stop`
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()

    def stall() -> None:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")

    yield stall
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def _within_limit(call: Callable[[], Any]) -> Any:
    """call()'s result, or the exception it raised; fails the test when it is still waiting after GIVE_UP_S."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as error:  # handed to the test to check
            outcome.append(error)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=GIVE_UP_S)
    assert not worker.is_alive(), "hangs on a Hub that accepts the connection but never answers"
    return outcome[0]


def test_cached_recipes_and_checkpoints_are_used_when_the_hub_does_not_answer(
    hub: FakeHub, recipe_file: Path, run_dir: Path, tmp_path: Path, stalled: Callable[[], None],
    capsys: pytest.CaptureFixture,
) -> None:
    hub.commit("bob/r", {"synthetic.yaml": recipe_file.read_bytes()})
    push_checkpoint(run_dir, "bob/model")
    pull_recipes("bob/r", dest=tmp_path / "first")  # all of it cached once, while the Hub answered
    resolve_recipe_path("hf://bob/r/synthetic.yaml")
    checkpoint = resolve_checkpoint_dir("hf://bob/model")
    capsys.readouterr()
    stalled()
    written = _within_limit(lambda: pull_recipes("bob/r", dest=tmp_path / "again"))
    assert [p.read_bytes() for p in written] == [recipe_file.read_bytes()]
    assert _within_limit(lambda: resolve_recipe_path("hf://bob/r/synthetic.yaml")).is_file()
    assert _within_limit(lambda: resolve_checkpoint_dir("hf://bob/model")) == checkpoint
    err = " ".join(capsys.readouterr().err.split())
    assert "no answer within 1 s" in err and "HF_HUB_ETAG_TIMEOUT" in err
    assert "; using the cached checkpoint of bob/model@main" in err


def test_a_silent_hub_without_a_cache_is_one_line_naming_the_limit(
    hub: FakeHub, recipe_file: Path, run_dir: Path, tmp_path: Path, stalled: Callable[[], None],
) -> None:
    stalled()
    for call in (lambda: pull_recipes("bob/r", dest=tmp_path / "d"),
                 lambda: resolve_recipe_path("hf://bob/r/synthetic.yaml"),
                 lambda: resolve_checkpoint_dir("hf://bob/model"),
                 lambda: push_checkpoint(run_dir, "bob/model"),
                 lambda: push_recipe(recipe_file, "bob/r", private=True)):
        error = _within_limit(call)
        assert isinstance(error, RunFailure), error
        message = str(error)
        assert "\n" not in message and "bob/" in message, message
        assert "no answer within 1 s" in message and "HF_HUB_ETAG_TIMEOUT" in message, message
    assert not (tmp_path / "d").exists()
