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


def test_a_full_disk_names_the_file_asked_for_not_the_temporary_one(monkeypatch, tmp_path) -> None:
    """A write that fails half-way (no file name on the error, as a file handle's write raises it) names the
    user's path; the temporary file is gone."""
    def fills_the_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    import s5cli.io

    monkeypatch.setattr(s5cli.io.os, "fsync", fills_the_disk)
    target = tmp_path / "mine.yaml"
    result = CliRunner().invoke(app, ["recipes", "cp", "synthetic", str(target)])
    assert result.exit_code == 1, result.output
    assert _one_line(result.output) == f"error: {target}: No space left on device"
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_under_safetensors_is_an_os_error_naming_the_file(monkeypatch, tmp_path) -> None:
    """safetensors wraps the OS error in its own type; checkpoints and token files name their path."""
    import safetensors.torch
    import torch
    from torch import nn

    from s5cli.data.cache import FeatureCache
    from s5cli.data.cache_settings import ExtractionSettings
    from s5cli.train.checkpoint import save_checkpoint

    class SafetensorError(Exception):  # the library's type is not importable by that name in every version
        pass

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    cache = FeatureCache(tmp_path / "cache", ExtractionSettings("patch_pool", None, 4, None, 64))
    with pytest.raises(OSError, match="No space left") as caught:
        cache.save("v", torch.zeros(2, 3, 4))
    assert (caught.value.errno, caught.value.filename) == (errno.ENOSPC, str(cache.path("v")))
    with pytest.raises(OSError) as caught:
        save_checkpoint(tmp_path / "run" / "best", nn.Linear(2, 2), {})
    assert caught.value.filename == f"checkpoint {tmp_path / 'run' / 'best'}"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == []  # nothing half-assembled left
    line = app_module._system_error_line(caught.value)
    assert line == (f"checkpoint {tmp_path / 'run' / 'best'}: No space left on device", 1)
    # Other safetensors errors stay what they are.
    monkeypatch.setattr(safetensors.torch, "save_file", lambda *a, **k: (_ for _ in ()).throw(SafetensorError("x")))
    with pytest.raises(SafetensorError):
        cache.save("v", torch.zeros(2, 3, 4))


def test_standard_output_on_a_full_disk_is_one_line() -> None:
    assert app_module._system_error_line(OSError(errno.ENOSPC, "No space left on device")) == (
        "No space left on device while writing output: free some space or write elsewhere", 1)


def test_outputs_are_written_through_symlinks_and_pipes_or_devices_are_refused(tmp_path) -> None:
    from s5cli.errors import UserError
    from s5cli.io import atomic_write_text

    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    atomic_write_text(link, "new", follow_symlinks=True)  # an output the user named
    assert link.is_symlink() and real.read_text() == "new"
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "made.json")
    atomic_write_text(dangling, "made", follow_symlinks=True)  # as open() would: the link's target is created
    assert dangling.is_symlink() and (tmp_path / "made.json").read_text() == "made"
    # A cache entry or checkpoint file never follows one: a link planted in a shared folder would have the
    # job overwrite the file it points to. The link is replaced; its target stays as it was.
    victim = tmp_path / "victim.txt"
    victim.write_text("important")
    planted = tmp_path / "entry.safetensors"
    planted.symlink_to(victim)
    atomic_write_text(planted, "tokens")
    assert not planted.is_symlink() and planted.read_text() == "tokens" and victim.read_text() == "important"
    (tmp_path / "to-null.json").symlink_to("/dev/null")
    atomic_write_text(tmp_path / "to-null.json", "x")  # not followed: the link is replaced, /dev/null untouched
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")
    (tmp_path / "null2.json").symlink_to("/dev/null")
    with pytest.raises(UserError, match=r"null2\.json is a device"):  # followed, it is the device
        atomic_write_text(tmp_path / "null2.json", "x", follow_symlinks=True)
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match=r"pipe\.json is a pipe, .* or - where the option takes it"):
        atomic_write_text(fifo, "x")
    assert fifo.exists() and not fifo.is_file()
    with pytest.raises(UserError, match="/dev/null is a device"):
        atomic_write_text("/dev/null", "x")
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")
    result = CliRunner().invoke(app, ["recipes", "cp", "synthetic", "/dev/null", "--force"])
    assert result.exit_code == 2 and "/dev/null is a device" in _one_line(result.output)
    result = CliRunner().invoke(app, ["recipes", "cp", "synthetic", "/dev/null"])  # not "pass --force" first
    assert result.exit_code == 2 and "recipes cp /dev/null is a device" in _one_line(result.output)
    mine = tmp_path / "mine.yaml"
    (tmp_path / "mine-link.yaml").symlink_to(mine)
    result = CliRunner().invoke(app, ["recipes", "cp", "synthetic", str(tmp_path / "mine-link.yaml"), "--force"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "mine-link.yaml").is_symlink() and "dataset: synthetic" in mine.read_text()


@pytest.mark.parametrize("stream", ["/dev/stdout", "/dev/stderr", "/proc/self/fd/1"])
def test_a_standard_stream_given_as_an_output_file_points_at_dash(stream: str, tmp_path) -> None:
    """Redirected to a file, /dev/stdout was taken for that file: "not a .json file ... write to e.g.
    /dev/metrics.json", which created a file in /dev. Refused up front, naming `-`."""
    from s5cli.errors import UserError
    from s5cli.io import check_output_file

    with pytest.raises(UserError) as error:
        check_output_file(stream, "--json", "metrics.json")
    assert str(error.value) == (f"--json {stream} is a standard stream, which s5cli does not write into (it writes "
                                "whole files atomically): give a file path, or - where the option takes it for "
                                "standard output")
    result = CliRunner().invoke(app, ["eval", "-c", str(tmp_path / "none"), "--json", stream])
    assert result.exit_code == 2 and f"--json {stream} is a standard stream" in _one_line(result.output)
    fifo = tmp_path / "out.json"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match=r"out\.json is a pipe, which s5cli does not write into"):
        check_output_file(fifo, "--json", "metrics.json")
    check_output_file(tmp_path / "metrics.json", "--json", "metrics.json")  # a plain new file is fine


def test_a_stop_that_kept_its_work_is_not_reported_as_an_error(monkeypatch, tmp_path) -> None:
    """Ctrl-C or SIGTERM after which a checkpoint or partial results were kept: "stopped:", exit 130."""
    import s5cli.io
    from s5cli.errors import Interrupted

    def stopped(*args, **kwargs):
        raise Interrupted("interrupted at step 5; checkpoint saved to runs/x/checkpoints/step-0000005")

    monkeypatch.setattr(s5cli.io, "atomic_write_bytes", stopped)
    result = CliRunner().invoke(app, ["recipes", "cp", "synthetic", str(tmp_path / "mine.yaml")])
    assert result.exit_code == 130
    assert _one_line(result.output) == "stopped: interrupted at step 5; checkpoint saved to runs/x/checkpoints/step-0000005"
