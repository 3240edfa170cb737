"""Markdown tables from `s5 benchmark --json` files (how the numbers in benchmarks/README.md were made).

    python benchmarks/results_table.py benchmarks/results/cpu-1thread/*.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _mib(value: float | None) -> str:
    """MiB to one decimal: whole MiB printed 1.54 and 1.38 as 2 and 1, a 10 % difference read as 2x."""
    return "-" if value is None else f"{value / 2**20:,.1f}"


def _seconds(stats: dict | None) -> str:
    if not stats:
        return "-"
    return f"{stats['median']:.3g} ({stats['q1']:.3g}-{stats['q3']:.3g})"


def partial_note(report: dict) -> list[str]:
    """A line above the table of a run that Ctrl-C or SIGTERM stopped (`settings.interrupted`), else none:
    without it a partial run's table looked complete, its missing models and lengths as never asked for."""
    if not report.get("settings", {}).get("interrupted"):
        return []
    cut = sum(1 for row in report["results"] if row.get("interrupted"))
    marked = f"; {cut} row{'s' if cut != 1 else ''} from steps cut short by the stop (marked)" if cut else ""
    return [f"**Partial (interrupted)**: the run was stopped before it finished; models and lengths it did not "
            f"reach are missing{marked}.", ""]


def model_table(report: dict) -> list[str]:
    """Rows with times, throughput, memory and S5 ratios of one model-stage report."""
    ratios = {(r["model"], r["mode"], r["frames"]): r for r in report["ratios"]}
    lines = [*partial_note(report),
             "| model | mode | T x S x D | step s, median (q1-q3) | clips/s | tokens/s | peak MiB | S5 speed-up | S5 memory |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in report["results"]:
        size = f"{row['frames']} x {row['tokens_per_frame']} x {row['dim']}"
        if row["status"] != "ok":
            lines.append(f"| {row['model']} | {row['mode']} | {size} | {row['status']}: {row['reason']} | | | | | |")
            continue
        ratio = ratios.get((row["model"], row["mode"], row["frames"]))
        speed = "1.00x" if row["model"] == "s5" else (f"{ratio['s5_throughput_ratio']:.2f}x" if ratio else "-")
        own = "1.00x" if row["peak_memory_bytes"] else "-"  # a stopped memory run leaves no peak
        memory = own if row["model"] == "s5" else (
            f"{ratio['s5_memory_ratio']:.2f}x" if ratio and ratio["s5_memory_ratio"] else "-")
        cut = ", cut short" if row.get("interrupted") else ""
        lines.append(f"| {row['model']} | {row['mode']} | {size} | {_seconds(row['seconds'])}{cut} | "
                     f"{row['clips_per_s']:.3g} | {row['tokens_per_s']:,.0f} | {_mib(row['peak_memory_bytes'])} | "
                     f"{speed} | {memory} |")
    if report.get("slopes"):
        lines += ["", "| model | mode | frames | time slope | memory slope |", "|---|---|---|---|---|"]
        for slope in report["slopes"]:
            fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
            lines.append(f"| {slope['model']} | {slope['mode']} | {','.join(map(str, slope['frames']))} | "
                         f"{fmt(slope['time_slope'])} | {fmt(slope['memory_slope'])} |")
    return lines


def kernel_table(report: dict) -> list[str]:
    """Rows of one kernel-stage report."""
    limits = report["limits"]
    lines = [f"Machine ({report.get('threads', '?')} thread(s)): matmul {limits['matmul_gflops']:.1f} GFLOP/s, "
             f"copy {limits['copy_gbps']:.1f} GB/s. H={report['channels']}, L={report['length']}.", "",
             "| stage | best ms | GFLOP/s | % of matmul | GB/s | % of copy | top op |", "|---|---|---|---|---|---|---|"]
    for row in report["results"]:
        top = row["profile"][0] if row["profile"] else None
        lines.append(f"| {row['stage']} | {row['best_seconds'] * 1000:.1f} | {row['gflops']:.1f} | "
                     f"{100 * row['fraction_of_matmul']:.0f}% | {row['gbps']:.1f} | {100 * row['fraction_of_copy']:.0f}% | "
                     + (f"{top['op']} {100 * top['share']:.0f}% |" if top else "- |"))
    return lines


def lever_table(report: dict) -> list[str]:
    """Rows of one benchmarks/kernel_levers.py file."""
    lines = ["| model | lever | mode | step s, median | best s | peak MiB |", "|---|---|---|---|---|---|"]
    for row in report["rows"]:
        if "error" in row:
            lines.append(f"| {row['model']} | {row['lever']} | {row['mode']} | error: {row['error']} | | |")
            continue
        lines.append(f"| {row['model']} | {row['lever']} | {row['mode']} | {row['median_s']:.3g} | "
                     f"{row['min_s']:.3g} | {_mib(row['peak_bytes'])} |")
    return lines


def main(paths: list[str]) -> int:
    """Print one table per file; exit 2 naming the first file that is missing or not JSON."""
    for path in paths:
        try:
            report = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            print(f"error: {path}: {error} (give files written by `s5 benchmark --json`)", file=sys.stderr)
            return 2
        print(f"### {Path(path).name}\n")
        environment = report.get("machine", {}).get("environment")  # recorded since v24
        if environment:  # variables that moved the timings (s5cli/benchmark/machine.py)
            print("Environment: " + ", ".join(f"`{name}={value}`" for name, value in environment.items()) + "\n")
        if "rows" in report:
            lines = lever_table(report)
        else:
            lines = kernel_table(report) if report.get("stage") == "kernel" else model_table(report)
        print("\n".join(lines))
        print()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", help="JSON files written by `s5 benchmark --json`")
    sys.exit(main(parser.parse_args().reports))
