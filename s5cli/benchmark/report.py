"""From raw measurements to the report: per-model rows, ratios against S5, targets, slopes, table, JSON.

Every ratio is computed here from the rows' own medians and peaks, so the JSON can be re-checked by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from s5cli.benchmark.measure import format_bytes, loglog_slope, summarize
from s5cli.benchmark.worker_handle import OK, Measurement

SCHEMA = "s5cli-benchmark/1"
REFERENCE = "s5"
# Issue 6's targets for S5 at keep ratio 0.5: throughput at least, memory at most, these multiples.
TARGETS = {"transformer": {"throughput": 4.0, "memory": 0.5}, "s4": {"throughput": 1.5, "memory": 0.77}}
SLOPE_TARGET = 1.15  # S5's log-log slope of time vs frames
TARGET_SOURCE = "issue 6"  # named on every target line: the design notes set one bar differently
# Where the design notes' bar differs from issue 6's: at the paper's LVU size (60 x 197 x 1024) S5 <= 0.1x the
# transformer's peak memory (their reading of the paper's "10% memory"); their other bars are issue 6's. Judged
# beside issue 6's, not instead: a line reading "met" against 0.5x alone overstated what the run shows.
DESIGN_TARGETS = {"transformer": {"memory": 0.1}}
PAPER_SIZE = (60, 197, 1024)  # frames, tokens per frame, width: the only size the design notes' bar is judged at
# Frames x tokens per frame x width of `s5 benchmark`'s CPU default (60 x 50 x 768): the smallest size the
# targets are set for; below it fixed per-step costs decide the ratios, not load.
DEFAULT_CPU_SIZE = 60 * 50 * 768


def result_row(measurement: Measurement) -> dict[str, Any]:
    """One JSON row: settings, status, time statistics, throughput and peak memory of one measurement."""
    w = measurement.workload
    times = measurement.times
    stats = summarize(times) if times else None
    peaks, source = _memory_figure(measurement)
    complete = measurement.status == OK and stats is not None
    return {
        "model": w.label,
        "mode": w.mode,
        "frames": w.frames,
        "tokens_per_frame": w.tokens_per_frame,
        "dim": w.dim,
        "batch": w.batch,
        "tokens": w.tokens,
        "keep_ratio": w.keep_ratio if w.label in ("s5", "random", "uniform") else None,
        "status": measurement.status,
        "reason": measurement.reason,
        "seconds": stats,
        "times": list(times),
        "process_medians": list(measurement.process_medians),
        "warmup_seconds": list(measurement.warmup_times),
        "clips_per_s": w.batch / stats["median"] if complete else None,
        "tokens_per_s": w.batch * w.tokens / stats["median"] if complete else None,
        "peak_memory_bytes": max(peaks) if complete and peaks else None,
        "peak_memory_from": source,
        "timed_step_peak_bytes": max(measurement.peaks) if measurement.peaks else None,
        "memory_run_peaks": list(measurement.memory_peaks),
        "memory_error": measurement.memory_error,
        "interrupted": measurement.interrupted,
        "params": measurement.info.get("params"),
        "memory_method": measurement.info.get("memory_method"),
        "baseline_bytes": measurement.info.get("baseline_bytes"),
        "threads": measurement.info.get("threads"),
        "cuda_graph": measurement.info.get("cuda_graph", False),
        "graph_error": measurement.info.get("graph_error"),
    }


def _memory_figure(measurement: Measurement) -> tuple[list[int], str]:
    """The peaks the memory column comes from, and where they come from (see worker.py for why)."""
    if measurement.memory_error:  # no memory run (hung, or the run was stopped): no figure, not a wrong one
        return [], f"none ({measurement.memory_error})"
    if measurement.memory_peaks:
        mapped = measurement.memory_info.get("large_blocks_mapped")
        return list(measurement.memory_peaks), "memory run" + (" (large blocks mapped)" if mapped else "")
    # No memory run (a Measurement built by hand; run_group always takes one or fails the row): warm-up
    # steps that started from a trimmed heap, else every step's peak.
    if measurement.info.get("memory_released") and measurement.warmup_peaks:
        return list(measurement.warmup_peaks), "warm-up steps (trimmed heap)"
    return measurement.peaks + measurement.warmup_peaks, "all steps"


def ratio_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """S5 against every other completed model of the same mode and frame count."""
    reference = {(r["mode"], r["frames"]): r for r in rows if r["model"] == REFERENCE and r["status"] == OK}
    ratios = []
    for row in rows:
        s5 = reference.get((row["mode"], row["frames"]))
        if row["model"] == REFERENCE or row["status"] != OK or s5 is None:
            continue
        throughput = s5["clips_per_s"] / row["clips_per_s"]
        memory = (s5["peak_memory_bytes"] / row["peak_memory_bytes"]
                  if row["peak_memory_bytes"] and s5["peak_memory_bytes"] is not None else None)
        ratios.append({"model": row["model"], "mode": row["mode"], "frames": row["frames"],
                       "s5_throughput_ratio": throughput, "s5_memory_ratio": memory})
    return ratios


def slope_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Log-log slope of median step time and of peak memory against frames, per model and mode."""
    slopes = []
    for key in dict.fromkeys((r["model"], r["mode"]) for r in rows):
        ok = [r for r in rows if (r["model"], r["mode"]) == key and r["status"] == OK]
        frames = [r["frames"] for r in ok]
        slopes.append({
            "model": key[0], "mode": key[1], "frames": frames,
            "time_slope": loglog_slope(frames, [r["seconds"]["median"] for r in ok]) if ok else None,
            "memory_slope": loglog_slope(frames, [r["peak_memory_bytes"] or 0 for r in ok]) if ok else None,
        })
    return slopes


def target_rows(ratios: Sequence[dict[str, Any]], slopes: Sequence[dict[str, Any]],
                requested_frames: Sequence[int] = (), grid: tuple[int, int] | None = None) -> list[dict[str, Any]]:
    """Each of issue 6's targets that this run measured, with the value and whether it is met.

    `requested_frames`: the sweep's lengths, which S5's slope is judged on (`slope_check`). `grid`: (tokens per
    frame, width) of the run; the design notes' bar is judged only at the paper size (`design_met` None
    elsewhere: a default-size run read "missed" against a bar set for 60 x 197 x 1024)."""
    checks = []
    for ratio in ratios:
        target = TARGETS.get(ratio["model"])
        if target is None:
            continue
        where = {"model": ratio["model"], "mode": ratio["mode"], "frames": ratio["frames"]}
        checks.append(_check(where, "throughput", ratio["s5_throughput_ratio"], ">=", target["throughput"]))
        if ratio["s5_memory_ratio"] is not None:
            memory = _check(where, "memory", ratio["s5_memory_ratio"], "<=", target["memory"])
            design = DESIGN_TARGETS.get(ratio["model"], {}).get("memory")
            if design is not None:
                at_paper_size = grid is not None and (ratio["frames"], *grid) == PAPER_SIZE
                memory.update(design_threshold=design,
                              design_met=memory["value"] <= design if at_paper_size else None)
            checks.append(memory)
    checks += [slope_check(slope, requested_frames) for slope in slopes if slope["model"] == REFERENCE]
    return checks


def slope_check(slope: dict[str, Any], requested_frames: Sequence[int]) -> dict[str, Any]:
    """S5's time-slope target row, with the lengths it was fitted on.

    Why not judged on whatever finished: with S5 over budget from 16 of 4,8,16,32 frames a slope fitted on
    4 and 8 read "met", though the long lengths are where a super-linear cost shows. Then the verdict is
    "incomplete" (`met` None); from fewer than two lengths no slope exists: "not fitted"."""
    requested = sorted(set(requested_frames) | set(slope["frames"]))
    where = {"model": REFERENCE, "mode": slope["mode"], "frames": list(slope["frames"]),
             "requested_frames": requested}
    check = _check(where, "time_slope", slope["time_slope"], "<=", SLOPE_TARGET)  # None: "not fitted"
    if slope["time_slope"] is not None and list(slope["frames"]) != requested:
        check.update(met=None, verdict="incomplete")
    return check


def _check(where: dict[str, Any], metric: str, value: float | None, comparison: str,
           threshold: float) -> dict[str, Any]:
    """One target row: `target` reads ">= 1.5" for people, `comparison` and `threshold` are for scripts;
    `met` is None where the value cannot be judged (`verdict` says why); `source` is where the bar comes from."""
    met = None if value is None else value >= threshold if comparison == ">=" else value <= threshold
    return {**where, "metric": metric, "value": value, "target": f"{comparison} {threshold}",
            "comparison": comparison, "threshold": threshold, "source": TARGET_SOURCE, "met": met,
            "verdict": "not fitted" if met is None else "met" if met else "missed"}


def build_report(measurements: Sequence[Measurement], settings: dict[str, Any],
                 machine: dict[str, Any]) -> dict[str, Any]:
    """The whole JSON document of one `s5 benchmark` run (stage "model")."""
    rows = [result_row(m) for m in measurements]
    ratios = ratio_rows(rows)
    # A sweep that measured one length (`--sweep 60`, or stopped after its first) still gets its slope
    # target, "not fitted": without it the run looked as if it had no slope target at all.
    sweep = bool(settings.get("sweep")) or len({r["frames"] for r in rows}) > 1
    slopes = slope_rows(rows) if sweep else []
    grid = (settings.get("tokens_per_frame"), settings.get("dim"))
    targets = target_rows(ratios, slopes, frames_asked_for(settings, rows), grid)
    return {"schema": SCHEMA, "stage": "model", "settings": settings, "machine": machine, "results": rows,
            "ratios": ratios, "slopes": slopes, "targets": targets}


def frames_asked_for(settings: dict[str, Any], rows: Sequence[dict[str, Any]]) -> list[int]:
    """The sweep's lengths as asked for (an interrupted sweep has rows for fewer), else those of the rows."""
    asked = settings.get("frames")
    return sorted(asked) if isinstance(asked, list) else sorted({r["frames"] for r in rows})


# --- rendering ----------------------------------------------------------------------------------------
def wide(console: Any) -> Any:
    """`console`, or where output is piped (a log, `tee`; Rich would cut the table to 80 columns) a wider one,
    which like every s5 console prints each text line whole."""
    if console.is_terminal:
        return console
    from s5cli.cli.console import LogFriendlyConsole

    return LogFriendlyConsole(file=console.file, width=max(console.width, 132), highlight=False)


def _seconds(value: float) -> str:
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def _spread(stats: dict[str, float]) -> str:
    low, high = stats["q1"], stats["q3"]
    if high < 1:
        return f"{low * 1000:.1f}-{high * 1000:.1f} ms"
    return f"{low:.2f}-{high:.2f} s"


def _rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def render(report: dict[str, Any], console: Any) -> None:
    """Print the results table, slopes and target checks with Rich."""
    from rich import box
    from rich.table import Table

    ratios = {(r["model"], r["mode"], r["frames"]): r for r in report["ratios"]}
    table = Table(title="s5 benchmark", title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("model", "mode", "T", "step median", "q1-q3", "clips/s", "tokens/s", "peak mem",
                   "S5 speed", "S5 mem"):
        table.add_column(column, justify="left" if column in ("model", "mode") else "right", no_wrap=True)
    for row in report["results"]:
        cells = [row["model"], row["mode"], str(row["frames"])]
        if row["status"] != OK:
            reason = f"[red]{row['status']}[/]" + (f": {row['reason']}" if row["reason"] else "")
            table.add_row(*cells, reason, "", "", "", "", "", "")
            continue
        s = row["seconds"]
        ratio = ratios.get((row["model"], row["mode"], row["frames"]))
        speedup = "1.00x" if row["model"] == REFERENCE else (
            f"{ratio['s5_throughput_ratio']:.2f}x" if ratio else "-")
        memory = "1.00x" if row["model"] == REFERENCE else (
            f"{ratio['s5_memory_ratio']:.2f}x" if ratio and ratio["s5_memory_ratio"] is not None else "-")
        table.add_row(*cells, _seconds(s["median"]), _spread(s),
                      _rate(row["clips_per_s"]), _rate(row["tokens_per_s"]),
                      format_bytes(row["peak_memory_bytes"]), speedup, memory)
    console = wide(console)
    console.print(table)
    console.print("S5 speedup = S5 clips/s / model clips/s; S5 memory = S5 peak / model peak "
                  f"(peak above the process baseline: {_peak_contents(report['results'])}).")
    if report.get("settings", {}).get("cuda_graphs"):
        console.print("CUDA graphs: each model's step was captured once and replayed (every model alike).")
    for row in report["results"]:
        if row.get("memory_error"):
            console.print(f"[yellow]{row['model']} {row['mode']} {row['frames']}f: no peak memory figure "
                          f"({row['memory_error']})[/]")
        if row.get("graph_error"):
            console.print(f"[yellow]{row['model']} {row['mode']} {row['frames']}f: CUDA graph capture failed "
                          f"({row['graph_error']}); timed without a graph[/]")
    if report["slopes"]:
        slopes = Table(title="scaling with frames (log-log slope)", title_justify="left")
        for column in ("model", "mode", "frames", "time slope", "memory slope"):
            slopes.add_column(column)
        for row in report["slopes"]:
            fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
            slopes.add_row(row["model"], row["mode"], ",".join(map(str, row["frames"])),
                           fmt(row["time_slope"]), fmt(row["memory_slope"]))
        console.print(slopes)
    for check in report["targets"]:
        console.print(_target_line(check))
    hint = missed_speed_hint(report)
    if hint:
        console.print(f"[dim]{hint}[/]")


def _peak_contents(rows: Sequence[dict[str, Any]]) -> str:
    """What a peak holds, by the modes in the table: an inference step has no optimiser state, and a footnote
    naming it under inference rows told the reader it was counted there."""
    modes = {row["mode"] for row in rows}
    if "train" not in modes:
        return "weights + input + activations"
    if modes == {"train"}:
        return "weights + input + optimiser state + activations"
    return "weights + input + activations, + optimiser state in train"


def missed_speed_hint(report: dict[str, Any]) -> str | None:
    """Why a speed target may read "missed", and what to do; None when every speed target was met.

    On a CPU load moves the ratios from run to run (on this project's shared 2-core VM S5 vs S4 at the
    default size read 1.10-2.66x over 25 runs of one day): one run is one sample, and there are steadier
    ways. On a GPU the misses are systematic (one H200, paper size, batch 1): S5's and S4's steps wait on
    launching small operators unless captured as CUDA graphs, and with graphs S5's selection is a fixed cost
    that a busier GPU (a larger batch) hides; the README says what was measured, so the user does not look
    for a fault in their setup. A missed inference ratio vs S4 on a CPU is not only load: with glibc's page
    faults taken out (v24) it read 1.41-1.56x on 2 cores, so the hint says the lead is thin there."""
    missed = [check for check in report["targets"] if check["metric"] == "throughput" and not check["met"]]
    if not missed:
        return None
    settings = report.get("settings", {})
    if settings.get("device", "cpu") != "cpu":
        if not settings.get("cuda_graphs"):
            return ("on a GPU at small batches eager steps are bound by launching small operators; CUDA graphs "
                    "(the default there) remove that wait (README, 'On a GPU')")
        return ("on a GPU at small batches S5's token selection is a fixed cost beside a half-length decoder; "
                "at --batch 16 (the paper's training batch) one H200 met every target (README, 'On a GPU')")
    per_frame = settings.get("tokens_per_frame", 0) * settings.get("dim", 0)
    if per_frame and all(check["frames"] * per_frame < DEFAULT_CPU_SIZE for check in missed):
        return ("the targets are set for the default size (60 x 50 x 768) and the paper's; at smaller sizes "
                "fixed per-step costs (S5's token selection, launching operators) weigh more")
    steadier = [flag for flag, used in (("--processes 3", settings.get("processes", 1) >= 3),
                                        ("--threads 1", settings.get("threads") == 1)) if not used]
    advice = f"steadier: {' or '.join(steadier)}" if steadier else "compare several runs"
    hint = f"one run is one sample: on a busy CPU, speed ratios vary between runs; {advice} (benchmarks/README.md)"
    if any(check["model"] == "s4" and check["mode"] == "infer" for check in missed):
        # Not only load: with glibc's page faults taken out, this ratio measured 1.41-1.56x on 2 cores.
        hint += ("; S5's inference lead over S4 is thin on a small CPU at this size (choosing the tokens is small "
                 "operators over every token), near 1.5x even in steady runs (benchmarks/README.md, v24)")
    return hint


_MARKS = {"met": "[green]met[/]", "missed": "[red]missed[/]", "incomplete": "[yellow]incomplete[/]"}


def _target_line(check: dict[str, Any]) -> str:
    """One target check for people: value, target with where it comes from, and verdict; a slope also names
    the lengths it was fitted on; where the design notes set another bar, its verdict follows."""
    source = f"{check.get('source', TARGET_SOURCE)} target"
    if check["metric"] != "time_slope":
        mark = _MARKS["met" if check["met"] else "missed"]
        line = (f"target S5 {check['metric']} vs {check['model']} ({check['mode']}, {check['frames']} frames): "
                f"{_target_value(check)}x ({source} {check['target']}x) {mark}")
        if check.get("design_threshold") is not None:
            bar = f"{check['comparison']} {check['design_threshold']}x"
            if check["design_met"] is None:
                line += f"; design notes' bar {bar} is set for the paper size (60 x 197 x 1024): not judged here"
            else:
                line += f"; design notes' bar at the paper size {bar} {_MARKS['met' if check['design_met'] else 'missed']}"
        return line
    fitted, requested = check["frames"], check.get("requested_frames", check["frames"])
    head = f"target S5 time_slope time vs frames ({check['mode']}"
    if check["value"] is None:
        if len(requested) < 2:
            return (f"{head}): [yellow]could not be fitted[/]: the sweep has one length "
                    f"({','.join(map(str, requested))} frames); a slope needs two")
        return (f"{head}): [yellow]could not be fitted[/]: S5 finished {len(fitted)} of the {len(requested)} "
                f"lengths ({','.join(map(str, requested))} frames); a slope needs two")
    verdict = check.get("verdict") or ("met" if check["met"] else "missed")
    missing = [f for f in requested if f not in fitted]
    why = f" (S5 did not finish {','.join(map(str, missing))} frames)" if verdict == "incomplete" else ""
    of = f" of {','.join(map(str, requested))}" if missing else ""
    return (f"{head}, fitted on {','.join(map(str, fitted))}{of} frames): "
            f"{_target_value(check)} ({source} {check['target']}) {_MARKS[verdict]}{why}")


def _target_value(check: dict[str, Any]) -> str:
    """The value to 2 decimals, or 3 where 2 would print a bar of the line itself ('0.77 ... <= 0.77 missed')."""
    short = f"{check['value']:.2f}"
    bars = (check["threshold"], check.get("design_threshold"))
    return f"{check['value']:.3f}" if float(short) in bars else short
