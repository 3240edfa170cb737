"""The parent's handle on one `s5 benchmark` worker process, and the `Measurement` its events fill in.

Apart from `runner` (which workers run when, and in what order) because talking to one worker is its
own job: commands down a socket, events read back by a thread so that every wait can time out, the
worker's memory watched against its limit from outside, and a clean kill however the worker ended.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from s5cli.benchmark.measure import format_bytes, read_vm_status
from s5cli.benchmark.worker_process import start_worker
from s5cli.benchmark.workload import Workload

OK, OVER_BUDGET, ERROR = "ok", "over budget", "error"
_POLL_S = 0.05
_GRACE_S = 1.0  # pipe and scheduling latency allowed on top of a time budget before the parent kills


@dataclass
class Measurement:
    """Everything measured for one (model, mode, frames): raw step times and peaks, or why there are none."""

    workload: Workload
    status: str = OK
    reason: str | None = None
    times: list[float] = field(default_factory=list)
    peaks: list[int] = field(default_factory=list)  # bytes above the baseline, one per timed step
    warmup_times: list[float] = field(default_factory=list)
    warmup_peaks: list[int] = field(default_factory=list)
    memory_peaks: list[int] = field(default_factory=list)  # steps of the separate memory run (the reported figure)
    memory_info: dict[str, Any] = field(default_factory=dict)  # the memory run's "built" event (allocator settings)
    info: dict[str, Any] = field(default_factory=dict)  # params, baseline_bytes, memory_method, threads, ...
    process_medians: list[float] = field(default_factory=list)  # median step of each timing process, in order
    memory_error: str | None = None  # why the memory run gave no figure, where that did not fail the row
    interrupted: bool = False  # a stop (Ctrl-C, SIGTERM) ended its group: the steps finished before it

    def fail(self, status: str, reason: str) -> None:
        """Mark this measurement as not completed (keeps what was measured before)."""
        self.status, self.reason = status, reason


def _death_reason(code: int | None, last_line: str | None) -> str:
    """Why a worker ended unasked: a signal by its name (multiprocessing reports it as a negative exit code,
    which read "exited with code -15"), else the exit code; with the last line it printed, if any."""
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"worker was killed by {name}" + (f": {last_line}" if last_line else "")
    tail = last_line or "no message (anything it printed before it started went to this process's stderr)"
    return f"worker exited with code {code}: {tail}"


def _time_out_reason(expected: str, timeout: float, cold: str | None) -> str:
    """Why a worker was stopped for time. A model not built in time says so: it read "step ran past the
    600 s budget", also in runs without --time-budget."""
    if expected == "built":
        return f"time: building the model took longer than {timeout:g} s (stopped)"
    limit = f"{timeout:g} s limit of a {cold} step" if cold else f"{timeout:g} s budget"
    return f"time: step ran past the {limit} (stopped)"


class WorkerHandle:
    """A running worker process with a line queue fed by a reader thread (so reads can time out)."""

    def __init__(self, workload: Workload, memory_budget: int | None, measurement: Measurement | None = None,
                 *, fresh: bool = False, memory_limit: str | None = None):
        """`memory_budget`: the bytes the worker is stopped at (`workload.memory_budget`, which the worker
        checks itself, should be the same); `memory_limit` names that limit in the reason ("budget 2.00 GiB")."""
        # A timing worker adds its steps to the model's one Measurement, which outlives it (`processes`).
        self.measurement = measurement if measurement is not None else Measurement(workload)
        self.memory_budget = memory_budget
        self.memory_limit = memory_limit or f"budget {format_bytes(memory_budget)}"
        started = start_worker(workload.to_json(), fresh=fresh)
        self.process, self._channel, self._log = started.process, started.channel, started.log
        # A handle on this very process, to signal it even when its exit cannot be seen (its forkserver
        # gone: multiprocessing then reports it exited with 255) without the risk of a reused pid.
        self._pidfd: int | None = None
        with contextlib.suppress(AttributeError, OSError):  # pidfds: Linux 5.3+
            self._pidfd = os.pidfd_open(self.process.pid)
        self._commands = self._channel.makefile("w", encoding="utf-8")
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.log_tail: deque[str] = deque(maxlen=20)
        self._events_reader = threading.Thread(target=self._read_events, daemon=True)
        self._log_reader = threading.Thread(target=self._read_log, daemon=True)
        for reader in (self._events_reader, self._log_reader):
            reader.start()
        self.baseline = 0
        self.timed_out = False  # stopped for time (the memory run forgives that: `runner._measure_memory`)

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def _read_events(self) -> None:
        # However reading ends (the worker's end closed, or reset when it died with a command unread, or
        # `kill` shut the socket), `wait` must learn it: the None below is how it notices a dead worker.
        try:
            with self._channel.makefile("r", encoding="utf-8", errors="replace") as events:
                for line in events:
                    self.lines.put(line)
        except (OSError, ValueError):
            pass
        finally:
            self.lines.put(None)

    def _read_log(self) -> None:
        with contextlib.suppress(OSError, ValueError), \
                self._log.makefile("r", encoding="utf-8", errors="replace") as lines:
            for line in lines:
                self.log_tail.append(line.rstrip())

    @property
    def alive(self) -> bool:
        return self.measurement.status == OK

    def send(self, command: str) -> None:
        """Write one command line; a dead worker is reported by the next `wait`."""
        try:
            self._commands.write(command + "\n")
            self._commands.flush()
        except (BrokenPipeError, OSError, ValueError):  # ValueError: already closed by `kill`
            pass

    def wait(self, expected: str, timeout: float | None, *, cold: str | None = None) -> dict[str, Any] | None:
        """Next event of kind `expected`; None (with the measurement marked) on timeout, death or error.

        `timeout` is the time budget a finished step is judged by, unless `cold` names a cold step ("warm-up",
        "memory run"): those are slower by design (first run, or the memory run's allocator setting), so one
        is only stopped when it runs past `timeout` (a hang, not a slow step), never judged by its seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout + _GRACE_S
        while True:
            try:
                line = self.lines.get(timeout=_POLL_S)
            except queue.Empty:
                line = ""
            if line is None:
                self._died()
                return None
            if line:
                event = json.loads(line)
                kind = event.get("event")
                if kind == expected:
                    # The worker's own clock decides (no pipe latency); the deadline below is the backstop.
                    if cold is None and timeout is not None and event.get("seconds", 0.0) > timeout:
                        self.timed_out = True
                        self.stop(OVER_BUDGET, f"time: step took {event['seconds']:.3g} s > budget {timeout:g} s")
                        return None
                    return event
                if kind == "over_budget":
                    what = event.get("reason", "memory")
                    peak = event.get("peak_bytes")
                    detail = f"peak {format_bytes(peak)} > {self.memory_limit}" if peak else what
                    self.stop(OVER_BUDGET, f"{what}: {detail}" if peak else detail)
                    return None
                if kind == "error":
                    self.stop(ERROR, event.get("message", "worker error"))
                    return None
                continue  # an event we do not wait for (e.g. "done")
            if self.memory_budget is not None and self.baseline:
                rss = read_vm_status(self.process.pid).get("VmRSS", 0)
                if rss - self.baseline > self.memory_budget:
                    self.stop(OVER_BUDGET, f"memory: {format_bytes(rss - self.baseline)} > {self.memory_limit} "
                                           "(stopped)")
                    return None
            if deadline is not None and time.monotonic() > deadline:
                self.timed_out = True
                self.stop(OVER_BUDGET, _time_out_reason(expected, timeout, cold))
                return None

    def _died(self) -> None:
        self.process.join()
        code = self.process.exitcode
        if code in (-signal.SIGKILL, 137):
            self.stop(OVER_BUDGET, "killed by the operating system (out of memory?)")
        else:
            self._log_reader.join(timeout=5)  # what it printed last may still be on its way
            last = next((line for line in reversed(self.log_tail) if line.strip()), None)
            self.stop(ERROR, _death_reason(code, last))

    def stop(self, status: str, reason: str) -> None:
        """Mark the measurement and end the process."""
        if self.measurement.status == OK:
            self.measurement.fail(status, reason)
        self.kill()

    def kill(self) -> None:
        """End the worker process (no-op when it has exited) and close this side of its sockets."""
        if self._pidfd is not None:
            with contextlib.suppress(ProcessLookupError):  # it has exited: nothing to end
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        elif self.process.exitcode is None:
            self.process.kill()
        self.process.join()
        # Shut down, not only closed: the readers' files hold the sockets open (and without a pidfd a
        # worker whose exit could not be seen reads end-of-file and leaves by itself).
        for end in (self._channel, self._log):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
        for reader in (self._events_reader, self._log_reader):
            reader.join(timeout=5)
        with contextlib.suppress(OSError, ValueError):
            self._commands.close()
        self._channel.close()
        self._log.close()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def quit(self) -> None:
        """Ask a healthy worker to exit, kill it if it does not."""
        self.send("quit")
        self.process.join(timeout=30)
        self.kill()
