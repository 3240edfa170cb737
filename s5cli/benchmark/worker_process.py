"""Starting a benchmark worker process: forked from a preloaded server on CPU, spawned where that is unsafe.

Why a forkserver: each worker must be its own fresh process (honest peak memory, see worker.py), but a new
interpreter spends ~2 s of CPU importing torch and a training worker as much again importing
torch._dynamo (torch.optim imports it on first use). multiprocessing's forkserver imports them once and
forks each worker from that state: a worker is ready in ~0.1 s, and it carries nothing of the parent.

Spawned instead (a new interpreter each, as before) when a fork would not be right:
* CUDA workloads: a fork of a process in which anything initialised the CUDA driver cannot use the GPU,
  and a preloaded import may ask `torch.cuda.is_available()`.
* `fresh=True` (`s5 benchmark --processes N`): pooling several timing processes is meant to sample
  independent processes; forks of one server share its address layout and heap.
* A variable that libraries read when they load (`LOAD_TIME_VARIABLES`: OpenMP, BLAS, glibc's allocator,
  Python, torch) changed since the forkserver started: it keeps the environment it started with, and a
  long-lived caller such as a notebook may have set `OMP_NUM_THREADS` or `MALLOC_*` since. Every other
  variable reaches a forked worker as the parent has it now (`run_child` applies the parent's environment).
* The forkserver cannot start (its socket path under a long `$TMPDIR` passes the AF_UNIX limit).
Callers whose main module runs work at import must guard it with `if __name__ == "__main__":`, as for
any multiprocessing program: a worker imports the parent's main module before it starts (the forkserver
imports it once, in `WORKER_PRELOAD`). The forkserver is one per process: `set_forkserver_preload` applies
to whatever else in the process uses it, and if something else started it first, workers are still its
forks, only without the preloads (each then imports torch itself) and the environment check compares
with the environment of its first use here, not of its start.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import multiprocessing.process
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from s5cli.benchmark.worker import run_child

# What the forkserver imports once for every CPU worker it forks; first, what makes it ignore Ctrl-C while it
# imports the rest (its module docstring says why). "__main__" is imported before any of them whatever its
# place (multiprocessing does so): a Ctrl-C while the forkserver imports `s5` (~0.2 s) still reaches it.
WORKER_PRELOAD = ["s5cli.benchmark.forkserver_ignores_ctrl_c", "__main__", "torch", "torch._dynamo",
                  "s5cli.benchmark.worker", "s5cli.models.registry"]
WORKER_NAME = "s5cli-benchmark-worker"

# Prefixes of environment variables read when a library loads or a process starts (so in the forkserver,
# before any worker exists): a change to one of them needs a new interpreter. Others are read when used.
# CUDA's and Triton's do not matter here (CUDA workers are spawned), nor torch's TORCHINDUCTOR_* (read when
# compiling; torch sets TORCHINDUCTOR_CACHE_DIR itself in a process that compiled a kernel).
LOAD_TIME_VARIABLES = ("OMP_", "KMP_", "GOMP_", "MKL_", "OPENBLAS_", "MALLOC_", "GLIBC_TUNABLES", "LD_",
                       "PYTHON", "TORCH_", "PYTORCH_")
# The load-time variables this process had when it first used the forkserver, which started with them.
# Module state because the forkserver itself is per process (multiprocessing keeps one).
_forkserver_environment: dict[str, str] | None = None


@dataclass
class StartedWorker:
    """A started worker process and this side of its two sockets."""

    process: multiprocessing.process.BaseProcess
    channel: socket.socket  # commands to the worker, its JSON events back
    log: socket.socket  # everything the worker prints (its stdout and stderr)


def worker_context(device: str, *, fresh: bool = False) -> multiprocessing.context.BaseContext:
    """The multiprocessing context a worker for `device` starts from (why which: the module docstring)."""
    global _forkserver_environment
    spawn = multiprocessing.get_context("spawn")
    if fresh or device.startswith("cuda") or "forkserver" not in multiprocessing.get_all_start_methods():
        return spawn
    environment = {name: value for name, value in os.environ.items() if name.startswith(LOAD_TIME_VARIABLES)}
    if _forkserver_environment is None:
        _forkserver_environment = environment
    elif environment != _forkserver_environment:
        return spawn
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(WORKER_PRELOAD)
    return context


def start_worker(workload_json: dict[str, Any], *, fresh: bool = False) -> StartedWorker:
    """Start `run_child` for the workload (see `start_process`)."""
    channel, their_channel = socket.socketpair()
    log, their_log = socket.socketpair()
    try:
        process = start_process(run_child, (workload_json, their_channel, their_log, dict(os.environ)),
                                str(workload_json.get("device", "cpu")), fresh=fresh)
    except BaseException:
        for end in (channel, log):
            end.close()
        raise
    finally:
        their_channel.close()  # the child has its own copies; ours would keep the sockets open after it ends
        their_log.close()
    return StartedWorker(process, channel, log)


def start_process(target: Callable[..., Any], args: tuple[Any, ...], device: str, *,
                  fresh: bool = False) -> multiprocessing.process.BaseProcess:
    """A started daemon process running target(*args), from `worker_context`; spawned instead when the
    forkserver cannot start (its socket path under a long $TMPDIR passes the AF_UNIX limit)."""
    context = worker_context(device, fresh=fresh)
    try:
        return _start(context, target, args)
    except OSError:
        if context.get_start_method() != "forkserver":
            raise
        return _start(multiprocessing.get_context("spawn"), target, args)


def _start(context: multiprocessing.context.BaseContext, target: Callable[..., Any],
           args: tuple[Any, ...]) -> multiprocessing.process.BaseProcess:
    process = context.Process(target=target, args=args, name=WORKER_NAME, daemon=True)
    process.start()
    return process


def worker_pids() -> list[int]:
    """Process ids of this process's live benchmark workers (tests check that none is left behind).

    Only workers: other children of a long-lived process (multiprocessing's resource tracker, a
    Manager another test started) are not the benchmark's to end."""
    return [child.pid for child in multiprocessing.active_children() if child.name == WORKER_NAME]
