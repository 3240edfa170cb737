"""The `s5` command line: one Typer app whose subcommands each live in their own module.

Command modules import torch and the models inside their functions, never at import time, so that
`s5 --help` answers instantly.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import traceback
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import click
import typer
import typer.core

from s5cli import __version__
from s5cli.cli import benchmark, cache, evaluate, extract, finetune, pretrain, push, recipes, visualize_mask
from s5cli.cli.console import print_error, print_stopped
from s5cli.cli.help_text import USAGE_ERRORS, PlainFlagCommand, PlainFlagGroup, command_help, flag
from s5cli.errors import Interrupted, RunFailure, Terminated, UserError
from s5cli.stop_signals import default_action_in_child, signal_of, stop_outcome
from s5cli.torchrun_env import launched_by_torchrun, world_size

# Where the root context keeps the command line as typed (`_dash_file_hint` looks for file names in it).
_ARGS_KEY = "s5cli.args"


class _ErrorReportingGroup(PlainFlagGroup):
    """Turns `UserError`/`RunFailure` raised anywhere in a command into one red line and an exit code.

    Command-line mistakes that click itself catches (`--frames 0`, an unknown option or command) get the
    same one red line instead of Typer's boxed panel, so every user mistake looks alike.
    """

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        given = list(args)  # as typed: parsing consumes the list
        try:
            ctx = super().make_context(info_name, args, parent=parent, **extra)
        except USAGE_ERRORS as error:
            _report_usage_error(error, given)
        ctx.meta[_ARGS_KEY] = given  # meta is shared with the subcommand's context
        return ctx

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except USAGE_ERRORS as error:  # a subcommand's own arguments
            _report_usage_error(error, ctx.meta.get(_ARGS_KEY, ()))
        except (UserError, RunFailure) as error:
            if _debug_requested(ctx):  # the traceback as well, same exit code (scripts branch on it)
                traceback.print_exc()
            if isinstance(error, Interrupted):  # asked for, and something was kept: not a failure to report
                print_stopped(str(error))
            else:
                print_error(str(error))
            raise typer.Exit(code=error.exit_code) from None
        except KeyboardInterrupt as error:
            word, code = stop_outcome(signal_of(error))
            print_error(word)
            raise typer.Exit(code=code) from None
        except (OSError, MemoryError, RuntimeError) as error:
            reported = _system_error_line(error)
            if reported is None:
                raise
            if _debug_requested(ctx):
                traceback.print_exc()
            print_error(reported[0])
            raise typer.Exit(code=reported[1]) from None


# What the user can do about a file-system error, by errno: the path is theirs to change (exit code 2).
_PATH_FIXES = {
    errno.EACCES: "check its permissions or choose another path",
    errno.EPERM: "check its permissions or choose another path",
    errno.EROFS: "the file system is read-only: choose another path",
    errno.EISDIR: "it is a folder where a file is needed: name a file",
    errno.ENOTDIR: "part of the path is a file where a folder is needed: choose another path",
    errno.EEXIST: "something is in the way (a file where a folder is needed?): choose another path",
    errno.ENOENT: "check the path",
    errno.ENAMETOOLONG: "a name in the path is too long: use a shorter name",
}


_FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


def _system_error_line(error: BaseException) -> tuple[str, int] | None:
    """One line and an exit code for an OSError that names a file, or for running out of memory; None otherwise.

    Why here: such errors come from deep inside a job (a cache folder that turns out read-only, a file
    where a folder belongs) long after the up-front checks; the file name and the reason are what the
    user needs, not a traceback. Other OSErrors (no file name) stay tracebacks: they are not the user's.
    """
    # torch reports a failed CPU allocation as a RuntimeError ("DefaultCPUAllocator: can't allocate memory"),
    # and CUDA's as torch.OutOfMemoryError (a RuntimeError too): the same mistake as a MemoryError.
    out_of_memory = isinstance(error, RuntimeError) and (
        "can't allocate memory" in str(error) or type(error).__name__ == "OutOfMemoryError")
    if isinstance(error, MemoryError) or out_of_memory:
        detail = " ".join(str(error).split())[:200] or "allocation failed"
        return f"out of memory ({detail}): ask for less (fewer frames, a smaller size or batch)", 1
    if isinstance(error, OSError) and error.filename is None and error.errno in _FULL_DISK:
        # A write to an open stream (standard output redirected to a full disk): no file name to give.
        return f"{error.strerror or 'no space left'} while writing output: free some space or write elsewhere", 1
    if not isinstance(error, OSError) or error.filename is None:
        return None
    reason = error.strerror or type(error).__name__
    fix = _PATH_FIXES.get(error.errno)
    if fix is None:  # no space left, I/O error: the run failed, not the command line
        return f"{error.filename}: {reason}", 1
    return f"{error.filename}: {reason} ({fix})", 2


def _report_usage_error(error: Any, args: Sequence[str] = ()) -> NoReturn:
    """One red line naming the problem and the help to read; exit code 2 (click's own for usage errors)."""
    if type(error).__name__ == "NoArgsIsHelpError":
        raise error  # `s5 finetune` alone prints the help, which is what click does with it
    command = error.ctx.command_path if error.ctx is not None else "s5"
    message = " ".join(error.format_message().split())
    if (hint := _dash_file_hint(error, args)) is not None:
        print_error(f"{message} ({hint})")
        raise typer.Exit(code=error.exit_code)
    if message.startswith("No such option: --debug") and command != "s5":
        # --debug belongs to `s5` itself (every command's tracebacks), so it goes before the command.
        subcommand = command.split(" ", 1)[1]
        print_error(f"--debug goes before the command: s5 --debug {subcommand} ...")
        raise typer.Exit(code=error.exit_code)
    print_error(f"{message} (see `{command} --help`)")
    raise typer.Exit(code=error.exit_code)


def _dash_file_hint(error: Any, args: Sequence[str]) -> str | None:
    """How to pass a file whose name click took for options, when the unknown option comes from such a file
    in the working directory; None otherwise.

    Why: 161 LVU YouTube ids begin with '-', and `s5 visualize-mask -e6lEsIUf3U.mp4` answered only "No such
    option: -e", which does not say that the video was read as options. Any usage error, not only an unknown
    option: `-cAbc.mp4` is `-c Abc.mp4` to click (an option taking a value), which then misses the video."""
    if error.ctx is None or error.ctx.parent is None:  # `s5 -x.mp4`: no command takes a file there
        return None
    option = (getattr(error, "option_name", None) or "").lstrip("-")  # NoSuchOption's (Typer's copy too)
    for arg in args:
        if len(arg) > 1 and arg.startswith("-") and option in arg and os.path.isfile(arg):
            return f"a file named {arg}? pass it as ./{arg}, or after -- at the end of the command"
    return None


def _debug_requested(ctx: click.Context) -> bool:
    obj = ctx.obj if isinstance(ctx.obj, dict) else {}
    return bool(obj.get("debug"))


app = typer.Typer(
    name="s5",
    cls=_ErrorReportingGroup,
    help=command_help(
        """Selective structured state-spaces (S5) for long-form video.

        Typical session:

          s5 finetune recipes/synthetic.yaml          # train on the bundled task
          s5 eval --checkpoint runs/synthetic         # test-split metrics
          s5 visualize-mask movie.mp4 --out mask.gif  # which tokens S5 keeps
          s5 benchmark --frames 60 --compare vit      # speed and memory
        """
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"s5cli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: bool = flag(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = flag(False, "--debug", help="Show full tracebacks for errors."),
) -> None:
    """Selective structured state-spaces (S5) for long-form video."""
    ctx.obj = {"debug": debug}
    _refuse_torchrun_for_one_process_commands(ctx.invoked_subcommand, os.environ)


# The commands that split their work over torchrun's processes; every other one runs in one process.
MULTI_PROCESS_COMMANDS = frozenset({"pretrain", "finetune", "extract"})


def _refuse_torchrun_for_one_process_commands(command: str | None, env: Mapping[str, str]) -> None:
    """UserError when torchrun started several copies of a command that runs in one process.

    Why: `torchrun --nproc-per-node 2 -m s5cli eval` ran the evaluation twice; each process extracted its
    share of the missing videos, scored the split without the other share (counted "missing", exit 0) and
    both printed (two JSON documents on stdout) or wrote the same --json file.
    """
    if command is None or command in MULTI_PROCESS_COMMANDS or not launched_by_torchrun(env):
        return
    world = world_size(env)
    raise UserError(f"s5 {command} runs in one process, and torchrun started {world} (WORLD_SIZE={world}): run it "
                    f"without torchrun (only {', '.join(sorted(MULTI_PROCESS_COMMANDS))} use several processes)")


for _name, _function, _needs_args in (
    ("pretrain", pretrain.pretrain, True),
    ("finetune", finetune.finetune, True),
    ("eval", evaluate.evaluate, False),
    ("extract", extract.extract, True),
    ("visualize-mask", visualize_mask.visualize_mask, True),
    ("benchmark", benchmark.benchmark, False),
    ("push", push.push, True),
):
    app.command(_name, cls=PlainFlagCommand, help=command_help(_function.__doc__), no_args_is_help=_needs_args)(
        _function
    )
app.add_typer(recipes.app, name="recipes")
app.add_typer(cache.app, name="cache")


def main() -> None:
    """Console-script entry point (`s5`, `python -m s5cli`, `torchrun -m s5cli`).

    A process that took part in a torchrun group ends without interpreter shutdown, which can abort it
    after a finished run (`distributed.exit_without_finalizing` says why).
    """
    _terminate_like_interrupt()
    try:
        app(prog_name="s5")
    except SystemExit as stop:
        # Looked up, not imported: a command that never loaded it never joined a group (and `s5 --help`
        # should not pay for importing torch on its way out).
        distributed = sys.modules.get("s5cli.train.distributed")
        if distributed is not None and distributed.left_process_group():
            distributed.exit_without_finalizing(stop.code)
        raise


def _terminate_like_interrupt() -> None:
    """SIGTERM (`kill`, `timeout`, a batch scheduler's preemption) ends a command the way Ctrl-C does.

    Why: by default SIGTERM kills the process on the spot, so a training run lost the steps since its last
    checkpoint and a half-written output stayed behind as a temporary file. Raised as `Terminated` (a
    KeyboardInterrupt) in this process only: training then saves a checkpoint after the current step,
    outputs are cleaned up, and the exit code is 143 (128 + SIGTERM). Child processes forked later (data
    loader workers) get the default action back, so they still end when terminated.
    """
    main_pid = os.getpid()

    def on_sigterm(signum: int, frame: Any) -> None:
        if not default_action_in_child(main_pid, signum):
            raise Terminated()

    with contextlib.suppress(ValueError):  # not the main thread (an embedding application): its own handling
        signal.signal(signal.SIGTERM, on_sigterm)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
