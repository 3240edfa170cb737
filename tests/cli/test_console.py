"""Messages on a file or pipe stay one line each; on a terminal they wrap at words as Rich does."""

from __future__ import annotations

import io

from s5cli.cli.console import LogFriendlyConsole

MESSAGE = ("supervised s5 (0.08M trainable) on synthetic: 400 train / 100 val clips, device cpu, world 1, "
           "run folder runs/synthetic")


def test_a_log_file_gets_each_message_on_one_line() -> None:
    out = io.StringIO()
    LogFriendlyConsole(file=out, force_terminal=False, width=80).print(MESSAGE)
    assert out.getvalue() == MESSAGE + "\n"


def test_a_terminal_still_wraps_long_messages() -> None:
    out = io.StringIO()
    LogFriendlyConsole(file=out, force_terminal=True, width=80, color_system=None).print(MESSAGE)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and all(len(line) <= 80 for line in lines)
    assert " ".join(line.strip() for line in lines) == MESSAGE
