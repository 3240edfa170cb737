"""Issue 6's full model benchmark in one go: default size, paper size, length sweep and kernel stage.

    python benchmarks/models.py                          # everything, results in benchmarks/results/<date>/
    python benchmarks/models.py --only default,kernel    # a subset
    python benchmarks/models.py --device cuda            # on a GPU (defaults there are the paper size)

Each part is one `s5 benchmark` command (printed before it runs, so it can be re-run by hand) writing
JSON (and, for the sweep, a plot). At the end the target checks of every part are listed together.
The paper-size training step of the transformer takes minutes per step on a small CPU: on CPU that
part runs under a time budget, so the transformer is reported "over budget" there instead of blocking.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

PAPER = ["--frames", "60", "--tokens-per-frame", "197", "--dim", "1024", "--batch", "1"]
PARTS: dict[str, list[str]] = {
    "default": ["--frames", "60", "--compare", "vit,s4,random"],
    "paper": [*PAPER, "--compare", "vit,s4", "--repeat", "2"],
    "sweep": ["--sweep", "15,30,60,120,240,480", "--compare", "vit,s4", "--mode", "infer"],
    "kernel": ["--stage", "kernel"],
    "kernel-paper": ["--stage", "kernel", *PAPER, "--repeat", "3"],
}
CPU_PAPER_TIME_BUDGET = "300"  # seconds per step; the CPU transformer training step at 11,820 tokens exceeds it


def main() -> int:
    """Run the selected parts and print every target check."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts of: {', '.join(PARTS)}")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads per model (s5 benchmark --threads); 1 on a machine shared with other work")
    parser.add_argument("--out", type=Path, default=None, help="results folder [benchmarks/results/<utc date>]")
    args = parser.parse_args()
    out = args.out or Path(__file__).parent / "results" / time.strftime("%Y-%m-%dT%H%M", time.gmtime())
    out.mkdir(parents=True, exist_ok=True)
    summary = []
    for part in [p.strip() for p in args.only.split(",") if p.strip()]:
        if part not in PARTS:
            parser.error(f"unknown part {part!r}; choose from {', '.join(PARTS)}")
        command = ["s5", "benchmark", *PARTS[part], "--device", args.device, "--json", str(out / f"{part}.json")]
        if args.threads:
            command += ["--threads", str(args.threads)]
        if part == "sweep":
            command += ["--plot", str(out / "sweep.png")]
        if part == "paper" and args.device in ("auto", "cpu"):
            command += ["--time-budget", CPU_PAPER_TIME_BUDGET]
        print(f"$ {shlex.join(command)}", file=sys.stderr, flush=True)
        code = subprocess.run(command, check=False).returncode
        result_file = out / f"{part}.json"
        if code != 0 or not result_file.is_file():
            summary.append(f"{part}: failed (exit code {code})")
            continue
        report = json.loads(result_file.read_text())
        summary += [target_line(part, check) for check in report.get("targets", [])]
    print("\n".join(summary))
    return 0


def target_line(part: str, check: dict) -> str:
    """One target check of the summary, by its verdict. Why not `met`: a slope that could not be fitted
    (value None) crashed the summary, and one judged "incomplete" (met None) read MISSED."""
    frames = check.get("frames")
    if isinstance(frames, list):  # a slope: the lengths it was fitted on, of those asked for
        requested = check.get("requested_frames", frames)
        frames = ",".join(map(str, frames)) + ("" if requested == frames else f" of {','.join(map(str, requested))}")
    where = check["mode"] + (f", {frames} frames" if frames else "")
    versus = "" if check["model"] == "s5" else f" vs {check['model']}"
    value = "" if check["value"] is None else f" = {check['value']:.2f}"
    verdict = check.get("verdict") or ("met" if check["met"] else "missed")
    return (f"{part}: S5 {check['metric']}{versus} ({where}){value} (target {check['target']}) "
            f"{'MISSED' if verdict == 'missed' else verdict}")


if __name__ == "__main__":
    sys.exit(main())
