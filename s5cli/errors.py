"""One error type for user mistakes, so every command reports them the same way.

A `UserError` is something the user can fix (a bad path, a bad recipe value). The CLI prints its message
as one red line and exits with code 2; no traceback unless `--debug`. Anything else is a bug or a runtime
failure and exits with code 1.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input: reported as one line, exit code 2."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message} ({hint})")

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message} ({self.hint})"


class RunFailure(Exception):
    """A run that started correctly but cannot go on (NaN loss, all inputs skipped): exit code 1.

    `exit_code` overrides the class's code for this one failure: a stop by a signal exits 128 + its number,
    and a failure reported from another rank keeps the code it had there.
    """

    exit_code = 1

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class Interrupted(RunFailure):
    """Ctrl-C after which something useful was kept (a checkpoint, partial results): exit code 130."""

    exit_code = 130


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be so that the same clean-up runs; the CLI exits with 143."""


def first_line(error: BaseException) -> str:
    """The first non-empty line of an error's message, else its class name (one-line reports)."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
