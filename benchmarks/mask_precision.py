"""Do S5's kept tokens land on the synthetic task's events? Precision and coverage of event cells vs chance.

For a checkpoint trained on the bundled synthetic task (`s5 finetune recipes/synthetic.yaml`), every video of a
split is decoded and run through the backbone and the S5 mask generator exactly as `s5 visualize-mask` does, and
the kept patches of each frame are compared with the generator's ground-truth event cells (the `.json` beside
each video). Reported, pooled over all frames of all videos:

- coverage (recall): share of event cells kept; chance = share of all patches kept (about the keep ratio).
- precision: share of kept patches that are event cells; chance = share of all patches that are event cells.
- lift = value / chance (1 = no better than a random selection of the same size).

`--reference` adds a non-learned rule on the same videos and tokens (per frame, keep the patch tokens farthest
from the frame's median token): what a trivial saliency rule reaches, for scale.

Run it from the folder the model was trained in (the synthetic videos live under `.s5cache/synthetic/` there
unless the recipe sets data.root):

    python benchmarks/mask_precision.py runs/synthetic/best
    python benchmarks/mask_precision.py runs/synthetic/best --keep-ratio 0.1 0.25 0.5 --json mask_precision.json
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.1f}%"


def _lift(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}x"


def table(rows: list[dict]) -> str:
    """Markdown table of one result per keep ratio."""
    lines = [
        "| selector | keep ratio | precision | chance | lift | coverage (recall) | chance | lift | videos | frames |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['selector']} | {r['keep_ratio']:.2f} | {_percent(r['precision'])} | {_percent(r['precision_chance'])} | "
            f"{_lift(r['precision_lift'])} | {_percent(r['coverage'])} | {_percent(r['coverage_chance'])} | "
            f"{_lift(r['coverage_lift'])} | {r['videos']} | {r['frames']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", nargs="?", default="runs/synthetic/best",
                        help="S5 checkpoint (or run) folder trained on the synthetic task")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--keep-ratio", type=float, nargs="*", default=None,
                        help="keep ratios to measure (default: the checkpoint's own)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N videos of the split")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--reference", action="store_true",
                        help="also score a non-learned rule (keep the most deviant patch tokens) on the same videos")
    args = parser.parse_args(argv)

    from s5cli.errors import UserError
    from s5cli.seeding import seed_everything
    from s5cli.visualize.precision import synthetic_event_precision

    seed_everything(args.seed)
    rows = []
    try:
        for ratio in args.keep_ratio or [None]:
            for reference in (False, True) if args.reference else (False,):
                result = synthetic_event_precision(
                    args.checkpoint, split=args.split, limit=args.limit, keep_ratio=ratio, device=args.device,
                    seed=args.seed, reference=reference,
                )
                rows.append(result)
                print(
                    f"{result['selector']} keep_ratio={result['keep_ratio']:.2f}: precision {_percent(result['precision'])} "
                    f"(chance {_percent(result['precision_chance'])}, {_lift(result['precision_lift'])}), "
                    f"coverage {_percent(result['coverage'])} (chance {_percent(result['coverage_chance'])}, "
                    f"{_lift(result['coverage_lift'])})",
                    file=sys.stderr,
                )
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"checkpoint {args.checkpoint}, split {args.split}\n")
    print(table(rows))
    if args.json is not None:
        from s5cli.io import atomic_write_json

        atomic_write_json(args.json, {"checkpoint": str(args.checkpoint), "split": args.split, "results": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
