"""The worker protocol, the parent's budgets and the report arithmetic, on tiny models."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from s5cli.benchmark.measure import PeakRSSProbe, current_rss, loglog_slope, parse_memory_size, summarize
from s5cli.benchmark.report import build_report, ratio_rows, result_row
from s5cli.benchmark.runner import run_group
from s5cli.benchmark.worker_handle import ERROR, OK, OVER_BUDGET, Measurement
from s5cli.benchmark.worker_process import worker_pids
from s5cli.benchmark.workload import Workload, canonical_label, transformer_heads


def _tiny(label: str, mode: str = "infer", **changes) -> Workload:
    return Workload(label=label, mode=mode, frames=4, tokens_per_frame=6, dim=16, batch=1, **changes)


def test_worker_prints_json_events_and_a_result() -> None:
    workload = _tiny("s5", "train")
    completed = subprocess.run(
        [sys.executable, "-m", "s5cli.benchmark.worker", "--workload", json.dumps(workload.to_json()),
         "--repeat", "2"], capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr
    events = [json.loads(line) for line in completed.stdout.splitlines()]
    assert [e["event"] for e in events] == ["built", "warmup", "step", "step", "done", "result"]
    assert events[0]["params"] > 0 and events[0]["memory_method"]
    assert events[0]["memory_released"] is True  # glibc malloc_trim before the baseline and warm-ups
    assert events[0]["large_blocks_mapped"] is False  # a timing process keeps glibc's allocator defaults
    result = events[-1]
    assert result["workload"] == workload.to_json()
    assert result["seconds"]["min"] == min(e["seconds"] for e in events if e["event"] == "step")


def test_a_memory_run_maps_large_blocks_and_starts_cold() -> None:
    workload = _tiny("s5", memory_run=True)
    completed = subprocess.run(
        [sys.executable, "-m", "s5cli.benchmark.worker", "--workload", json.dumps(workload.to_json()),
         "--repeat", "1"], capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr
    events = [json.loads(line) for line in completed.stdout.splitlines()]
    assert [e["event"] for e in events] == ["built", "step", "done", "result"]  # no warm-up: the step is cold
    assert events[0]["large_blocks_mapped"] is True and events[0]["memory_run"] is True


def test_the_group_measures_memory_in_separate_runs_and_reports_them() -> None:
    results = run_group([_tiny("s5"), _tiny("s4", "train")], repeat=2)
    assert all(m.status == OK and len(m.times) == 2 for m in results)
    infer, train = results
    assert len(infer.memory_peaks) == 1 and len(train.memory_peaks) == 2  # training: a step with AdamW state
    assert infer.memory_info["large_blocks_mapped"] is True
    row = result_row(train)
    assert row["peak_memory_bytes"] == max(train.memory_peaks) and row["memory_run_peaks"] == train.memory_peaks
    assert row["peak_memory_from"] == "memory run (large blocks mapped)"
    assert worker_pids() == []


def test_memory_budget_and_errors_do_not_stop_the_other_models() -> None:
    # 1 byte of budget: the worker's first step exceeds it. dim 12 is not divisible by 2**3: build error.
    broken = Workload(label="s4", mode="infer", frames=2, tokens_per_frame=3, dim=12, batch=1)
    results = run_group([_tiny("s5"), broken, _tiny("transformer")], repeat=2, memory_budget=1)
    assert [m.status for m in results] == [OVER_BUDGET, ERROR, OVER_BUDGET]
    assert "memory" in (results[0].reason or "")
    assert "d_model" in (results[1].reason or "")
    assert worker_pids() == []  # every worker process was ended


def test_time_budget_stops_a_slow_step() -> None:
    results = run_group([_tiny("s4")], repeat=1, time_budget=1e-6)
    assert results[0].status == OVER_BUDGET
    assert "time" in (results[0].reason or "")
    assert worker_pids() == []


def test_group_rounds_give_every_model_all_repeats() -> None:
    results = run_group([_tiny("s5"), _tiny("random")], repeat=3)
    assert all(m.status == OK and len(m.times) == 3 and len(m.peaks) == 3 for m in results)


def test_min_time_gives_fast_models_extra_alternating_steps() -> None:
    from s5cli.benchmark.runner import MAX_TIMED_STEPS

    messages: list[str] = []
    results = run_group([_tiny("s5"), _tiny("s4")], repeat=2, min_time=0.03, progress=messages.append)
    extra = [m for m in messages if "extra round" in m]
    if any(len(m.times) > 2 for m in results):
        # One short line that says why there were more rounds and how many steps each model got.
        (line,) = extra
        assert "--min-time 0.03 s" in line and len(line) <= 80
        assert all(f"{m.workload.label} {len(m.times)}" in line for m in results)
    else:
        assert not extra
    for measurement in results:
        assert measurement.status == OK and len(measurement.times) == len(measurement.peaks)
        times = measurement.times
        # Past the two rounds until its steps add up to min_time (or the cap).
        if sum(times[:2]) < 0.03:
            assert len(times) > 2
        assert sum(times) >= 0.03 or len(times) == MAX_TIMED_STEPS
    # Not a round more than needed: some model that stepped in the last round was still short before it.
    longest = max(len(m.times) for m in results)
    if longest > 2:
        assert any(sum(m.times[:-1]) < 0.03 for m in results if len(m.times) == longest)
    assert worker_pids() == []


def test_extra_rounds_keep_models_of_similar_speed_alternating() -> None:
    from s5cli.benchmark.runner import COMPANION_PACE, extra_round_members

    s5, s4, transformer = [0.03] * 20, [0.05] * 20, [2.0] * 5
    # S5 is short of 1 s; S4 (already past it) keeps stepping beside it, the transformer does not.
    assert extra_round_members([s5, s4, transformer], min_time=1.0, cap=50) == [0, 1]
    # Nobody short: no more rounds, whatever the speeds.
    assert extra_round_members([[0.03] * 34, s4, transformer], min_time=1.0, cap=50) == []
    # The pace is the slowest short model's; a companion just within COMPANION_PACE of it joins.
    slow_companion = [0.03 * COMPANION_PACE] * 20
    too_slow = [0.031 * COMPANION_PACE] * 20
    assert extra_round_members([s5, slow_companion, too_slow], min_time=1.0, cap=50) == [0, 1]
    # A model at the cap steps no more, short or companion.
    assert extra_round_members([[0.01] * 50, [0.01] * 3], min_time=1.0, cap=50) == [1]
    assert extra_round_members([[0.01] * 3, [0.01] * 50], min_time=1.0, cap=50) == [0]


def test_processes_pool_the_steps_of_fresh_workers(monkeypatch) -> None:
    from s5cli.benchmark import worker_handle

    real_start, fresh = worker_handle.start_worker, []
    monkeypatch.setattr(worker_handle, "start_worker", lambda workload, **kw: fresh.append(kw["fresh"]) or real_start(
        workload, **kw))
    results = run_group([_tiny("s5"), _tiny("s4")], repeat=2, processes=2)
    # Timing sets sample independent processes (spawned); the memory runs may be forks.
    assert fresh == [True] * 4 + [False] * 2
    for measurement in results:
        assert measurement.status == OK
        assert len(measurement.times) == 4 and len(measurement.peaks) == 4  # 2 processes x 2 steps, pooled
        assert len(measurement.warmup_times) == 2  # every process was new: each warmed up once
        assert len(measurement.process_medians) == 2
        for index, median in enumerate(measurement.process_medians):
            assert median == summarize(measurement.times[2 * index : 2 * index + 2])["median"]
        assert len(measurement.memory_peaks) == 1  # one memory run per model, whatever the processes
        assert result_row(measurement)["process_medians"] == measurement.process_medians
    assert worker_pids() == []


def test_a_model_over_budget_is_not_started_again_by_later_processes() -> None:
    results = run_group([_tiny("s4")], repeat=1, processes=3, time_budget=1e-6)
    assert results[0].status == OVER_BUDGET
    # Warmed up once (cold steps are not judged by the budget), stopped in its first timed step.
    assert len(results[0].warmup_times) == 1 and results[0].process_medians == []
    assert worker_pids() == []


def _measurement(label: str, median: float, peak: int, frames: int = 60) -> Measurement:
    m = Measurement(Workload(label=label, mode="infer", frames=frames, tokens_per_frame=10, dim=16, batch=2))
    m.times, m.peaks = [median * 0.9, median, median * 1.1], [peak, peak // 2, peak // 3]
    return m


def test_ratios_and_targets_follow_the_numbers() -> None:
    report = build_report([_measurement("s5", 1.0, 100), _measurement("transformer", 5.0, 400),
                           _measurement("s4", 1.2, 110)], {}, {})
    ratios = {r["model"]: r for r in report["ratios"]}
    assert math.isclose(ratios["transformer"]["s5_throughput_ratio"], 5.0)
    assert math.isclose(ratios["transformer"]["s5_memory_ratio"], 0.25)
    assert math.isclose(ratios["s4"]["s5_throughput_ratio"], 1.2)
    met = {(c["model"], c["metric"]): c["met"] for c in report["targets"]}
    assert met == {("transformer", "throughput"): True, ("transformer", "memory"): True,
                   ("s4", "throughput"): False, ("s4", "memory"): False}
    assert report["slopes"] == []  # one length: no scaling slope


def test_failed_rows_have_no_ratio() -> None:
    failed = _measurement("transformer", 5.0, 400)
    failed.fail(OVER_BUDGET, "time")
    rows = [result_row(m) for m in (_measurement("s5", 1.0, 100), failed)]
    assert rows[1]["clips_per_s"] is None
    assert ratio_rows(rows) == []


def test_sweep_slope_of_a_quadratic_model_is_two() -> None:
    measurements = [_measurement("transformer", (f / 15) ** 2, 10 * f, frames=f) for f in (15, 30, 60)]
    slope = build_report(measurements, {}, {})["slopes"][0]
    assert math.isclose(slope["time_slope"], 2.0)
    assert math.isclose(slope["memory_slope"], 1.0)


def test_measure_helpers() -> None:
    assert parse_memory_size("2GB") == 2 * 2**30
    assert parse_memory_size("512 MiB") == 512 * 2**20
    with pytest.raises(ValueError):
        parse_memory_size("lots")
    assert summarize([3.0, 1.0, 2.0])["median"] == 2.0
    assert loglog_slope([1, 2, 4], [3, 3, 3]) == 0.0
    base = current_rss()
    probe = PeakRSSProbe()
    probe.start()
    block = bytearray(64 * 2**20)  # touched pages: RSS must rise by ~64 MiB
    for i in range(0, len(block), 4096):
        block[i] = 1
    del block  # freed before stop(): only a probe that saw the peak still reports it
    peak = probe.stop()
    # Not the full 64 MiB: the kernel's RSS counters are per-CPU approximations when it records the peak
    # (VmHWM once read 50 of the 64 MiB on this project's loaded 2-core VM); without the peak it would be ~0.
    assert peak - base >= 40 * 2**20
    assert current_rss() < base + 32 * 2**20  # the block really left RSS, so the peak was not just "now"


def test_labels_and_heads() -> None:
    assert canonical_label("vit") == "transformer" and canonical_label("VIS4MER") == "s4"
    with pytest.raises(ValueError, match="choose from"):
        canonical_label("mamba")
    assert transformer_heads(1024) == 16 and transformer_heads(16) == 1 and 200 % transformer_heads(200) == 0
    name, config = _tiny("random").model_config()
    assert name == "s5" and config["selector"] == "random" and config["keep_ratio"] == 0.5


def test_peak_memory_comes_from_the_memory_run_else_trimmed_warmups() -> None:
    m = _measurement("s5", 1.0, 100)
    m.warmup_peaks = [40]
    assert result_row(m)["peak_memory_bytes"] == 100  # no memory step, not released: every step counts
    m.info["memory_released"] = True
    row = result_row(m)
    assert row["peak_memory_bytes"] == 40 and row["timed_step_peak_bytes"] == 100
    assert "warm-up" in row["peak_memory_from"]
    m.memory_peaks, m.memory_info = [70, 60], {"large_blocks_mapped": True}
    row = result_row(m)
    assert row["peak_memory_bytes"] == 70 and row["timed_step_peak_bytes"] == 100
    assert row["peak_memory_from"] == "memory run (large blocks mapped)"


def test_cuda_memory_is_read_on_the_workers_own_gpu(monkeypatch) -> None:
    """`--device cuda:1`: every torch.cuda memory call names cuda:1 (without a device they read GPU 0).
    No GPU here: the calls are recorded, not run."""
    import torch

    from s5cli.benchmark.worker import _Memory

    calls: list[tuple[str, object]] = []
    for name in ("memory_allocated", "max_memory_allocated", "reset_peak_memory_stats", "synchronize"):
        monkeypatch.setattr(torch.cuda, name, lambda device=None, name=name: calls.append((name, device)) or 0)
    monkeypatch.setattr(torch.cuda, "init", lambda: None)
    real_empty = torch.empty
    monkeypatch.setattr(torch, "empty", lambda *size, device=None, **kwargs: real_empty(*size, **kwargs))
    memory = _Memory("cuda:1")
    memory.take_baseline()
    memory.start()
    memory.stop()
    assert {name for name, _ in calls} == {"memory_allocated", "max_memory_allocated", "reset_peak_memory_stats",
                                           "synchronize"}
    assert all(device == torch.device("cuda", 1) for _, device in calls), calls


def test_the_time_budget_judges_timed_steps_only(monkeypatch) -> None:
    """Cold steps (warm-up, the memory run's first step, deliberately slower allocator) may take longer than
    --time-budget: a model whose timed steps fit stays measured, memory figure included."""
    from tests.benchmark.fake_worker import use_fake_workers

    use_fake_workers(monkeypatch, {"s5": {"warmup": 0.3, "step": 0.02, "memory": 0.21}})
    (result,) = run_group([_tiny("s5")], repeat=2, time_budget=0.12)
    assert result.status == OK, result.reason
    assert result.times == [0.02, 0.02] and result.warmup_times == [0.3]
    assert result.memory_peaks == [1000] and result_row(result)["peak_memory_bytes"] == 1000
    assert worker_pids() == []


def test_a_timed_step_over_the_budget_still_fails_the_row(monkeypatch) -> None:
    from tests.benchmark.fake_worker import use_fake_workers

    use_fake_workers(monkeypatch, {"s5": {"warmup": 0.01, "step": 0.2}})
    (result,) = run_group([_tiny("s5")], repeat=2, time_budget=0.12)
    assert result.status == OVER_BUDGET and result.reason == "time: step took 0.2 s > budget 0.12 s"
    assert result.memory_peaks == []  # no memory run for a row that failed
    assert worker_pids() == []


def test_a_hung_memory_run_loses_the_memory_figure_not_the_row(monkeypatch) -> None:
    """The cold steps' own, generous limit still ends a hang; past it only the memory figure is lost."""
    from s5cli.benchmark import runner
    from tests.benchmark.fake_worker import use_fake_workers

    monkeypatch.setattr(runner, "COLD_STEP_TIMEOUT_S", 0.2)
    use_fake_workers(monkeypatch, {"s5": {"step": 0.02, "memory": "hang"}, "s4": {"step": 0.03}})
    s5, s4 = run_group([_tiny("s5"), _tiny("s4")], repeat=2, time_budget=0.12)
    assert s5.status == OK and s5.times == [0.02, 0.02] and s5.memory_peaks == []
    assert s5.memory_error is not None and s5.memory_error.startswith("memory run: time: ")
    row = result_row(s5)
    assert row["peak_memory_bytes"] is None and row["memory_error"] == s5.memory_error
    assert row["clips_per_s"] is not None
    report = build_report([s5, s4], {}, {})
    (ratio,) = report["ratios"]
    assert ratio["s5_memory_ratio"] is None and ratio["s5_throughput_ratio"] == 1.5
    assert worker_pids() == []


def test_a_hung_warm_up_still_ends(monkeypatch) -> None:
    from s5cli.benchmark import runner
    from tests.benchmark.fake_worker import use_fake_workers

    monkeypatch.setattr(runner, "COLD_STEP_TIMEOUT_S", 0.2)
    use_fake_workers(monkeypatch, {"s5": {"warmup": "hang"}})
    (result,) = run_group([_tiny("s5")], repeat=1, time_budget=0.1)
    assert result.status == OVER_BUDGET and "warm-up" in (result.reason or "")
    assert worker_pids() == []


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried "
                 "to allocate 4294967296 bytes. Error code 12 (Cannot allocate memory)"),
    OSError(12, "Cannot allocate memory"),
    MemoryError(),
    "torch.OutOfMemoryError",
], ids=["cpu-allocator", "enomem", "memory-error", "torch-oom"])
def test_out_of_memory_on_cpu_is_over_budget_not_an_error(monkeypatch, error) -> None:
    """torch's CPU allocator says "can't allocate memory", not "out of memory": the worker must still report
    it as over budget (so a sweep stops that model there) instead of as a failure of the run."""
    import io

    import torch

    from s5cli.benchmark import worker

    if error == "torch.OutOfMemoryError":
        error = torch.OutOfMemoryError("CUDA error: an illegal memory request")  # the type decides, not the text

    def prepare(workload):
        raise error

    monkeypatch.setattr(worker, "_prepare", prepare)
    out = io.StringIO()
    assert worker.serve(_tiny("s5"), [], out) == 0
    (event,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert event["event"] == "over_budget" and event["reason"] == "out of memory"


def _sweep_with_s5_over_budget_from(first_failed: int | None, lengths=(4, 8, 16, 32)) -> list[Measurement]:
    measurements = []
    for frames in lengths:
        s5 = _measurement("s5", frames / 100, 10 * frames, frames=frames)
        if first_failed is not None and frames >= first_failed:
            s5.fail(OVER_BUDGET, "time: step took 61 s > budget 60 s")
        measurements += [s5, _measurement("s4", frames / 50, 20 * frames, frames=frames)]
    return measurements


def test_the_slope_target_names_its_lengths_and_is_incomplete_without_all_of_them(capsys) -> None:
    """S5 over budget at 16 of 4,8,16,32: a slope fitted on 4 and 8 alone must not read "met"."""
    from rich.console import Console

    from s5cli.benchmark.report import render

    settings = {"frames": [4, 8, 16, 32], "sweep": True}
    (complete,) = [c for c in build_report(_sweep_with_s5_over_budget_from(None), settings, {})["targets"]
                   if c["metric"] == "time_slope"]
    assert complete["frames"] == [4, 8, 16, 32] and complete["met"] is True and complete["verdict"] == "met"
    report = build_report(_sweep_with_s5_over_budget_from(16), settings, {})
    (partial,) = [c for c in report["targets"] if c["metric"] == "time_slope"]
    assert partial["frames"] == [4, 8] and partial["requested_frames"] == [4, 8, 16, 32]
    assert math.isclose(partial["value"], 1.0)
    assert partial["met"] is None and partial["verdict"] == "incomplete"
    render(report, Console(file=None, width=200, force_terminal=False))
    line = next(line for line in capsys.readouterr().out.splitlines() if "time_slope" in line)
    assert "fitted on 4,8 of 4,8,16,32 frames" in line and "incomplete" in line and " met" not in line


def test_a_slope_from_fewer_than_two_lengths_is_reported_as_not_fitted() -> None:
    report = build_report(_sweep_with_s5_over_budget_from(8), {"frames": [4, 8, 16, 32], "sweep": True}, {})
    (check,) = [c for c in report["targets"] if c["metric"] == "time_slope"]
    assert check["frames"] == [4] and check["value"] is None
    assert check["met"] is None and check["verdict"] == "not fitted"


def test_a_stopped_group_keeps_the_steps_it_finished(monkeypatch) -> None:
    """Ctrl-C in the third round: the two finished rounds travel with the KeyboardInterrupt, marked."""
    from s5cli.benchmark import runner
    from tests.benchmark.fake_worker import stop_in_round, use_fake_workers

    use_fake_workers(monkeypatch, {"s5": {"step": 0.02}, "s4": {"step": 0.03}})
    stop_in_round(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt) as stop:
        run_group([_tiny("s5"), _tiny("s4")], repeat=5)
    kept = runner.interrupted_measurements(stop.value)
    assert [(m.workload.label, m.times, m.interrupted) for m in kept] == [("s5", [0.02, 0.02], True),
                                                                        ("s4", [0.03, 0.03], True)]
    row = result_row(kept[0])
    assert row["status"] == OK and row["interrupted"] is True and row["clips_per_s"] == 1 / 0.02
    assert row["peak_memory_bytes"] is None and "before its memory run" in row["memory_error"]
    assert worker_pids() == []
    assert runner.interrupted_measurements(KeyboardInterrupt()) == []


def test_the_memory_budget_judges_the_memory_runs_peak_not_the_timing_process(monkeypatch) -> None:
    """A timing process's peak also holds freed heap blocks (above the reported figure): 17.8 MiB models
    read "over budget" under 22MB. The memory run's peak, the figure reported, decides."""
    from tests.benchmark.fake_worker import use_fake_workers

    use_fake_workers(monkeypatch, {"s5": {"warmup_bytes": 3072, "step_bytes": 3072, "memory_bytes": 1024},
                                   "s4": {"step_bytes": 3072, "memory_bytes": 2560}})
    s5, s4 = run_group([_tiny("s5"), _tiny("s4")], repeat=2, memory_budget=2048)
    assert s5.status == OK and s5.times == [0.01, 0.01] and s5.peaks == [3072, 3072], s5.reason
    row = result_row(s5)
    assert row["peak_memory_bytes"] == 1024 and row["timed_step_peak_bytes"] == 3072
    # Over the budget where the memory run is: that model's memory, as reported.
    assert s4.status == OVER_BUDGET and s4.reason == "memory run: memory: peak 2.50 KiB > budget 2.00 KiB"
    assert worker_pids() == []


def test_a_timing_process_past_its_ceiling_is_stopped_as_a_runaway(monkeypatch) -> None:
    from s5cli.benchmark.runner import TIMING_MEMORY_CEILING
    from tests.benchmark.fake_worker import use_fake_workers

    assert TIMING_MEMORY_CEILING == 2
    use_fake_workers(monkeypatch, {"s5": {"step_bytes": 5120, "memory_bytes": 1024}})
    (result,) = run_group([_tiny("s5")], repeat=2, memory_budget=2048)
    assert result.status == OVER_BUDGET and result.times == []
    assert result.reason == "memory: peak 5.00 KiB > 4.00 KiB, a timing process's ceiling (2x the budget)"
    assert worker_pids() == []


def test_the_timing_ceiling_stays_within_each_processs_share_of_the_free_memory() -> None:
    """Twice the default CPU budget (80 % of the free memory per model) let the timing processes together
    grow past the free memory: the ceiling is capped at each one's share, and never below the budget."""
    from s5cli.benchmark.runner import timing_memory_limit

    gib = 1 << 30
    assert timing_memory_limit(None, 3, 20 * gib) == (None, None)
    assert timing_memory_limit(gib, 2, 20 * gib)[0] == 2 * gib  # room enough: twice the budget
    ceiling, words = timing_memory_limit(8 * gib, 2, 20 * gib)  # the default budget for two models
    assert ceiling == 8 * gib and words.endswith("(its share of the free memory)")
    assert timing_memory_limit(4 * gib, 3, 20 * gib)[0] == int(0.8 * 20 * gib / 3)
    assert timing_memory_limit(4 * gib, 1, None)[0] == 8 * gib  # free memory unknown (or a GPU's budget)


def test_a_model_not_built_in_time_is_named_a_build_timeout_not_a_step_over_budget(monkeypatch) -> None:
    from s5cli.benchmark import runner
    from tests.benchmark.fake_worker import use_fake_workers

    monkeypatch.setattr(runner, "BUILD_TIMEOUT_S", 0.2)
    use_fake_workers(monkeypatch, {"s5": {"build": "hang"}})
    (result,) = run_group([_tiny("s5")], repeat=1)
    assert result.status == OVER_BUDGET
    assert result.reason == "time: building the model took longer than 0.2 s (stopped)"
    assert worker_pids() == []


def test_a_sweep_keeps_the_model_order_when_a_model_is_skipped(monkeypatch) -> None:
    """The transformer over budget at 4 frames is skipped at 8: it stays in its place, not first."""
    from s5cli.benchmark.runner import iter_sweep
    from tests.benchmark.fake_worker import use_fake_workers

    use_fake_workers(monkeypatch, {"s5": {}, "transformer": {"step": 0.2}, "s4": {}})
    groups = list(iter_sweep([_tiny("s5"), _tiny("transformer"), _tiny("s4")], [4, 8], repeat=1,
                             time_budget=0.12))
    assert [[(m.workload.label, m.workload.frames, m.status) for m in group] for group in groups] == [
        [("s5", 4, OK), ("transformer", 4, OVER_BUDGET), ("s4", 4, OK)],
        [("s5", 8, OK), ("transformer", 8, OVER_BUDGET), ("s4", 8, OK)]]
    assert "not run" in (groups[1][1].reason or "")
    assert worker_pids() == []


@pytest.mark.parametrize("lengths", [(4,), (4, 8, 16)], ids=["one-length-sweep", "stopped-after-one-length"])
def test_a_sweep_with_one_measured_length_still_has_its_slope_target(lengths, capsys) -> None:
    """`--sweep 60`, or a sweep stopped after its first length: the target reads "could not be fitted",
    not nothing at all."""
    from rich.console import Console

    from s5cli.benchmark.report import render

    measured = [m for m in _sweep_with_s5_over_budget_from(None, lengths) if m.workload.frames == 4]
    report = build_report(measured, {"frames": list(lengths), "sweep": True}, {})
    (check,) = [c for c in report["targets"] if c["metric"] == "time_slope"]
    assert check["frames"] == [4] and check["requested_frames"] == list(lengths)
    assert check["value"] is None and check["verdict"] == "not fitted"
    render(report, Console(file=None, width=200, force_terminal=False))
    line = next(line for line in capsys.readouterr().out.splitlines() if "time_slope" in line)
    if len(lengths) == 1:
        assert line.endswith("could not be fitted: the sweep has one length (4 frames); a slope needs two")
    else:
        assert line.endswith("could not be fitted: S5 finished 1 of the 3 lengths (4,8,16 frames); a slope "
                             "needs two")
