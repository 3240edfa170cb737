"""Peak memory and time of `s5 finetune` at several `train.accumulate` settings (gradient accumulation).

Every run is a fresh `s5 finetune` process, and its own peak RSS is reported: Python, torch, the
cached tokens and the model are in every figure, so the *difference* between settings is what
accumulation saves. The default is a wider S5 than the bundled recipe's (d_model 512, batch 32): large
enough that activations, not the interpreter, dominate the peak.

    python benchmarks/accumulate_memory.py                          # accumulate 1, 2, 4
    python benchmarks/accumulate_memory.py --accumulate 1 8 --d-model 1024 --json out.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "synthetic.yaml"
# Runs `s5 finetune` as its only child and prints that child's peak RSS (KiB on Linux): a per-run figure,
# where this script's own RUSAGE_CHILDREN would be the maximum over all runs so far.
_MEASURE = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)\n"
)


def measure(accumulate: int, d_model: int, batch: int, epochs: int, workdir: Path, seed: int, name: str) -> dict:
    """One `s5 finetune` run into workdir/name: peak RSS in MiB, wall seconds, and the final training loss."""
    out = workdir / name
    command = [
        sys.executable, "-m", "s5cli", "finetune", str(RECIPE), "--quiet", "--out", str(out), "--seed", str(seed),
        f"model.d_model={d_model}", f"train.batch_size={batch}", f"train.accumulate={accumulate}",
        f"train.epochs={epochs}", f"data.cache_dir={workdir / 'features'}", f"data.root={workdir / 'videos'}",
    ]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _MEASURE, *command], capture_output=True, text=True, cwd=workdir)
    seconds = time.perf_counter() - start
    last = done.stdout.strip().splitlines()[-1].split() if done.stdout.strip() else ["0", "1"]
    if done.returncode or last[1] != "0":
        raise SystemExit(f"s5 finetune failed (accumulate={accumulate}):\n{done.stderr[-2000:]}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    losses = [r["loss"] for r in records if "loss" in r]
    return {"accumulate": accumulate, "peak_rss_mib": int(last[0]) / 1024, "seconds": seconds,
            "final_loss": losses[-1] if losses else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accumulate", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--d-model", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="s5-accumulate-") as tmp:
        workdir = Path(tmp)
        # Videos and tokens are made once, by an untimed warm-up run, so every measured run reads the cache.
        measure(1, 16, args.batch, 1, workdir, args.seed, "warm-up")
        rows = [measure(n, args.d_model, args.batch, args.epochs, workdir, args.seed, f"accumulate-{n}")
                for n in args.accumulate]
    print(f"S5 d_model {args.d_model}, batch {args.batch}, {args.epochs} epoch(s) of recipes/synthetic.yaml")
    print(f"{'accumulate':>10} {'peak RSS':>10} {'wall':>8} {'final loss':>11}")
    for row in rows:
        print(f"{row['accumulate']:>10} {row['peak_rss_mib']:>7.0f} MiB {row['seconds']:>7.1f}s "
              f"{row['final_loss']:>11.4f}")
    if args.json is not None:
        settings = {"d_model": args.d_model, "batch": args.batch, "epochs": args.epochs, "seed": args.seed}
        args.json.write_text(json.dumps({"settings": settings, "runs": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
