"""Errors from the system, not the command line: a file the job cannot write, memory, SIGTERM.

They surface deep inside a job, after the up-front checks; the user still gets one line naming the file
and what to do, not a traceback.
"""

from __future__ import annotations

import errno
import os
import signal

import pytest
from typer.testing import CliRunner

from s5cli.cli import app as app_module
from s5cli.cli.app import app
from s5cli.errors import Terminated


def _one_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    return lines[0]


@pytest.mark.parametrize(
    ("error", "code", "words"),
    [
        (PermissionError(errno.EACCES, "Permission denied", "/data/out.yaml"), 2, "check its permissions"),
        (IsADirectoryError(errno.EISDIR, "Is a directory", "/data/out.yaml"), 2, "name a file"),
        (FileExistsError(errno.EEXIST, "File exists", "/data/out.yaml"), 2, "something is in the way"),
        (OSError(errno.ENOSPC, "No space left on device", "/data/out.yaml"), 1, "No space left"),
    ],
)
def test_a_file_error_deep_in_a_command_is_one_line_naming_the_file(
    monkeypatch, tmp_path, error: OSError, code: int, words: str
) -> None:
    import s5cli.io

    def fails(*args, **kwargs):
        raise error

    monkeypatch.setattr(s5cli.io, "atomic_write_bytes", fails)
    result = CliRunner().invoke(app, ["recipes", "cp", "synthetic", str(tmp_path / "mine.yaml")])
    assert result.exit_code == code, result.output
    line = _one_line(result.output)
    assert line.startswith("error: /data/out.yaml:") and words in line and "Traceback" not in result.output


def test_os_errors_without_a_file_name_and_debug_runs_keep_the_traceback(monkeypatch, tmp_path) -> None:
    import s5cli.io

    def fails(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(s5cli.io, "atomic_write_bytes", fails)
    result = CliRunner().invoke(app, ["recipes", "cp", "synthetic", str(tmp_path / "mine.yaml")])
    assert isinstance(result.exception, OSError)  # not the user's to fix: a bug report needs the traceback
    assert app_module._system_error_line(PermissionError(errno.EACCES, "Permission denied")) is None

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", "/data/out.yaml")

    monkeypatch.setattr(s5cli.io, "atomic_write_bytes", denied)
    debug = CliRunner().invoke(app, ["--debug", "recipes", "cp", "synthetic", str(tmp_path / "mine.yaml")])
    assert debug.exit_code == 2 and "PermissionError" in debug.output and "Traceback" in debug.output


def test_running_out_of_memory_is_one_line_with_what_to_do() -> None:
    line, code = app_module._system_error_line(MemoryError("Unable to allocate 224. GiB for an array"))
    assert code == 1 and line.startswith("out of memory (Unable to allocate 224. GiB") and "ask for less" in line


def test_sigterm_raises_terminated_in_the_cli_process(monkeypatch) -> None:
    previous = signal.getsignal(signal.SIGTERM)
    try:
        app_module._terminate_like_interrupt()
        with pytest.raises(Terminated):
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait([], 0.5)  # the handler runs before this returns
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_terminated_command_says_so_and_exits_143(monkeypatch) -> None:
    import s5cli.recipe as recipe_module

    def terminated(*args, **kwargs):
        raise Terminated()

    monkeypatch.setattr(recipe_module, "load_recipe_spec", terminated)
    stopped = CliRunner().invoke(app, ["recipes", "show", "synthetic"])
    assert stopped.exit_code == 143 and _one_line(stopped.output) == "error: terminated"
