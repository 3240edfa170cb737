"""A scripted stand-in for the benchmark worker, for tests of the parent's mechanics (budgets, cold steps,
deaths) without real models or real durations.

Why through the real `run_child` and forkserver: the parent's side (`WorkerHandle`, its reader threads,
its kill) is what the tests are about, so only `serve` is replaced. The script travels in an environment
variable, which `run_child` applies in the child: per model label, the seconds each kind of step reports
("warmup", "step", "memory" for a memory-run step), or "hang" for a step that never ends; "build": "hang"
for a model that is never built; "<kind>_bytes" for the peak a kind of step reports (else `PEAK_BYTES`).
As `worker.serve` does, a step whose peak passes the workload's `memory_budget` ends the worker with an
"over_budget" event.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Iterable
from typing import IO, Any

SCRIPT_ENV = "S5CLI_TEST_FAKE_WORKER"
PEAK_BYTES = {"step": 500, "warmup": 600, "memory": 1000}


def use_fake_workers(monkeypatch: Any, script: dict[str, dict[str, Any]]) -> None:
    """Make every CPU worker started from now on (in this test) follow `script`."""
    from s5cli.benchmark import worker_process

    monkeypatch.setenv(SCRIPT_ENV, json.dumps(script))
    monkeypatch.setattr(worker_process, "run_child", run_fake_child)


def stop_in_round(monkeypatch: Any, round_number: int) -> None:
    """Make the benchmark's `round_number`-th round of steps raise KeyboardInterrupt (a Ctrl-C there)."""
    from s5cli.benchmark import runner

    real_round, calls = runner._round, []

    def stopped(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == round_number:
            raise KeyboardInterrupt
        return real_round(*args, **kwargs)

    monkeypatch.setattr(runner, "_round", stopped)


def run_fake_child(workload_json: dict[str, Any], channel: Any, log: Any,
                   environment: dict[str, str] | None = None) -> None:
    """The real `run_child`, with `serve` replaced by `fake_serve` (in the child only)."""
    from s5cli.benchmark import worker

    worker.serve = fake_serve
    worker.run_child(workload_json, channel, log, environment)


def fake_serve(workload: Any, commands: Iterable[str], out: IO[str]) -> int:
    """Answer like `worker.serve`, with the scripted seconds instead of running a model."""
    script = json.loads(os.environ[SCRIPT_ENV])[workload.label]
    if script.get("build") == "hang":
        time.sleep(3600)
    _emit(out, "built", params=1, build_seconds=0.0, build_peak_bytes=0, baseline_bytes=0, memory_method="fake",
          memory_released=False, large_blocks_mapped=False, memory_run=workload.memory_run, threads=1,
          pid=os.getpid(), cuda_graph=False, graph_error=None)
    warmups = 0 if workload.memory_run else workload.warmup
    for kind in itertools.chain(["warmup"] * warmups, commands):
        if kind == "quit":
            break
        key = "memory" if workload.memory_run else kind
        seconds = script.get(key, 0.01)
        if seconds == "hang":
            time.sleep(3600)
        peak = script.get(f"{key}_bytes", PEAK_BYTES[key])
        if workload.memory_budget is not None and peak > workload.memory_budget:
            _emit(out, "over_budget", reason="memory", peak_bytes=peak, seconds=seconds)
            return 0
        _emit(out, kind, seconds=seconds, peak_bytes=peak)
    _emit(out, "done")
    return 0


def _emit(out: IO[str], event: str, **fields: Any) -> None:
    out.write(json.dumps({"event": event, **fields}) + "\n")
    out.flush()
