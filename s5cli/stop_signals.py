"""Ctrl-C and SIGTERM: what the CLI says and exits with, and how forked children keep the default action.

Both stop a command the same way (training saves a checkpoint after the step, outputs are cleaned up);
only the word and the exit code differ: "interrupted" and 130 for Ctrl-C (SIGINT), "terminated" and 143
for SIGTERM, 128 + the signal number as shells report a signal's death.
"""

from __future__ import annotations

import os
import signal

from s5cli.errors import Terminated


def stop_outcome(signum: int) -> tuple[str, int]:
    """(word, exit code) for a stop by `signum`: ("interrupted", 130) or ("terminated", 143)."""
    return ("terminated" if signum == signal.SIGTERM else "interrupted"), 128 + signum


def signal_of(stop: KeyboardInterrupt) -> int:
    """The signal a KeyboardInterrupt stands for: SIGTERM for `Terminated`, else SIGINT (Ctrl-C)."""
    return signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT


def default_action_in_child(owner_pid: int, signum: int) -> bool:
    """In a process forked from `owner_pid` (a data loader worker), take `signum`'s default action; True if so.

    Why: a fork inherits the owner's Python handlers, which would keep a terminated worker alive.
    """
    if os.getpid() == owner_pid:
        return False
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    return True
