"""SIGTERM or Ctrl-C while torch imports torch._dynamo (and triton) for the first optimizer aborted training
(exit 134, "terminate called after throwing an instance of 'nanobind::python_error'"): training imports
those modules first, with the stop signals deferred, so one that comes meanwhile stops the run cleanly."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from s5cli.cli.app import app
from s5cli.errors import Terminated
from s5cli.train import job
from tests.train.test_finetune_e2e import RECIPE, tiny


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


@pytest.fixture
def handlers() -> Iterator[dict[int, object]]:
    """The CLI's handlers (SIGTERM raises `Terminated`, Ctrl-C KeyboardInterrupt), put back after the test."""
    installed = {signal.SIGTERM: _raise_terminated, signal.SIGINT: signal.default_int_handler}
    previous = {signum: signal.signal(signum, handler) for signum, handler in installed.items()}
    yield installed
    for signum, handler in previous.items():
        signal.signal(signum, handler)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_during_the_imports_is_raised_once_they_are_done(
        monkeypatch: pytest.MonkeyPatch, handlers: dict[int, object], signum: int) -> None:
    """Received by a thread started before the imports, as a `kill` reaches a process with torch's threads
    running: blocking the signal in the importing thread alone (pthread_sigmask) still let the handler
    raise inside the import."""
    done: list[str] = []
    go = threading.Event()

    def send() -> None:
        go.wait()
        os.kill(os.getpid(), signum)

    sender = threading.Thread(target=send)
    sender.start()

    def import_module(name: str) -> None:
        if not done:
            go.set()
            sender.join()
        sum(range(1000))  # bytecode where an undeferred signal's handler would run
        done.append(name)

    monkeypatch.setattr("importlib.import_module", import_module)
    with pytest.raises(Terminated if signum == signal.SIGTERM else KeyboardInterrupt):
        job.import_lazy_torch_modules()
    assert done == list(job.LAZY_TORCH_MODULES)
    assert {s: signal.getsignal(s) for s in handlers} == handlers  # the handlers are back


def test_without_a_signal_the_imports_change_nothing(monkeypatch: pytest.MonkeyPatch,
                                                     handlers: dict[int, object]) -> None:
    imported: list[str] = []
    monkeypatch.setattr("importlib.import_module", imported.append)
    job.import_lazy_torch_modules()
    assert imported == list(job.LAZY_TORCH_MODULES)
    assert {s: signal.getsignal(s) for s in handlers} == handlers
    # Off the main thread (where handlers cannot be set) the imports run as they are.
    worker = threading.Thread(target=job.import_lazy_torch_modules)
    worker.start()
    worker.join()
    assert imported == list(job.LAZY_TORCH_MODULES) * 2


def test_training_imports_them_before_it_builds_the_optimizer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    order: list[str] = []

    def optimizer(*args: object) -> None:
        order.append("optimizer")
        raise RuntimeError("stop here")  # the rest of training is not what is tested

    monkeypatch.setattr(job, "import_lazy_torch_modules", lambda: order.append("imports"))
    monkeypatch.setattr("s5cli.train.loop.build_optimizer", optimizer)
    result = CliRunner().invoke(app, ["finetune", RECIPE, *tiny(tmp_path), "--quiet", "--device", "cpu"])
    assert str(result.exception) == "stop here", result.output
    assert order == ["imports", "optimizer"]


def test_the_same_signal_twice_stops_the_block_at_once(handlers: dict[int, object]) -> None:
    """A hung import with every stop deferred could only be ended with kill -9: a second Ctrl-C stops it."""
    from s5cli.signals_deferred import stop_signals_deferred

    reached: list[str] = []
    with pytest.raises(KeyboardInterrupt), stop_signals_deferred():
        signal.raise_signal(signal.SIGINT)
        reached.append("after the first")
        signal.raise_signal(signal.SIGINT)
        reached.append("after the second")
    assert reached == ["after the first"]
    assert {s: signal.getsignal(s) for s in handlers} == handlers
