"""One benchmark worker: builds one model in its own process and times steps of it, reporting JSON lines.

Started by the parent (`s5cli.benchmark.runner`) as a child process (`run_child`, started by
`worker_process`; on CPU a fork of a process that has imported torch once), talking JSON lines over a
socket: it sends `{"event": "built"}`, one `{"event": "warmup"}` per warm-up step, then answers each
`step` line with one `{"event": "step", "seconds": ..., "peak_bytes": ...}` until `quit`. Own process
per model so that peak memory is this model's alone (no allocator caches or high-water marks of another).
By hand: `python -m s5cli.benchmark.worker --workload '{"label": "s5", ...}' --repeat 3` prints the same
events on stdout, followed by a `result` line with the summary.

Memory is "above baseline": the baseline is taken after torch is imported and initialised, before the
model and its input exist, so the peak counts weights, input, optimiser state and activations, as
`torch.cuda.max_memory_allocated` does on a GPU. On CPU the parent takes the memory figure from a second,
separate process per model (`Workload.memory_run`), because during ordinary steps glibc's RSS also holds
memory that is free:
* glibc serves blocks below its dynamic mmap threshold (which climbs to 32 MiB) from the heap, where a
  freed block stays resident until trimmed and is reused by whatever fits next, so a step's RSS peak
  includes fragments of earlier allocations. Nor is that fair between models: S5's half-length
  activations (a few MiB to 32 MiB) land in the heap and fragment it, while S4's full-length ones are
  larger, get mmapped and are returned on free.
* A memory run fixes the threshold at 64 KiB (`mallopt`) before anything is allocated: every tensor of 64
  KiB or more is mapped on allocation and unmapped on free, and the peak is what a step holds at once, for
  every model alike. Why not 1 MiB (until v9): at the default size every activation after the first stage
  is smaller than that, so the heap's fragments still counted (~12 MiB of a 44 MiB training peak) and
  repeated runs of one model moved by 3-8 MiB; at 64 KiB they agree within 0.5 MiB, 16 KiB and 4 KiB give
  the same figures within 1 MiB, and page rounding adds at most 1/16 per block. It has no warm-up, so its
  first step is cold like a user's first clip (inference kernel generation counts); a training run takes a
  second step, which also holds the optimiser state. (Setting the threshold in a process whose heap is
  already fragmented does not help: glibc reuses free heap chunks before it considers mmap.)
Timing processes keep glibc's defaults untouched (a fixed threshold changes how often pages fault, i.e.
the times). Before the baseline and before each warm-up the worker calls `malloc_trim(0)`, so the RSS
the parent watches holds less of what earlier steps freed. Hence also which limit a worker is held to
(`Workload.memory_budget`): a memory run the memory budget, a timing process only a ceiling above it
(`runner.TIMING_MEMORY_CEILING`) against runaways. Without glibc a memory run still runs (cold, nothing
mapped) and says so in its "built" event.

CUDA graphs (`Workload.cuda_graphs`): the step is captured while the model is built and each step replays
it. A replay allocates nothing (its tensors stay in the graph's pool), so a timed step's peak is only what
lives between steps; the reported figure comes from the memory run, which is always an eager step.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import dataclasses
import itertools
import json
import os
import socket
import sys
import time
import traceback
from collections.abc import Iterable, Iterator
from typing import IO, Any

from s5cli.benchmark.measure import PeakRSSProbe, current_rss, summarize
from s5cli.benchmark.workload import Workload, error_summary


class _Memory:
    """Peak memory of one step above the pre-model baseline: VmHWM/RSS on CPU, allocator peak on CUDA."""

    def __init__(self, device: str):
        import torch

        self._torch = torch
        self.cuda = device.startswith("cuda")
        if self.cuda:
            # Every call names the device: without it torch.cuda reads the current device, GPU 0, and a
            # model on cuda:1 measured ~0 bytes (and never tripped --memory-budget).
            self.device = torch.device(device)
            torch.cuda.init()
            torch.empty(1, device=self.device)  # create the context before the baseline
            self.method = "cuda-max-memory-allocated"
            self.baseline = torch.cuda.memory_allocated(self.device)
        else:
            # Initialise the thread pool and BLAS before the baseline: shared by every model, not theirs.
            self.probe = PeakRSSProbe()
            self.method = self.probe.method
            self.baseline = current_rss()

    def take_baseline(self) -> None:
        """Memory in use now becomes the zero of every later reading."""
        if self.cuda:
            self._torch.cuda.synchronize(self.device)
            self.baseline = self._torch.cuda.memory_allocated(self.device)
        else:
            self.baseline = current_rss()

    def start(self) -> None:
        if self.cuda:
            self._torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.probe.start()

    def stop(self) -> int:
        """Peak bytes above the baseline during the window."""
        peak = self._torch.cuda.max_memory_allocated(self.device) if self.cuda else self.probe.stop()
        return max(0, peak - self.baseline)


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MEMORY_RUN_MMAP_THRESHOLD = 1 << 16  # memory runs: blocks from 64 KiB up are mapped and unmapped


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def release_free_memory() -> bool:
    """Return the C heap's free pages to the OS (glibc `malloc_trim(0)`); False where that is unavailable."""
    try:
        _libc().malloc_trim(0)
    except AttributeError:  # no libc, or a libc without malloc_trim (not glibc)
        return False
    return True


def map_large_blocks(nbytes: int = MEMORY_RUN_MMAP_THRESHOLD) -> bool:
    """glibc: serve every block of at least `nbytes` by mmap, returned to the OS on free (glibc's dynamic
    threshold is off from then on); False where unsupported."""
    try:
        return bool(_libc().mallopt(M_MMAP_THRESHOLD, nbytes))
    except AttributeError:
        return False


def _emit(stream: IO[str], event: str, **fields: Any) -> None:
    stream.write(json.dumps({"event": event, **fields}) + "\n")
    stream.flush()


# What an allocation failure says where it has no type of its own: CUDA's "out of memory", torch's CPU
# allocator's "DefaultCPUAllocator: can't allocate memory ... (Cannot allocate memory)" (strerror(ENOMEM)).
_OUT_OF_MEMORY_WORDS = ("out of memory", "can't allocate memory", "cannot allocate memory")


def _is_out_of_memory(error: BaseException) -> bool:
    """An allocation failure, which makes the model over budget rather than broken (a sweep then stops it)."""
    import errno

    import torch

    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return True
    if isinstance(error, OSError) and error.errno == errno.ENOMEM:
        return True
    return any(words in str(error).lower() for words in _OUT_OF_MEMORY_WORDS)


def serve(workload: Workload, commands: Iterable[str], out: IO[str]) -> int:
    """Build, warm up, then answer `step` commands until `quit` or end of input; returns the exit code."""
    import torch

    if workload.threads:
        # Before anything runs: torch sizes its thread pool once. On a shared machine one thread per
        # worker avoids OpenMP barriers waiting on a descheduled sibling thread (10x+ slower small ops).
        torch.set_num_threads(workload.threads)
    memory = _Memory(workload.device)
    budget = workload.memory_budget
    # A memory run maps large blocks before anything large is allocated (see the module docstring).
    mapped = workload.memory_run and not memory.cuda and workload.release_memory and map_large_blocks()
    try:
        _prime(workload)
        released = not memory.cuda and workload.release_memory and release_free_memory()
        memory.take_baseline()
        started = time.perf_counter()
        memory.start()
        prepared = _prepare(workload)
        prepared.synchronize()
        build_peak = memory.stop()
        _emit(out, "built", params=prepared.params, build_seconds=time.perf_counter() - started,
              build_peak_bytes=build_peak, baseline_bytes=memory.baseline, memory_method=memory.method,
              memory_released=released, large_blocks_mapped=mapped, memory_run=workload.memory_run,
              threads=torch.get_num_threads(), pid=os.getpid(), cuda_graph=prepared.graph is not None,
              graph_error=prepared.graph_error)
        warmups = 0 if workload.memory_run else workload.warmup
        for kind in itertools.chain(["warmup"] * warmups, commands):
            if kind == "quit":
                break
            if kind not in ("warmup", "step"):
                _emit(out, "error", message=f"unknown command {kind!r}")
                return 2
            if released and kind == "warmup":
                release_free_memory()
            memory.start()
            prepared.synchronize()
            began = time.perf_counter()
            prepared.run()
            prepared.synchronize()
            seconds = time.perf_counter() - began
            peak = memory.stop()
            if budget is not None and peak > budget:
                _emit(out, "over_budget", reason="memory", peak_bytes=peak, seconds=seconds)
                return 0
            _emit(out, kind, seconds=seconds, peak_bytes=peak)
    except Exception as error:  # the parent reports it as this model's row, the others go on
        if _is_out_of_memory(error):
            _emit(out, "over_budget", reason="out of memory", message=error_summary(error, 300))
            return 0
        traceback.print_exc(file=sys.stderr)
        _emit(out, "error", message=error_summary(error, 300))
        return 1
    _emit(out, "done")
    return 0


def _prepare(workload: Workload):
    """The workload's `PreparedStep`; where CUDA graph capture fails, a fresh eager one that keeps the
    capture's error in `graph_error` (the report then shows this model ran eagerly, and why)."""
    import gc

    import torch

    from s5cli.benchmark.workload import PreparedStep

    prepared = PreparedStep(workload)
    if prepared.graph_error is None:
        return prepared
    error = prepared.graph_error
    del prepared
    gc.collect()
    torch.cuda.empty_cache()
    prepared = PreparedStep(dataclasses.replace(workload, cuda_graphs=False))
    prepared.graph_error = error
    return prepared


def _prime(workload: Workload) -> None:
    """Run the same kind of model on a tiny input first, so the baseline already holds what every size
    shares: imported modules, torch's thread pool, and the code pages of the operators the step touches
    (file-backed pages count in RSS; otherwise a 1 MB model would seem to need 100 MB)."""
    import gc

    from s5cli.benchmark.workload import PreparedStep

    tiny = dataclasses.replace(workload, frames=2, tokens_per_frame=4, dim=16, batch=1, memory_budget=None)
    prepared = PreparedStep(tiny)
    for _ in range(2):
        prepared.run()
    prepared.synchronize()
    del prepared
    gc.collect()


def _commands(lines: Iterable[str]) -> Iterator[str]:
    for line in lines:
        command = line.strip()
        if command:
            yield command


def use_environment(environment: dict[str, str] | None) -> None:
    """Make os.environ exactly `environment` (None: keep it)."""
    if environment is not None and environment != os.environ:
        os.environ.clear()
        os.environ.update(environment)


def run_child(workload_json: dict[str, Any], channel: socket.socket, log: socket.socket,
              environment: dict[str, str] | None = None) -> None:
    """Entry of a worker the runner starts: commands in and events out on `channel`; anything printed
    (stdout too, and a traceback) goes to `log`, which the parent keeps the tail of for its error line.
    `environment`: the parent's, applied first (a forked worker otherwise has its forkserver's)."""
    use_environment(environment)
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:  # None where the parent's stdout or stderr was closed
            stream.flush()
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    log.close()
    # Python's own stdout and stderr, now on the log (None before, when the parent's were closed).
    sys.stdout = sys.stdout or open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stderr = sys.stderr or open(2, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    with channel, channel.makefile("r", encoding="utf-8") as commands, \
            channel.makefile("w", encoding="utf-8") as out:
        code = serve(Workload.from_json(workload_json), _commands(commands), out)
    sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m s5cli.benchmark.worker`."""
    parser = argparse.ArgumentParser(prog="python -m s5cli.benchmark.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--workload", required=True, help="JSON object with the fields of Workload")
    parser.add_argument("--repeat", type=int, default=3, help="timed steps")
    args = parser.parse_args(argv)
    workload = Workload.from_json(json.loads(args.workload))
    # Only our JSON lines may reach stdout: anything a library prints goes to stderr instead.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    events = _Recorder(out)
    code = serve(workload, ["step"] * args.repeat, events)
    times = [e["seconds"] for e in events.events if e["event"] == "step"]
    peaks = [e["peak_bytes"] for e in events.events if e["event"] == "step"]
    result = {"workload": workload.to_json(), "seconds": summarize(times) if times else None,
              "peak_bytes": max(peaks) if peaks else None}
    _emit(out, "result", **result)
    return code


class _Recorder:
    """A text stream that forwards JSON lines and keeps the decoded events."""

    def __init__(self, stream: IO[str]):
        self.stream = stream
        self.events: list[dict[str, Any]] = []

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.strip():
                self.events.append(json.loads(line))
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


if __name__ == "__main__":
    sys.exit(main())
