"""How much of a model's step time is decided by the process it runs in (why `s5 benchmark --processes`).

    python benchmarks/process_spread.py                       # S4 inference, 60 x 50 x 768, one thread
    python benchmarks/process_spread.py --model s5 --dim 256 --processes 6 --steps 15

Times the same workload two ways: the median of `--steps` steps in each of `--processes` fresh
processes, then `--processes` batches of `--steps` steps in one process. If the first spread is much
wider than the second, one process per model (the benchmark's default) samples a per-process effect
once. Each line also gives the minor page faults of a median step (Linux's `ru_minflt`): a step that
faults thousands of pages maps its buffers afresh every time (glibc returned them after the last step).
Setting glibc's `MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_` (or `GLIBC_TUNABLES`) in the
environment shows how much of it is the allocator.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def minor_faults() -> int:
    """Minor page faults of this process so far (pages mapped in without reading a file)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def time_batches(label: str, dim: int, tokens_per_frame: int, batches: int, steps: int) -> list[list[float]]:
    """[median seconds, median minor page faults] of each batch of `steps` inference steps, in this process
    (3 warm-up steps first)."""
    import torch

    from s5cli.benchmark.workload import PreparedStep, Workload

    torch.set_num_threads(1)
    prepared = PreparedStep(Workload(label=label, mode="infer", frames=60, tokens_per_frame=tokens_per_frame,
                                     dim=dim, batch=1))
    for _ in range(3):
        prepared.run()
    medians = []
    for _ in range(batches):
        times, faults = [], []
        for _ in range(steps):
            faults_before, start = minor_faults(), time.perf_counter()
            prepared.run()
            times.append(time.perf_counter() - start)
            faults.append(minor_faults() - faults_before)
        medians.append([statistics.median(times), statistics.median(faults)])
    return medians


def main() -> int:
    """Print per-process medians and within-process batch medians, in ms, and page faults per step."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="s4", help="benchmark label: s4, s5, transformer, ...")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--tokens-per-frame", type=int, default=50)
    parser.add_argument("--processes", type=int, default=6)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--batches", type=int, default=0, help=argparse.SUPPRESS)  # set by the parent
    args = parser.parse_args()
    if args.batches:  # child: time and print JSON
        print(json.dumps(time_batches(args.model, args.dim, args.tokens_per_frame, args.batches, args.steps)))
        return 0
    command = [sys.executable, __file__, "--model", args.model, "--dim", str(args.dim),
               "--tokens-per-frame", str(args.tokens_per_frame), "--steps", str(args.steps)]

    def child(batches: int) -> list[list[float]]:
        out = subprocess.run([*command, "--batches", str(batches)], capture_output=True, text=True, check=True)
        return json.loads(out.stdout.splitlines()[-1])

    fresh = [child(1)[0] for _ in range(args.processes)]
    within = child(args.processes)
    print(f"{args.model} inference, 60 x {args.tokens_per_frame} x {args.dim}, one thread, median of "
          f"{args.steps} steps (ms; page faults per step)")
    for label, batches in (("fresh processes:", fresh), ("one process:", within)):
        print(f"{label:<19}" + ", ".join(f"{1e3 * seconds:.1f}" for seconds, _ in batches)
              + "; faults " + ", ".join(f"{faults:.0f}" for _, faults in batches))
    return 0


if __name__ == "__main__":
    sys.exit(main())
