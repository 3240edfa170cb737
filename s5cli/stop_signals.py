"""Ctrl-C and SIGTERM: what the CLI says and exits with, and how forked children keep the default action
or leave the signals to their owner.

Both stop a command the same way (training saves a checkpoint after the step, outputs are cleaned up);
only the word and the exit code differ: "interrupted" and 130 for Ctrl-C (SIGINT), "terminated" and 143
for SIGTERM, 128 + the signal number as shells report a signal's death.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

from s5cli.errors import Terminated

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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


@contextlib.contextmanager
def stop_signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back from this thread for the block; one that came meanwhile arrives as it ends.

    Why: processes forked in the block (DataLoader workers) start with them blocked, so a process group's
    signal that lands before a worker has set its own handling (`ignore_stop_signals`) waits for it instead
    of killing the worker through the owner's inherited handler ("DataLoader worker exited unexpectedly",
    exit 1, no stop checkpoint). Without `pthread_sigmask` (Windows) nothing is held.
    """
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def ignore_stop_signals() -> None:
    """Ignore Ctrl-C and SIGTERM in this process (a loader worker), then take back the ones a fork inside
    `stop_signals_held` started blocked: one that came in between is dropped with the ignored signal."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
