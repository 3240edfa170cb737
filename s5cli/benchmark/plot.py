"""`--plot`: step time and peak memory against frames, log-log, one line per model and mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from s5cli.benchmark.worker_handle import OK
from s5cli.errors import UserError
from s5cli.io import atomic_write_path, is_stdout

_INSTALL_HINT = "--plot needs matplotlib: pip install 's5cli[plot]' (or pip install matplotlib)"


def plot_format(path: str | Path) -> str:
    """The format `write_plot` writes `path` in: its suffix, png without one."""
    return Path(path).suffix.lstrip(".").lower() or "png"


def check_plot_path(path: Path) -> None:
    """Refuse, before anything is measured, a --plot that `write_plot` could not write: not a file ('-' is
    stdout for --json, but a plot is no text), a format matplotlib lacks, or .pgf without its TeX program
    (matplotlib runs it to size the labels: it failed with a traceback after the whole run)."""
    import shutil

    import matplotlib
    from matplotlib.backend_bases import FigureCanvasBase

    if is_stdout(path):
        raise UserError("--plot -: a plot cannot go to stdout; name a file, e.g. --plot benchmark.png")
    formats = FigureCanvasBase.get_supported_filetypes()
    suffix = plot_format(path)
    if suffix not in formats:
        raise UserError(f"--plot {path}: matplotlib cannot write {path.suffix} files; use .png, .svg "
                        f"or .pdf (or one of {', '.join(sorted(formats))})")
    texsystem = matplotlib.rcParams["pgf.texsystem"]
    if suffix == "pgf" and shutil.which(texsystem) is None:
        raise UserError(f"--plot {path}: matplotlib writes .pgf with {texsystem}, which is not on PATH; "
                        "use .png, .svg or .pdf, or install TeX")


def write_plot(report: dict[str, Any], path: str | Path) -> Path:
    """Draw the model-stage report to `path` (format from the suffix, e.g. .png, .svg, .pdf)."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed; must precede pyplot
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError(_INSTALL_HINT) from None
    results = report["results"]
    rows = [r for r in results if r["status"] == OK]
    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key in dict.fromkeys((r["model"], r["mode"]) for r in results):
        series = sorted((r for r in rows if (r["model"], r["mode"]) == key), key=lambda r: r["frames"])
        frames = [r["frames"] for r in series]
        label = series_label(key[0], key[1], results)
        style = "-" if key[1] == "infer" else "--"
        time_axis.plot(frames, [r["seconds"]["median"] for r in series], style, marker="o", label=label)
        memory = [(f, r["peak_memory_bytes"] / 2**20) for f, r in zip(frames, series, strict=True)
                  if r["peak_memory_bytes"]]
        memory_axis.plot(*(zip(*memory, strict=True) if memory else ([], [])), style, marker="o", label=label)
    settings = report.get("settings", {})
    subtitle = (f"{settings.get('tokens_per_frame', '?')} tokens/frame, dim {settings.get('dim', '?')}, "
                f"batch {settings.get('batch', '?')}, {report.get('machine', {}).get('device', '')}")
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    all_frames = tick_frames(report)
    for axis, ylabel in ((time_axis, "median step time (s)"), (memory_axis, "peak memory above baseline (MiB)")):
        axis.set_xscale("log")
        axis.set_yscale("log")
        if all_frames:
            # Label the measured lengths themselves; the default minor labels of a log axis overlap.
            axis.set_xticks(all_frames)
            axis.xaxis.set_major_formatter(ScalarFormatter())
            axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_xlabel("frames")
        axis.set_ylabel(ylabel)
        axis.grid(True, which="both", alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    figure.suptitle(f"s5 benchmark: {subtitle}", fontsize=10)
    figure.tight_layout()
    target = Path(path)
    with atomic_write_path(target, follow_symlinks=True) as tmp:
        figure.savefig(tmp, dpi=120, format=plot_format(target))
    plt.close(figure)
    return target


def series_label(model: str, mode: str, results: list[dict[str, Any]]) -> str:
    """A line's legend entry, saying where the model stopped: a sweep's over-budget or failed lengths were
    simply missing from the plot, so a line that ends at 120 frames read like a sweep that ended there."""
    stopped = sorted((r["frames"], r["status"]) for r in results
                     if (r["model"], r["mode"]) == (model, mode) and r["status"] != OK)
    label = f"{model} ({mode})"
    return f"{label}, {stopped[0][1]} from {stopped[0][0]} frames" if stopped else label


def tick_frames(report: dict[str, Any]) -> list[int]:
    """The frame counts to label on the x axis: every length asked for (a sweep's, where some model went
    over budget, too), not only those some model finished."""
    from s5cli.benchmark.report import frames_asked_for

    return frames_asked_for(report.get("settings", {}), report["results"])
