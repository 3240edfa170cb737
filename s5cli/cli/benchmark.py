"""`s5 benchmark`: measure speed and memory of S5 against S4 (ViS4mer) and a video transformer."""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any

import typer

from s5cli.cli.help_text import flag
from s5cli.io import is_stdout

# Defaults on a CPU: the token grid of ViT-B/32 at 224 px (7 x 7 patches + CLS = 50 tokens of 768-d, as
# CLIP ViT-B/32 gives), the widest standard ViT whose full default run (3 models, inference and training)
# ends in about two minutes on 2 cores (107-126 s on this project's VM; 1024-d, ViT-L/32's grid, 150 s).
# The width was 256 until 2026-11-30, a width no backbone produces: there S5's fixed selection cost (the guide
# and mask generator read every token) is a third of S4's step, and the ratio vs S4 measured 1.0-1.5x
# (benchmarks/README.md). On CUDA the default is the paper's LVU setting: 60 frames x 197 ViT-L tokens x 1024-d.
CPU_TOKENS_PER_FRAME, CPU_DIM = 50, 768
PAPER_TOKENS_PER_FRAME, PAPER_DIM = 197, 1024
SWEEP_TIME_BUDGET_S = 60.0
DEFAULT_MIN_TIME_S = 1.0
MAX_INPUT_ELEMENTS = 2**63 - 1  # a tensor's element count is an int64

_EPILOG = (
    "Examples:\n\n"
    "  s5 benchmark --frames 60 --compare vit          # S5 vs the transformer\n\n"
    "  s5 benchmark --tokens-per-frame 197 --dim 1024  # the paper's LVU size\n\n"
    "  s5 benchmark --sweep 15,30,60,120,240,480 --plot sweep.png\n\n"
    "  s5 benchmark --stage kernel                     # S4 kernel + FFT alone"
)


def benchmark(
    frames: int = typer.Option(60, "--frames", help="Frames per clip (T)."),
    tokens_per_frame: int | None = typer.Option(
        None, "--tokens-per-frame", help=f"Tokens per frame (S) \\[default: {CPU_TOKENS_PER_FRAME} on CPU, "
        f"{PAPER_TOKENS_PER_FRAME} on CUDA]."),
    dim: int | None = typer.Option(
        None, "--dim", help=f"Token dimension (D) \\[default: {CPU_DIM} on CPU, {PAPER_DIM} on CUDA]."),
    batch: int = typer.Option(1, "--batch", help="Clips per step (B)."),
    keep_ratio: float = typer.Option(0.5, "--keep-ratio", help="Fraction of tokens S5 keeps."),
    compare: str = typer.Option(
        "vit,s4", "--compare", help="Models measured besides S5: vit (transformer), s4 (ViS4mer), random "
        "(S5 with random selection), uniform."),
    mode: str = typer.Option("both", "--mode", help="infer, train (forward+backward+AdamW step) or both."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:N or auto."),
    sweep: str | None = typer.Option(
        None, "--sweep", help="Comma-separated frame counts, e.g. 15,30,60,120,240,480 (replaces --frames)."),
    repeat: int | None = typer.Option(
        None, "--repeat", help="Timed steps per model, in alternating rounds (fast models take more: "
        "--min-time) \\[default: 5; 3 in a sweep]."),
    warmup: int = typer.Option(1, "--warmup", help="Untimed warm-up steps per model."),
    min_time: float = typer.Option(  # "50" is runner.MAX_TIMED_STEPS (not imported here: start-up time)
        DEFAULT_MIN_TIME_S, "--min-time", help="After the --repeat rounds, models whose timed steps add up to "
        "less than this many seconds go on stepping (at most 50 steps), alternating with every model at most 4x "
        "slower: a 30 ms step then gets ~30 samples, a short burst of load moves its median less, and models of "
        "similar speed are timed over the same stretch. 0 = exactly --repeat steps."),
    processes: int = typer.Option(
        1, "--processes", help="Fresh worker processes per model whose timed steps are pooled (each builds, "
        "warms up and times --repeat steps). A process's speed depends on its own allocator history, so 3 "
        "gives steadier ratios than 1 at the cost of more start-ups."),
    threads: int | None = typer.Option(
        None, "--threads", help="CPU threads per model \\[default: torch's default, all cores]. On a machine "
        "shared with other work, --threads 1 gives far steadier timings."),
    time_budget: float | None = typer.Option(
        None, "--time-budget", help=f"Seconds one timed step may take before the model is marked over budget "
        f"(warm-up and memory-run steps, cold by design, are not held to it) "
        f"\\[default: none; {SWEEP_TIME_BUDGET_S:g} in a sweep]."),
    memory_budget: str | None = typer.Option(  # "twice": runner.TIMING_MEMORY_CEILING (not imported: start-up)
        None, "--memory-budget", help="Peak memory one model may use, e.g. 8GB, judged on the peak memory reported "
        "(the memory run's); a timing process is only stopped at twice the budget (on CPU at most its share of the free memory) \\[default on CPU: 80 % of the "
        "available memory, shared by the models]."),
    stage: str = typer.Option("model", "--stage", help="model (whole models) or kernel (S4 kernel + FFT conv)."),
    amp: bool | None = flag(None, "--amp/--no-amp", help="Mixed precision \\[default: on for CUDA]."),
    cuda_graphs: bool | None = flag(
        None, "--cuda-graphs/--no-cuda-graphs", help="CUDA: capture each model's step once as a CUDA graph and "
        "time replays of it, every model alike (small batches are otherwise bound by launching operators) "
        "\\[default: on for CUDA]."),
    json_path: Path | None = typer.Option(None, "--json", help="Write the full results as JSON here ('-' = stdout, the table then goes to stderr)."),
    plot_path: Path | None = typer.Option(None, "--plot", help="Write time and memory vs frames (log-log) here."),
    seed: int = typer.Option(0, "--seed", help="Seed for weights, inputs and selection."),
    quiet: bool = flag(False, "--quiet", "-q", help="No progress lines (the settings, the table and the "
                       "results stay)."),
) -> None:
    """Measure speed and memory of S5 against S4 (ViS4mer) and a video transformer.

    Each model runs in its own worker process; all are warmed up, then timed in alternating order. Peak
    memory comes from a second, fresh process per model afterwards (on CPU with glibc's mmap threshold
    fixed at 64 KiB, so freed blocks leave RSS: see benchmarks/README.md). Reports median step time with
    its spread, clips/s, tokens/s, peak memory above the process baseline, and S5's ratios against
    every other model. On CUDA each model's step is captured once as a CUDA graph and replayed
    (--no-cuda-graphs: eager steps). Ctrl-C reports (and writes to --json/--plot) what was measured so
    far, exit 130 (--stage kernel then writes nothing).
    """
    from s5cli.benchmark.machine import machine_facts
    from s5cli.benchmark.measure import available_memory, format_bytes, parse_memory_size
    from s5cli.cli.console import stderr, stdout
    from s5cli.errors import Interrupted, RunFailure, UserError
    from s5cli.stop_signals import signal_of, stop_outcome

    torch_device = _resolve_device(device)
    on_cuda = torch_device.startswith("cuda")
    # `is None`, not `or`: an explicit 0 (or --sweep '') is a mistake to report, not a request for the default.
    if tokens_per_frame is None:
        tokens_per_frame = PAPER_TOKENS_PER_FRAME if on_cuda else CPU_TOKENS_PER_FRAME
    if dim is None:
        dim = PAPER_DIM if on_cuda else CPU_DIM
    frame_counts = _parse_sweep(sweep) if sweep is not None else [frames]
    _check_sizes(frame_counts, sweep, tokens_per_frame, dim, batch, keep_ratio, warmup, repeat)
    from s5cli.seeding import check_seed

    check_seed(seed)
    if threads is not None and threads < 1:
        raise UserError(f"--threads {threads}: must be at least 1")
    if processes < 1:
        raise UserError(f"--processes must be at least 1, got {processes}")
    if not min_time >= 0:
        raise UserError(f"--min-time must be 0 or more seconds, got {min_time:g}")
    if stage not in ("model", "kernel"):
        raise UserError(f"--stage must be 'model' or 'kernel', got {stage!r}")
    if plot_path is not None:
        if stage == "kernel":
            raise UserError("--plot draws the model stage; drop --plot or use --stage model")
        _require_matplotlib()
    _check_output_paths(json_path, plot_path)
    if stage == "kernel":
        model_only = {
            "--compare": compare != "vit,s4", "--mode": mode != "both", "--time-budget": time_budget is not None,
            "--memory-budget": memory_budget is not None, "--warmup": warmup != 1, "--keep-ratio": keep_ratio != 0.5,
            "--amp/--no-amp": amp is not None, "--cuda-graphs/--no-cuda-graphs": cuda_graphs is not None,
            "--sweep (several lengths)": len(frame_counts) > 1,
            "--processes": processes != 1, "--min-time": min_time != DEFAULT_MIN_TIME_S,
        }
        if any(model_only.values()):
            given = ", ".join(name for name, set_ in model_only.items() if set_)
            raise UserError(f"--stage kernel times the S4 kernel and FFT convolution alone; drop {given} "
                            "(used by --stage model only)")
    if amp and not on_cuda:  # autocast is CUDA-only here: the report would say "amp" for float32 steps
        raise UserError(f"--amp needs a GPU (--device cuda); on {torch_device} the models run in float32")
    amp = on_cuda if amp is None else amp
    if cuda_graphs and not on_cuda:
        raise UserError(f"--cuda-graphs needs a GPU (--device cuda); this run is on {torch_device}")
    cuda_graphs = on_cuda if cuda_graphs is None else cuda_graphs
    if stage == "kernel":
        if threads:
            import torch

            torch.set_num_threads(threads)
        _run_kernel_stage(torch_device, dim, frame_counts[-1] * tokens_per_frame, batch, repeat or 5, seed,
                          json_path)
        return

    from s5cli.benchmark.report import build_report, render
    from s5cli.benchmark.runner import MAX_TIMED_STEPS, interrupted_measurements, iter_sweep, run_group
    from s5cli.benchmark.worker_handle import ERROR, OK
    from s5cli.benchmark.workload import MODES, Workload, canonical_label

    labels = ["s5", *_parse_compare(compare, canonical_label)]
    modes = list(MODES) if mode == "both" else [mode]
    if mode not in ("both", *MODES):
        raise UserError(f"--mode must be infer, train or both, got {mode!r}")
    repeat = repeat or (3 if sweep else 5)
    if time_budget is None and sweep:
        time_budget = SWEEP_TIME_BUDGET_S
    if time_budget is not None and not (math.isfinite(time_budget) and time_budget > 0):
        raise UserError(f"--time-budget {time_budget:g}: must be a positive number of seconds")
    budget_bytes = _memory_budget(memory_budget, parse_memory_size, available_memory, on_cuda, len(labels))

    settings = {
        "frames": frame_counts if sweep else frames, "tokens_per_frame": tokens_per_frame, "dim": dim,
        "batch": batch, "keep_ratio": keep_ratio, "models": labels, "modes": modes, "device": torch_device,
        "amp": amp, "cuda_graphs": cuda_graphs, "repeat": repeat, "min_time_s": min_time, "processes": processes,
        "warmup": warmup, "threads": threads, "seed": seed, "sweep": bool(sweep),
        "time_budget_s": time_budget, "memory_budget_bytes": budget_bytes,
    }
    stderr.print(
        f"[bold]s5 benchmark[/] on {torch_device}: frames {','.join(map(str, frame_counts))}, "
        f"{tokens_per_frame} tokens/frame, dim {dim}, batch {batch}, keep ratio {keep_ratio}, "
        f"models {', '.join(labels)}, modes {', '.join(modes)}, {warmup} warm-up + {repeat} timed steps"
        + (f" (more, up to {MAX_TIMED_STEPS}, until {min_time:g} s of them)" if min_time > 0 else "")
        + (f" in each of {processes} processes per model" if processes > 1 else "")
        + (f", {threads} thread(s) per model" if threads else "")
        + (", CUDA graphs" if cuda_graphs else "")
        + (f", time budget {time_budget:g} s/step" if time_budget else "")
        + (f", memory budget {format_bytes(budget_bytes)}/model" if budget_bytes else ""))
    _print_timing_environment(stderr)
    if not on_cuda and (tokens_per_frame, dim) == (CPU_TOKENS_PER_FRAME, CPU_DIM):
        stderr.print(f"[dim]CPU defaults; the paper's LVU size is --tokens-per-frame {PAPER_TOKENS_PER_FRAME} "
                     f"--dim {PAPER_DIM}[/]")

    def progress(message: str) -> None:
        if not quiet:
            stderr.print(f"[dim]{message}[/]")

    measurements = []
    stopped: tuple[str, int] | None = None  # (word, exit code) of a Ctrl-C or SIGTERM
    try:
        for run_mode in modes:
            base = [Workload(label=label, mode=run_mode, frames=frame_counts[0], tokens_per_frame=tokens_per_frame,
                             dim=dim, batch=batch, keep_ratio=keep_ratio, device=torch_device, amp=amp, seed=seed,
                             warmup=warmup, threads=threads, cuda_graphs=cuda_graphs) for label in labels]
            if sweep:  # group by group: Ctrl-C keeps the lengths already measured
                for group in iter_sweep(base, frame_counts, repeat, processes=processes, time_budget=time_budget,
                                        memory_budget=budget_bytes, progress=progress, min_time=min_time):
                    measurements += group
            else:
                measurements += run_group(base, repeat, processes=processes, time_budget=time_budget,
                                          memory_budget=budget_bytes, progress=progress, min_time=min_time)
    except KeyboardInterrupt as stop:
        measurements += interrupted_measurements(stop)  # the stopped group's finished steps, marked
        if not measurements:
            raise
        stopped = stop_outcome(signal_of(stop))
        stderr.print(f"[yellow]{stopped[0]}: reporting the {len(measurements)} measurements finished so far[/]")
    report = build_report(measurements, {**settings, "interrupted": stopped is not None},
                          machine_facts(torch_device))
    render(report, stderr if is_stdout(json_path) else stdout)
    _write_outputs(report, json_path, plot_path)
    if stopped is not None:
        word, code = stopped
        raise Interrupted(f"{word}; the results above and in --json/--plot are partial", exit_code=code)
    failed = [r for r in report["results"] if r["status"] == ERROR]
    if report["results"] and not failed and all(r["status"] != OK for r in report["results"]):
        raise RunFailure("nothing was measured: every model went over its budget; raise --time-budget or "
                         "--memory-budget, or measure smaller sizes")
    if failed:
        first = failed[0]
        raise RunFailure(f"{len(failed)} measurement(s) failed, e.g. {first['model']} {first['mode']} "
                         f"{first['frames']} frames: {first['reason']}")


# cleandoc first: the epilog is not indented, and a docstring whose lines differ in indentation keeps it.
benchmark.__doc__ = inspect.cleandoc(benchmark.__doc__ or "") + "\n\n" + _EPILOG


def _resolve_device(device: str) -> str:
    """The workers' device: "auto" is CUDA where there is one; anything else is checked as every command
    checks --device (a CUDA index this machine has, no "mps" or typo)."""
    import torch

    from s5cli.train.distributed import check_device

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(check_device(device))


def _parse_sweep(text: str) -> list[int]:
    from s5cli.errors import UserError

    try:
        counts = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise UserError(f"--sweep takes comma-separated frame counts like 15,30,60, got {text!r}") from None
    if not counts:
        raise UserError(f"--sweep {text!r}: needs at least one frame count, e.g. 15,30,60")
    return counts


def _parse_compare(text: str, canonical) -> list[str]:
    """The models measured beside S5, in the order given; a list naming none of them (',', 's5') is refused:
    it ran S5 alone, a table without a single ratio, and no word that the comparison had been dropped."""
    from s5cli.benchmark.workload import LABEL_ALIASES, MODEL_LABELS
    from s5cli.errors import UserError

    labels: list[str] = []
    for part in text.split(","):
        if not part.strip():
            continue
        try:
            label = canonical(part)
        except ValueError as error:
            raise UserError(str(error)) from None
        if label != "s5" and label not in labels:
            labels.append(label)
    if not labels:
        choices = [name for name in [*MODEL_LABELS, *LABEL_ALIASES] if canonical(name) != "s5"]
        raise UserError(f"--compare {text!r} names no model to measure beside S5 (always measured); "
                        f"choose from {', '.join(choices)}")
    return labels


def _check_sizes(frame_counts: list[int], sweep: str | None, tokens_per_frame: int, dim: int, batch: int,
                 keep_ratio: float, warmup: int, repeat: int | None) -> None:
    """Refuse the first bad size by its flag and value: a message listing several flags leaves the user guessing.

    `frame_counts` is --sweep parsed when `sweep` (its text as given) is set, else [--frames].
    """
    from s5cli.errors import UserError

    if sweep is not None and min(frame_counts) < 1:
        raise UserError(f"--sweep {sweep}: every frame count must be at least 1")
    counts = [("--frames", frame_counts[0])] if sweep is None else []
    for option, value in (*counts, ("--tokens-per-frame", tokens_per_frame), ("--batch", batch)):
        if value < 1:
            raise UserError(f"{option} {value}: must be at least 1")
    if dim < 8 or dim % 8:
        raise UserError(f"--dim must be a positive multiple of 8 (the S4 decoder halves it 3 times), got {dim}")
    elements = batch * max(frame_counts) * tokens_per_frame * dim
    if elements > MAX_INPUT_ELEMENTS:  # torch's sizes are int64: past it the workers fail with an overflow
        raise UserError(f"--batch x frames x --tokens-per-frame x --dim is {elements:.3g} numbers, more than a tensor "
                        f"can hold ({MAX_INPUT_ELEMENTS:.3g}): use smaller sizes")
    if not 0.0 < keep_ratio <= 1.0:
        raise UserError(f"--keep-ratio {keep_ratio} is out of range: use a value in (0, 1]")
    if warmup < 0:
        raise UserError(f"--warmup {warmup}: must be 0 or more")
    if repeat is not None and repeat < 1:
        raise UserError(f"--repeat {repeat}: must be at least 1")


def _memory_budget(text: str | None, parse, available, on_cuda: bool, models: int) -> int | None:
    from s5cli.errors import UserError

    if text is not None:
        try:
            budget = parse(text)
        except ValueError as error:
            raise UserError(f"--memory-budget: {error}") from None
        if budget <= 0:
            raise UserError(f"--memory-budget {text}: must be more than 0 (e.g. 8GB)")
        return budget
    if on_cuda:
        return None  # the allocator raises out-of-memory, which is reported as over budget
    free = available()
    # All workers of a group stay alive between their turns, so they share what is free.
    return None if free is None else int(0.8 * free / models)


def _check_output_paths(json_path: Path | None, plot_path: Path | None) -> None:
    """Check --json and --plot before measuring: a typo must not cost a finished hour-long run."""
    from s5cli.errors import UserError
    from s5cli.io import (
        check_writable_folder,
        refuse_replacing_another_kind,
        refuse_streams_and_devices,
        same_file,
    )

    if plot_path is not None:
        from s5cli.benchmark.plot import check_plot_path

        check_plot_path(plot_path)
    for option, path in (("--json", json_path), ("--plot", plot_path)):
        if path is None or (option == "--json" and is_stdout(path)):
            continue
        refuse_streams_and_devices(path, option)
        if path.is_dir():
            raise UserError(f"{option} {path} is a folder: name a file, e.g. {path / 'benchmark'}"
                            f"{'.json' if option == '--json' else '.png'}")
        check_writable_folder(path.parent, f"{option} folder", f"write {option} somewhere else")
        if option == "--json":
            refuse_replacing_another_kind(path, option, "benchmark.json")
    if json_path is not None and plot_path is not None and not is_stdout(json_path) and same_file(json_path, plot_path):
        raise UserError(f"--json and --plot are both {json_path}: the plot would replace the JSON; give each its "
                        f"own file, e.g. --json {json_path.with_suffix('.json')} --plot {plot_path.with_suffix('.png')}")


def _require_matplotlib() -> None:
    import importlib.util

    from s5cli.errors import UserError

    if importlib.util.find_spec("matplotlib") is None:
        raise UserError("--plot needs matplotlib: pip install 's5cli[plot]' (or pip install matplotlib)")


def _print_timing_environment(console: Any) -> None:
    """Name the set variables that move CPU timings (the workers inherit them): see benchmark/machine.py."""
    from s5cli.benchmark.machine import describe_environment, timing_environment

    line = describe_environment(timing_environment())
    if line:
        console.print(f"[dim]{line}[/]", highlight=False)


def _write_outputs(report: dict[str, Any], json_path: Path | None, plot_path: Path | None) -> None:
    from s5cli.cli.console import stderr
    from s5cli.io import atomic_write_json

    if is_stdout(json_path):
        import json

        typer.echo(json.dumps(report, indent=2, sort_keys=True))
    elif json_path is not None:
        atomic_write_json(json_path, report, follow_symlinks=True)
        stderr.print(f"wrote {json_path}")
    if plot_path is not None:
        _write_plot(report, plot_path, json_path)
        stderr.print(f"wrote {plot_path}")


def _write_plot(report: dict[str, Any], plot_path: Path, json_path: Path | None) -> None:
    """`write_plot`, a failure of matplotlib's (TeX, fonts: what `check_plot_path` cannot foresee) one line
    that says the JSON is kept, not a traceback after the whole run."""
    from s5cli.benchmark.plot import write_plot
    from s5cli.errors import RunFailure, UserError, first_line

    try:
        write_plot(report, plot_path)
    except UserError:
        raise
    except Exception as error:
        kept = "" if json_path is None else f"; the results are in --json {json_path}"
        raise RunFailure(f"--plot {plot_path}: the plot could not be written: {first_line(error).rstrip(':')}"
                         f"{kept}") from error


def _run_kernel_stage(device: str, channels: int, length: int, batch: int, repeat: int, seed: int,
                      json_path: Path | None) -> None:
    from s5cli.benchmark.kernel import kernel_stage, render_kernel
    from s5cli.benchmark.machine import machine_facts
    from s5cli.cli.console import stderr, stdout

    stderr.print(f"[bold]s5 benchmark --stage kernel[/] on {device}: H={channels} channels, L={length}, "
                 f"batch {batch}, {repeat} timed runs")
    _print_timing_environment(stderr)
    report = kernel_stage(channels=channels, length=length, batch=batch, device=device, repeat=repeat, seed=seed)
    report = {"schema": "s5cli-benchmark/1", **report, "machine": machine_facts(device)}
    render_kernel(report, stderr if is_stdout(json_path) else stdout)
    _write_outputs(report, json_path, None)
