"""Waiting for another thread in tests by condition, not by a sleep of a guessed length."""

from __future__ import annotations

import time
from collections.abc import Callable

POLL_SECONDS = 0.001


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll `condition` until it holds (True) or `timeout` seconds pass (False).

    Why: a test that sleeps and then asserts that another thread made progress fails whenever the machine
    is slow for that long; one that waits for the progress fails only if it never comes.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True
