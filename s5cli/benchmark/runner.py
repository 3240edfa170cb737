"""The parent side of `s5 benchmark`: one worker process per model, steps taken in turn, budgets enforced.

Why this shape: each model lives in its own process (honest peak memory); all models of a group are
built and warmed up first, then step r runs the models in an order rotated by r, so a burst of load on a
shared machine hits every model alike and the ratios stay fair; last, a fresh process per model measures
its peak memory alone (why a separate process: see worker.py). The parent never imports torch; on CPU
the workers are forks of a server that imported it once (`worker_process`).
With `processes` > 1 the timing is repeated in that many sets of fresh workers and the steps of all sets
are pooled: a process's speed also depends on its own history (glibc's dynamic mmap threshold decides
which buffers fault their pages in again every step), so one process per model samples that luck once.
On this project's 2-core VM, S4's median step at 60 x 50 x 768 was 76-108 ms over six fresh processes but
93-100 ms over six batches of steps in one process (`benchmarks/process_spread.py`; the spread comes and goes).
A timed step that runs past the time budget (cold steps, warm-ups and memory runs, are only stopped when
they hang: `COLD_STEP_TIMEOUT_S`), a memory run whose peak passes the memory budget, a timing process
past its ceiling (`TIMING_MEMORY_CEILING` times the budget, watched from here too, so a runaway step is
stopped before it takes the machine down), a worker the OS kills, or a CUDA/CPU out-of-memory error all
mark that model "over budget"; the other models go on. Talking to one worker (commands, events, its
memory watched, its end) is `worker_handle`'s job.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

from s5cli.benchmark.measure import available_memory, format_bytes, summarize
from s5cli.benchmark.worker_handle import OK, OVER_BUDGET, Measurement, WorkerHandle
from s5cli.benchmark.workload import Workload

BUILD_TIMEOUT_S = 600.0  # building + priming a model; budgets apply to the steps themselves
# Longest a cold step (a warm-up, or a step of the memory run) may take when --time-budget is set. Why not
# the budget: cold steps are slower by design (first run; the memory run's allocator maps and unmaps every
# block), and one was judged by it: timed steps of 19-30 ms fit 0.12 s, the cold memory run took 0.214 s,
# and the row read "over budget". Only a hang is stopped, after this long.
COLD_STEP_TIMEOUT_S = BUILD_TIMEOUT_S
# Pause before each timed step. Why: after its step a worker's OpenMP threads spin-wait before they sleep
# (libgomp's default), and with its reply and memory reading that took 4-10 ms of CPU within ~20 ms of the
# step's end (60 x 50 x 768 inference, /proc/PID/task/*/schedstat sampled from the parent). Started at
# once, the next model's step shared the machine's two cores with that spinning; on 2026-11-30, four
# paired runs of S5 and S4 alternating (768-d, torch's 2 threads) gave S5 31-41 ms vs 34-46 ms with and
# without a 50 ms pause, and S5/S4 1.44-1.87x against 1.25-1.52x. Five rounds of three models cost ~1 s.
SETTLE_S = 0.05
# With `min_time`, models whose timed steps add up to less keep stepping in extra rounds, at most this many
# steps per model in all: a 10 ms step then gives 50 samples, not 5 (see `run_group`).
MAX_TIMED_STEPS = 50
# Extra rounds also take every model whose median step is at most this many times the slowest short
# model's, so models of similar speed keep alternating and their ratio compares the same stretch of time.
# Through v17 the short models stepped among themselves: on 2026-11-30 S5 took 28 steps and S4 19 at the
# default size, load arrived near the end (S5 31 -> 37-50 ms), S5 stepped on alone through 9 of its
# slow steps, and S5/S4 read 1.49x from the medians where the 19 rounds both took gave 1.58x. A model
# many times slower already has seconds of samples; pairing it would only cost time (the transformer:
# ~2 s a step at the default size).
COMPANION_PACE = 4.0
# A timing process is stopped at this multiple of the memory budget, not at the budget: the memory run's
# peak (the reported figure) is what the budget judges. Why: a timing process keeps glibc's defaults, so
# its peak also holds freed heap blocks (worker.py): at 30 x 16 x 256, training, S5 and S4 reported 17.8
# and 18.8 MiB but peaked at 24.6 and 27.6 MiB in their timed steps, and a 22MB budget marked both over
# it. The ceiling only stops a runaway before it takes the machine down, so on a CPU it is also capped at
# each process's share of the free memory (`timing_memory_limit`).
TIMING_MEMORY_CEILING = 2


Progress = Callable[[str], None]


def run_group(
    workloads: Sequence[Workload],
    repeat: int,
    *,
    processes: int = 1,
    time_budget: float | None = None,
    memory_budget: int | None = None,
    progress: Progress | None = None,
    min_time: float = 0.0,
) -> list[Measurement]:
    """Measure the workloads together: `processes` times, fresh workers built and warmed up in turn, then
    `repeat` rounds in rotating order; the steps of all sets are pooled. Then one memory run per model.

    `min_time`: after the `repeat` rounds, the models whose timed steps in this process add up to less than
    `min_time` seconds go on in extra rounds (still alternating, with the models of similar speed:
    `COMPANION_PACE`), up to `MAX_TIMED_STEPS` steps. Why: five samples of a 30 ms step span a fraction of
    a second, and one burst of load on a shared machine then moves the median (S5/S4 at 60 x 50 x 768 read
    1.14x in one of six runs with five steps each, 1.69-2.66x in the others); a slow model's five steps
    already span seconds.
    """
    say = progress or (lambda _message: None)
    measurements = [Measurement(replace(workload, memory_budget=memory_budget)) for workload in workloads]
    try:
        _time_and_measure_memory(measurements, repeat, processes, time_budget, memory_budget, say, min_time)
    except KeyboardInterrupt as stop:
        _keep_finished_steps(stop, measurements)
        raise
    for measurement in measurements:
        if measurement.status != OK:
            w = measurement.workload
            say(f"{w.label} {w.mode} {w.frames}f: {measurement.status} ({measurement.reason})")
    return measurements


def _time_and_measure_memory(measurements: Sequence[Measurement], repeat: int, processes: int,
                             time_budget: float | None, memory_budget: int | None, say: Progress,
                             min_time: float) -> None:
    """`run_group`'s work: the timing sets, then one memory run per model still within budget."""
    for set_index in range(processes):
        active = [m for m in measurements if m.status == OK]
        if not active:
            break
        label = f"process {set_index + 1}/{processes}: " if processes > 1 else ""
        # Several sets are there to sample independent processes: spawned, not forks of one server.
        _time_in_fresh_workers(active, repeat, set_index * repeat, time_budget, memory_budget,
                               lambda message, label=label: say(label + message), min_time,
                               fresh=processes > 1)
    for measurement in measurements:
        if measurement.status == OK:
            _measure_memory(measurement, time_budget, memory_budget, say)


def _keep_finished_steps(stop: KeyboardInterrupt, measurements: Sequence[Measurement]) -> None:
    """Attach to `stop` what its group finished (`interrupted_measurements`). Why: a run of one group
    stopped after 34 rounds kept nothing, though the README promises what was measured so far. Kept: every
    model with a finished timed step (marked interrupted, no memory figure unless its memory run ended)
    and every model already over budget or failed; a model stopped before its first timed step is left out."""
    kept = []
    for measurement in measurements:
        if measurement.status == OK and not measurement.times:
            continue
        if measurement.status == OK:
            measurement.interrupted = True
            if not measurement.memory_peaks:
                measurement.memory_error = (f"stopped after {len(measurement.times)} timed steps, "
                                            "before its memory run")
        kept.append(measurement)
    stop.s5_benchmark_measurements = [*interrupted_measurements(stop), *kept]  # type: ignore[attr-defined]


def interrupted_measurements(stop: KeyboardInterrupt) -> list[Measurement]:
    """The measurements a stopped `run_group` finished (empty when the stop came from elsewhere)."""
    return list(getattr(stop, "s5_benchmark_measurements", []))


def _time_in_fresh_workers(measurements: Sequence[Measurement], repeat: int, first_round: int,
                           time_budget: float | None, memory_budget: int | None, say: Progress,
                           min_time: float = 0.0, *, fresh: bool = False) -> None:
    """One worker per measurement: build and warm up each, then `repeat` rounds rotated by the round's
    number (counted from `first_round`, so later sets keep rotating), then extra rounds for the workers
    short of `min_time` seconds of timed steps (`run_group`); every worker is ended on return.
    `fresh`: spawned workers (`worker_process.worker_context`)."""
    workers: list[WorkerHandle] = []
    on_cpu = all(m.workload.device == "cpu" for m in measurements)
    ceiling, limit = timing_memory_limit(memory_budget, len(measurements), available_memory() if on_cpu else None)
    try:
        for measurement in measurements:
            timing = replace(measurement.workload, memory_budget=ceiling)
            worker = WorkerHandle(timing, ceiling, measurement, fresh=fresh, memory_limit=limit)
            workers.append(worker)
            _start(worker, time_budget, say)
        alive = [w for w in workers if w.alive]
        counts = {id(w): len(w.measurement.times) for w in workers}

        def own_times(worker: WorkerHandle) -> list[float]:
            return worker.measurement.times[counts[id(worker)]:]

        for round_index in range(repeat):
            timings = _round(alive, first_round + round_index, time_budget)
            say(f"round {round_index + 1}/{repeat}: {', '.join(timings) or 'no model left'}")
        extra = 0
        cap = max(repeat, MAX_TIMED_STEPS)
        while True:
            live = [w for w in alive if w.alive]
            members = extra_round_members([own_times(w) for w in live], min_time, cap)
            if not members:
                break
            _round([live[i] for i in members], first_round + repeat + extra, time_budget)
            extra += 1
        if extra:
            steps = ", ".join(f"{w.measurement.workload.label} {len(own_times(w))}" for w in alive if w.alive)
            say(f"{extra} extra round(s) for --min-time {min_time:g} s; timed steps: {steps}")
        for worker in workers:
            own = own_times(worker)
            if worker.alive and own:
                worker.measurement.process_medians.append(summarize(own)["median"])
            if worker.alive:
                worker.quit()
    finally:
        for worker in workers:
            worker.kill()


def timing_memory_limit(memory_budget: int | None, workers: int = 1,
                        available: int | None = None) -> tuple[int | None, str | None]:
    """The bytes a timing process is stopped at, and the words its reason names them by:
    `TIMING_MEMORY_CEILING` times the budget, but no more than its share (80 %) of the `available` CPU
    memory among the `workers` alive together, and never below the budget.

    Why the share: the default CPU budget already is 80 % of the free memory per model, so twice it let the
    timing processes together grow to 1.6x the free memory, past what the parent could stop before the OS
    killed some process (maybe not the runaway)."""
    if memory_budget is None:
        return None, None
    ceiling = TIMING_MEMORY_CEILING * memory_budget
    share = None if available is None else int(0.8 * available / max(1, workers))
    if share is not None and share < ceiling:
        ceiling = max(memory_budget, share)
        return ceiling, f"{format_bytes(ceiling)}, a timing process's ceiling (its share of the free memory)"
    return ceiling, f"{format_bytes(ceiling)}, a timing process's ceiling ({TIMING_MEMORY_CEILING:g}x the budget)"


def extra_round_members(times: Sequence[Sequence[float]], min_time: float, cap: int) -> list[int]:
    """Which models step in the next extra round (indices into `times`, each model's own timed steps so far).

    None when no model is short of `min_time` seconds (below `cap` steps); otherwise the short ones plus
    their companions: models below the cap whose median step is at most `COMPANION_PACE` times the
    slowest short model's (see `COMPANION_PACE`)."""
    below_cap = [i for i, own in enumerate(times) if len(own) < cap]
    short = [i for i in below_cap if sum(times[i]) < min_time]
    if not short:
        return []
    pace = max((statistics.median(times[i]) for i in short if times[i]), default=0.0)
    return [i for i in below_cap
            if i in short or (times[i] and statistics.median(times[i]) <= COMPANION_PACE * pace)]


def _round(workers: Sequence[WorkerHandle], number: int, time_budget: float | None) -> list[str]:
    """One timed step of each live worker, in the order rotated by `number`; "label seconds" of each step."""
    shift = number % len(workers) if workers else 0
    timings = []
    for worker in [*workers[shift:], *workers[:shift]]:
        if not worker.alive:
            continue
        time.sleep(SETTLE_S)  # the previous step's idle threads stop spinning first (see SETTLE_S)
        worker.send("step")
        event = worker.wait("step", time_budget)
        if event is not None:
            worker.measurement.times.append(event["seconds"])
            worker.measurement.peaks.append(int(event["peak_bytes"]))
            timings.append(f"{worker.measurement.workload.label} {event['seconds']:.3g} s")
    return timings


def cold_step_timeout(time_budget: float | None) -> float | None:
    """How long a warm-up or memory-run step may run: no limit without a time budget (as timed steps), else
    `COLD_STEP_TIMEOUT_S` or the budget if that is longer (a cold step is never held to less)."""
    return None if time_budget is None else max(COLD_STEP_TIMEOUT_S, time_budget)


def memory_run_steps(mode: str) -> int:
    """Steps of a memory run: inference peaks in its cold first step; training's second step also holds AdamW's state."""
    return 2 if mode == "train" else 1


def _measure_memory(measurement: Measurement, time_budget: float | None, memory_budget: int | None,
                    say: Progress) -> None:
    """Peak memory of one model from a fresh process that only measures memory (why: see worker.py).

    Run after every model's timed steps and one model at a time, so no other worker competes for memory.
    Always without a CUDA graph: a replay allocates nothing (its tensors live in the graph's pool, sized
    by the captured step), so the peak of the eager step is the figure, graphed or not.
    """
    memory_workload = replace(measurement.workload, memory_budget=memory_budget, memory_run=True, cuda_graphs=False)
    worker = WorkerHandle(memory_workload, memory_budget)
    try:
        built = worker.wait("built", BUILD_TIMEOUT_S)
        if built is not None:
            worker.baseline = _watchable_baseline(built)
            measurement.memory_info = {k: v for k, v in built.items() if k not in ("event", "pid")}
            for _ in range(memory_run_steps(measurement.workload.mode)):
                worker.send("step")
                event = worker.wait("step", cold_step_timeout(time_budget), cold="memory run")
                if event is None:
                    break
                measurement.memory_peaks.append(int(event["peak_bytes"]))
        if worker.alive:
            worker.quit()
    finally:
        worker.kill()
    if not worker.alive:
        _memory_run_failed(measurement, worker, say)
    elif measurement.memory_peaks:
        say(f"memory run {measurement.workload.label} {measurement.workload.mode}: "
            f"{format_bytes(max(measurement.memory_peaks))}")


def _memory_run_failed(measurement: Measurement, worker: WorkerHandle, say: Progress) -> None:
    """A memory run that ended early: over the memory budget, or broken, fails the row (that is the model's
    memory); stopped only for time (a hang past `COLD_STEP_TIMEOUT_S`), the timed steps stand and only the
    memory figure is lost, with the reason kept in the row."""
    measurement.memory_peaks = []
    reason = f"memory run: {worker.measurement.reason}"
    if worker.timed_out:
        measurement.memory_error = reason
        w = measurement.workload
        say(f"{w.label} {w.mode} {w.frames}f: no memory figure ({reason})")
    else:
        measurement.fail(worker.measurement.status, reason)


def _watchable_baseline(built: dict[str, Any]) -> int:
    """The worker's RSS baseline when the parent can watch its RSS against the memory budget (Linux), else 0."""
    return int(built.get("baseline_bytes", 0)) if str(built.get("memory_method", "")).startswith("vm") else 0


def _start(worker: WorkerHandle, time_budget: float | None, say: Progress) -> None:
    w = worker.measurement.workload
    name = f"{w.label} {w.mode} {w.frames}x{w.tokens_per_frame}x{w.dim} batch {w.batch}"
    say(f"building {name}")
    built = worker.wait("built", BUILD_TIMEOUT_S)
    if built is None:
        return
    worker.measurement.info = {k: v for k, v in built.items() if k not in ("event", "pid")}
    worker.baseline = _watchable_baseline(built)
    for _ in range(w.warmup):
        event = worker.wait("warmup", cold_step_timeout(time_budget), cold="warm-up")
        if event is None:
            return
        worker.measurement.warmup_times.append(event["seconds"])
        worker.measurement.warmup_peaks.append(int(event["peak_bytes"]))
    warm = worker.measurement.warmup_times
    say(f"ready {name}" + (f" (warm-up step {warm[-1]:.3g} s)" if warm else ""))


def iter_sweep(
    base: Sequence[Workload],
    frames: Sequence[int],
    repeat: int,
    *,
    processes: int = 1,
    time_budget: float | None = None,
    memory_budget: int | None = None,
    progress: Progress | None = None,
    min_time: float = 0.0,
) -> Iterator[list[Measurement]]:
    """`run_group` at each frame count, yielded length by length (a caller interrupted mid-sweep keeps the
    finished lengths); a model over budget at some length is not run at longer ones. Each length's
    measurements are in `base`'s order, skipped models included (they came first, which reordered the table)."""
    exceeded: dict[tuple[str, str], int] = {}
    for count in sorted(frames):
        skipped: dict[int, Measurement] = {}
        group: list[Workload] = []
        for index, workload in enumerate(base):
            key = (workload.label, workload.mode)
            if key in exceeded:
                skipped[index] = Measurement(replace(workload, frames=count))
                skipped[index].fail(OVER_BUDGET, f"over budget at {exceeded[key]} frames; not run")
            else:
                group.append(replace(workload, frames=count))
        if progress is not None:
            progress(f"sweep: {count} frames")
        measured = iter(run_group(group, repeat, processes=processes, time_budget=time_budget,
                                  memory_budget=memory_budget, progress=progress, min_time=min_time))
        results = [skipped[index] if index in skipped else next(measured) for index in range(len(base))]
        for measurement in results:
            if measurement.status == OVER_BUDGET:
                exceeded.setdefault((measurement.workload.label, measurement.workload.mode), count)
        yield results
