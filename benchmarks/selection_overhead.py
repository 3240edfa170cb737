"""What S5's learned selection costs at inference, measured in one process (issue 6's S5-vs-S4 target).

    python benchmarks/selection_overhead.py                          # 60 x 50 x 768, torch's threads
    python benchmarks/selection_overhead.py --dim 1024 --tokens-per-frame 197 --steps 10 --json out.json

Builds three models of `s5 benchmark`'s workloads at one size: S5 (learned selection), S5 with the
`random` selector (the same decoder on the same number of kept tokens, no guide or mask generator) and
S4 on every token. Their inference steps alternate in one process, a pause before each (as the
benchmark's `SETTLE_S`), so all three see the same machine. Then S5's `select` alone is timed. The
difference S5 - random is what choosing the tokens costs; random vs S4 is the ceiling that removing
half the tokens gives. Why in one process: the benchmark's ratios move with each worker's process and
with load (benchmarks/README.md, "Default size 768"); this separates the model's own cost from that.
"""

from __future__ import annotations

import argparse
import json
import time

from s5cli.benchmark.measure import summarize
from s5cli.benchmark.runner import SETTLE_S  # the benchmark's pause before each timed step


def _summary(times: list[float]) -> dict[str, float]:
    """Median and fastest step in milliseconds (`summarize`, the benchmark's own statistics)."""
    stats = summarize(times)
    return {"median_ms": 1000 * stats["median"], "min_ms": 1000 * stats["min"]}


def measure(dim: int, tokens_per_frame: int, frames: int, steps: int, warmup: int, seed: int) -> dict:
    """Median and fastest inference step of s5, random and s4, alternating; then S5's selection alone."""
    import torch

    from s5cli.benchmark.workload import PreparedStep, Workload

    labels = ("s5", "random", "s4")
    prepared = {
        label: PreparedStep(Workload(label=label, mode="infer", frames=frames, tokens_per_frame=tokens_per_frame,
                                     dim=dim, batch=1, seed=seed))
        for label in labels
    }
    for step in prepared.values():
        for _ in range(warmup):
            step.run()
    times: dict[str, list[float]] = {label: [] for label in labels}
    for _ in range(steps):
        for label, step in prepared.items():
            time.sleep(SETTLE_S)
            start = time.perf_counter()
            step.run()
            times[label].append(time.perf_counter() - start)
    s5 = prepared["s5"]
    select_times = []
    with torch.inference_mode():
        s5.model.select(s5.tokens)
        for _ in range(steps):
            time.sleep(SETTLE_S)
            start = time.perf_counter()
            s5.model.select(s5.tokens)
            select_times.append(time.perf_counter() - start)
    models = {label: _summary(values) for label, values in times.items()}
    median = {label: row["median_ms"] for label, row in models.items()}
    return {
        "size": {"frames": frames, "tokens_per_frame": tokens_per_frame, "dim": dim, "batch": 1},
        "threads": torch.get_num_threads(),
        "steps": steps,
        "models": models,
        "s5_select": _summary(select_times),
        "ratios_from_medians": {
            "s4_over_s5": median["s4"] / median["s5"],
            "s4_over_random": median["s4"] / median["random"],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--tokens-per-frame", type=int, default=50)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    result = measure(args.dim, args.tokens_per_frame, args.frames, args.steps, args.warmup, args.seed)
    for label, row in result["models"].items():
        print(f"{label:<7} median {row['median_ms']:6.1f} ms   fastest {row['min_ms']:6.1f} ms")
    select = result["s5_select"]
    print(f"S5 select alone: median {select['median_ms']:.1f} ms, fastest {select['min_ms']:.1f} ms")
    ratios = result["ratios_from_medians"]
    print(f"S4 / S5 {ratios['s4_over_s5']:.2f}x   S4 / random-selector S5 {ratios['s4_over_random']:.2f}x")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
