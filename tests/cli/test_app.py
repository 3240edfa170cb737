"""The `s5` entry point: help, version, and that it works as an installed console script."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from s5cli import __version__
from s5cli.cli.app import app

COMMANDS = ["pretrain", "finetune", "eval", "visualize-mask", "benchmark", "extract", "recipes", "push", "cache"]


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    for command in COMMANDS:
        assert command in result.output


def test_version_prints_package_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"s5cli {__version__}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["finetun"], "error: No such command 'finetun'. Did you mean 'finetune'? (see `s5 --help`)"),
        (["benchmark", "--frames", "abc"], "error: Invalid value for '--frames'"),
        (["visualize-mask", "x.mp4", "--out", "y.gif", "--frames", "0"], "(see `s5 visualize-mask --help`)"),
        (["cache", "ls", "--bogus"], "error: No such option: --bogus (see `s5 cache ls --help`)"),
        # click raises a missing option value without a context: the subcommand is still the one named.
        (["finetune", "r.yaml", "--out"], "error: Option '--out' requires an argument. (see `s5 finetune --help`)"),
        (["cache", "clean", "--key"], "(see `s5 cache clean --help`)"),
        (["--bogus"], "error: No such option: --bogus (see `s5 --help`)"),
    ],
)
def test_command_line_mistakes_are_one_red_line(args: list[str], message: str) -> None:
    """click's own usage errors look like every other user mistake: one line, exit code 2, no panel."""
    result = CliRunner().invoke(app, args, env={"COLUMNS": "80"})
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output


def test_a_command_without_its_arguments_still_prints_its_help() -> None:
    result = CliRunner().invoke(app, ["finetune"])
    assert result.exit_code == 2 and "Usage: s5 finetune" in result.output and "--resume" in result.output


def test_installed_console_script_and_module_entry_point() -> None:
    # The script pip installed beside this interpreter (a venv's bin/ need not be on PATH), else PATH's.
    beside = Path(sys.executable).with_name("s5")
    script = str(beside) if beside.is_file() else shutil.which("s5")
    assert script is not None, "the `s5` console script is missing: install the project with pip"
    for argv in ([script, "--help"], [sys.executable, "-m", "s5cli", "--version"]):
        completed = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        assert completed.returncode == 0, completed.stderr
    assert __version__ in completed.stdout


def test_debug_adds_the_traceback_and_keeps_the_exit_code(tmp_path) -> None:
    """--debug used to re-raise, so the same mistake exited 1 with it and 2 without."""
    missing = str(tmp_path / "missing.yaml")
    plain = CliRunner().invoke(app, ["finetune", missing])
    assert plain.exit_code == 2 and "not found" in plain.output and plain.exception.__class__ is SystemExit
    debug = CliRunner().invoke(app, ["--debug", "finetune", missing])
    assert debug.exit_code == 2 and "Traceback (most recent call last)" in debug.output
    assert "s5cli.errors.UserError: recipe" in debug.output and "error: recipe" in debug.output


class _HardExit(Exception):
    """Stands in for os._exit, which would end the test process."""

    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


@pytest.mark.parametrize(("code", "status", "printed"), [(None, 0, ""), (3, 3, ""), ("stopped: reason", 1, "stopped: reason")])
def test_a_process_that_left_a_torchrun_group_ends_without_interpreter_shutdown(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], code: object, status: int, printed: str
) -> None:
    import os

    from s5cli.cli import app as app_module
    from s5cli.train import distributed

    def command(**_: object) -> None:
        raise SystemExit(code)

    def hard_exit(value: int) -> None:
        raise _HardExit(value)

    monkeypatch.setattr(app_module, "app", command)
    monkeypatch.setattr(os, "_exit", hard_exit)
    monkeypatch.setattr(distributed, "_left_process_group", True)
    with pytest.raises(_HardExit) as ended:
        app_module.main()
    assert ended.value.status == status
    assert capsys.readouterr().err.strip() == printed


def test_a_single_process_run_exits_normally(monkeypatch: pytest.MonkeyPatch) -> None:
    from s5cli.cli import app as app_module
    from s5cli.train import distributed

    def command(**_: object) -> None:
        raise SystemExit(2)

    monkeypatch.setattr(app_module, "app", command)
    distributed.DistContext().close()  # one process: there is no group to leave
    assert not distributed.left_process_group()
    with pytest.raises(SystemExit) as stop:
        app_module.main()
    assert stop.value.code == 2


@pytest.mark.parametrize(("args", "line"), [
    (["finetune", "optim.lr=3e-4", "recipes/synthetic.yaml"],
     "error: override 'recipes/synthetic.yaml' is not key=value (the recipe comes first: s5 COMMAND RECIPE "
     "key=value ...)"),
    (["extract", "synthetic", "--json", "out.json"],
     "error: override 'out.json' is not key=value (if it was meant for --json: `--json FILE` where the command "
     "writes a file, `--json > FILE` where it prints the JSON; its --help says which)"),
    (["eval", "--debug", "-c", "runs/x"], "error: --debug goes before the command: s5 --debug eval ..."),
    (["recipes", "show", "--debug", "synthetic"], "error: --debug goes before the command: s5 --debug recipes show ..."),
])
def test_arguments_in_the_wrong_place_say_where_they_go(args: list[str], line: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert " ".join(result.output.split()) == line


def test_torch_running_out_of_cpu_memory_is_the_out_of_memory_line() -> None:
    from s5cli.cli.app import _system_error_line

    line, code = _system_error_line(RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't "
                                                 "allocate memory: you tried to allocate 4398046511104 bytes."))
    assert code == 1 and line.startswith("out of memory (") and line.endswith("(fewer frames, a smaller size or batch)")
    assert _system_error_line(RuntimeError("shape mismatch")) is None  # other RuntimeErrors stay tracebacks


@pytest.mark.parametrize("args", [["--out", ""], ["train.out_dir=''"], ["--out", " "]])
def test_an_empty_run_folder_is_refused_before_anything_is_written(tmp_path, monkeypatch, args) -> None:
    """typer turns `--out ""` into Path("."): the run went into the working folder."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["finetune", "synthetic", *args, "--quiet"])
    assert result.exit_code == 2, result.output
    assert "names no folder" in result.output or "train.out_dir is empty" in result.output
    assert list(tmp_path.iterdir()) == []


def test_an_empty_device_is_refused_not_taken_for_auto() -> None:
    from s5cli.errors import UserError
    from s5cli.train.distributed import check_device

    with pytest.raises(UserError, match="--device is empty"):
        check_device(" ")
    assert check_device(None).type in ("cpu", "cuda") and check_device("auto") == check_device(None)


@pytest.mark.parametrize("command", ["finetune", "pretrain"])
def test_a_seed_out_of_range_is_named_as_typed(command: str) -> None:
    result = CliRunner().invoke(app, [command, "synthetic", "--seed", "4294967296", "--quiet"])
    assert result.exit_code == 2
    assert "--seed 4294967296 is out of range: use a whole number from 0 to 4294967295" in result.output


@pytest.mark.parametrize("command", [["eval"], ["visualize-mask", "movie.mp4"], ["benchmark"], ["recipes", "ls"]])
def test_torchrun_copies_of_a_one_process_command_are_refused_with_the_fix(monkeypatch, command: list[str]) -> None:
    """`torchrun --nproc-per-node 2 -m s5cli eval` scored the split twice, each copy without the videos the
    other was extracting (counted missing, exit 0), and printed two JSON documents."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert f"s5 {command[0]} runs in one process, and torchrun started 2" in said
    assert "run it without torchrun" in said


def test_only_torchrun_itself_is_refused_and_training_commands_are_not() -> None:
    from s5cli.cli.app import _refuse_torchrun_for_one_process_commands as refuse

    torchrun = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    for command in ("finetune", "pretrain", "extract", None):
        refuse(command, torchrun)  # nothing raised
    refuse("eval", {"WORLD_SIZE": "2"})  # set by hand, no rendezvous: not torchrun
    refuse("eval", {"WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"})


def test_a_file_name_starting_with_a_dash_gets_a_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """161 LVU YouTube ids begin with '-': click read `-e6lEsIUf3U.mp4` as options and said only "No such
    option: -e"."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "-e6lEsIUf3U.mp4").touch()
    result = CliRunner().invoke(app, ["visualize-mask", "-e6lEsIUf3U.mp4", "--out", "x.gif"], env={"COLUMNS": "80"})
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == ["error: No such option: -e (a file named -e6lEsIUf3U.mp4? pass it as ./-e6lEsIUf3U.mp4, or "
                     "after -- at the end of the command)"], result.output
    # No such file: click's own message, as before.
    result = CliRunner().invoke(app, ["visualize-mask", "-x6lEsIUf3U.mp4", "--out", "x.gif"], env={"COLUMNS": "80"})
    assert "error: No such option: -x (see `s5 visualize-mask --help`)" in result.output


def test_a_dash_file_read_as_an_option_with_a_value_gets_the_hint_too(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`-cAbc.mp4` is `-c Abc.mp4` to click (a short option taking a value): the error was "Missing argument
    'video'", with no word of the file. At the top level no command takes a file: no hint there."""
    monkeypatch.chdir(tmp_path)
    for name in ("-cAbc.mp4", "-t5ab.mp4"):
        (tmp_path / name).touch()
        result = CliRunner().invoke(app, ["visualize-mask", name, "--out", "x.gif"], env={"COLUMNS": "80"})
        assert result.exit_code == 2
        assert f"pass it as ./{name}" in " ".join(result.output.split()), result.output
    result = CliRunner().invoke(app, ["-cAbc.mp4"], env={"COLUMNS": "80"})
    assert result.exit_code == 2 and "pass it as" not in result.output
