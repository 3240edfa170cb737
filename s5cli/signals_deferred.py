"""Ctrl-C and SIGTERM deferred past code that must not be interrupted: noted while it runs, then raised
again once it is done, where Python stops the command the usual way (training's stop checkpoint, exit 130
or 143)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

from s5cli.stop_signals import STOP_SIGNALS


@contextlib.contextmanager
def stop_signals_deferred() -> Iterator[None]:
    """Run the block with the Python handlers of Ctrl-C and SIGTERM replaced by ones that only note the
    signal; once the handlers are back, the first one noted is raised again. The same signal a second time
    runs its own handler at once (a user who presses Ctrl-C twice means it).

    Why not `pthread_sigmask`: it blocks a signal for the calling thread only, and the kernel then hands a
    `kill` to another thread (torch's OpenMP pool, a decode thread), whose C-level handler still makes the
    main thread run the Python handler at its next bytecode, inside the block. No-op off the main thread
    (only it can set handlers, and only it runs them) and for a signal without a Python handler (its
    default action, or ignored).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[int] = []
    previous: dict[int, Any] = {}

    def note(signum: int, frame: Any) -> None:
        if signum in noted:  # asked twice: stop now, in the block (a hung import would need kill -9)
            previous[signum](signum, frame)
            return
        noted.append(signum)

    try:
        # One at a time, each recorded as it is swapped: a signal between two swaps meets its own handler,
        # and `finally` puts back exactly those swapped.
        for signum in STOP_SIGNALS:
            if callable(signal.getsignal(signum)):
                previous[signum] = signal.signal(signum, note)
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(noted):  # a handler that raises (the CLI's) ends the loop there
            signal.raise_signal(signum)
