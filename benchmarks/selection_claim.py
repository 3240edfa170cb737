"""The mission's core claim on the bundled synthetic task, measured over several seeds.

1. Selection: at the same keep ratio, S5's learned selection vs random-token selection vs no selection
   (ViS4mer / "s4", every token kept).
2. Pretraining: with few labels, LSMCL pretraining (recipes/pretrain-lsmcl.yaml: all 400 training videos,
   labels unused) then finetuning vs finetuning from scratch on the same few labelled videos. This part runs on
   the shared-background variant of the task (`data.synthetic.shared_background=true`, the pretraining
   recipe's data): with a clutter movie of its own per video, LSMCL learns to recognise videos by their clutter
   (see benchmarks/README.md). A linear probe on the frozen features (benchmarks/linear_probe.py) of the
   pretrained encoder and of a randomly initialised one shows what the pretraining itself learned.

Every number comes from the `s5` commands a user runs (`s5 finetune`, `s5 pretrain`, `s5 eval`), one
subprocess each, and is printed as a Markdown table (paste into README) and saved as JSON.

    python benchmarks/selection_claim.py --seeds 0 1 2 --out benchmarks/results/selection_claim.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
RECIPE = str(RECIPES / "synthetic.yaml")
PRETRAIN_RECIPE = str(RECIPES / "pretrain-lsmcl.yaml")
SHARED_BACKGROUND = "data.synthetic.shared_background=true"

VARIANTS = {
    "S5 (learned selection)": ["model.name=s5", "model.selector=learned"],
    # Ablation: the paper's plain Gumbel draw from the first step (the recipe anneals from T = 8).
    "S5, no exploration (T = 1)": ["model.name=s5", "model.selector=learned", "model.explore_temperature=1.0"],
    "random selection": ["model.name=s5", "model.selector=random"],
    "S4 / ViS4mer (no selection)": ["model.name=s5", "model.selector=none"],
}

# Part 2 finetunes with the paper's head and with a batch-normalised one (model.head_norm=batch), which changes
# how well finetuning from scratch does on few labels.
FEW_LABEL_HEADS = {"paper head": [], "BN head": ["model.head_norm=batch"]}


def run(cmd: list[str]) -> None:
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}")
    print(f"  done in {time.perf_counter() - started:.0f}s: {' '.join(cmd[3:6])} ...", file=sys.stderr)


def finished(marker: Path, result: Path | None = None) -> bool:
    """Whether a result of an earlier invocation can be reused (resuming an interrupted measurement), said
    aloud: `result` (default: the run folder holding `marker`).

    Why aloud: a work folder kept across code changes silently mixed old runs into a re-measurement once
    (README, Measured results); use a new --work folder to measure everything afresh.
    """
    if not marker.exists():
        return False
    print(f"  reusing {result or marker.parent} (from an earlier invocation; use a new --work folder to "
          "measure it again)", file=sys.stderr)
    return True


def test_top1(run_dir: Path, work: Path, tag: str) -> float:
    out = work / f"{tag}.eval.json"
    run([sys.executable, "-m", "s5cli", "eval", "--checkpoint", str(run_dir / "best"), "--split", "test",
         "--json", str(out), "--quiet"])
    return float(json.loads(out.read_text())["top1"])


def probe_top1(source: list[str], work: Path, tag: str) -> float:
    out = work / f"{tag}.probe.json"
    if not finished(out, out):  # a linear probe's result is reused like a run (it used to be silently)
        run([sys.executable, str(Path(__file__).with_name("linear_probe.py")), *source, "--split", "test",
             "--json", str(out)])
    return float(json.loads(out.read_text())["probe_top1"])


def summarise(values: list[float]) -> str:
    mean = statistics.fmean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.1f} ± {100 * spread:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--keep-ratio", type=float, default=0.5)
    parser.add_argument("--few-labels", type=int, default=96, help="labelled training videos in part 2")
    parser.add_argument("--work", type=Path, default=Path("runs/selection_claim"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/selection_claim.json"))
    parser.add_argument("--pretrain-epochs", type=int, default=40, help="LSMCL epochs in part 2")
    parser.add_argument("--few-epochs", type=int, default=80, help="finetune epochs on the few labels")
    parser.add_argument("--skip-pretrain", action="store_true")
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides for every run")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    finetune = [sys.executable, "-m", "s5cli", "finetune", RECIPE, "--quiet"]
    pretrain = [sys.executable, "-m", "s5cli", "pretrain", PRETRAIN_RECIPE, "--quiet"]
    results: dict[str, dict[str, float]] = {}
    for name, variant in VARIANTS.items():
        for seed in args.seeds:
            tag = f"{name.split()[0].lower().rstrip(',')}-{variant[-1].split('=')[1]}-seed{seed}"
            run_dir = args.work / tag
            if not finished(run_dir / "best"):
                run([*finetune, *variant, f"model.keep_ratio={args.keep_ratio}", f"train.seed={seed}",
                     f"train.out_dir={run_dir}", *args.overrides])
            results.setdefault(name, {})[str(seed)] = test_top1(run_dir, args.work, tag)
    if not args.skip_pretrain:
        for seed in args.seeds:
            pre_dir = args.work / f"lsmcl-pretrain-seed{seed}"
            if not finished(pre_dir / "latest"):
                run([*pretrain, f"train.seed={seed}", f"train.out_dir={pre_dir}",
                     f"train.epochs={args.pretrain_epochs}", *args.overrides])
            probes = (("linear probe, random weights", ["--random", PRETRAIN_RECIPE, f"--seed={seed}"]),
                      ("linear probe, LSMCL weights", [str(pre_dir)]))
            for name, source in probes:
                tag = f"probe-{'random' if '--random' in source else 'lsmcl'}-seed{seed}"
                results.setdefault(name, {})[str(seed)] = probe_top1(source, args.work, tag)
            few = [SHARED_BACKGROUND, f"data.synthetic.num_train={args.few_labels}"]
            for head, head_args in FEW_LABEL_HEADS.items():
                for start, init in (("from scratch", []), ("LSMCL init", [f"train.init={pre_dir}"])):
                    name = f"{args.few_labels} labels, {start}, {head}"
                    suffix = "" if not head_args else "-bnhead"
                    run_dir = args.work / f"{'lsmcl' if init else 'scratch'}-few{args.few_labels}{suffix}-seed{seed}"
                    if not finished(run_dir / "best"):
                        run([*finetune, *few, *head_args, f"train.seed={seed}", f"train.out_dir={run_dir}",
                             f"train.epochs={args.few_epochs}", *init, *args.overrides])
                    results.setdefault(name, {})[str(seed)] = test_top1(run_dir, args.work, run_dir.name)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"keep_ratio": args.keep_ratio, "seeds": args.seeds, "top1": results}, indent=1))
    print(f"| variant (keep ratio {args.keep_ratio}) | test top-1 % (mean ± sd, seeds {args.seeds}) | per seed |")
    print("|---|---|---|")
    for name, per_seed in results.items():
        values = list(per_seed.values())
        print(f"| {name} | {summarise(values)} | {', '.join(f'{100 * v:.1f}' for v in values)} |")


if __name__ == "__main__":
    main()
