"""Linear probe: how much of the label a frozen encoder's features already carry.

Self-supervised pretraining (LSMCL) is judged by what the features know before any finetuning: the encoder is
frozen, its pooled features (`forward_features`, eval mode) of every training video are standardised, and a
logistic-regression head is fitted on them (full-batch L-BFGS, L2 penalty); the score is top-1 on another split.
Random weights (`--random`) are the baseline a pretraining must beat.

    python benchmarks/linear_probe.py runs/pretrain-lsmcl/best
    python benchmarks/linear_probe.py --random recipes/pretrain-lsmcl.yaml
    python benchmarks/linear_probe.py runs/pretrain-lsmcl/best data.synthetic.shared_background=true
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from torch import Tensor


class _Features(torch.nn.Module):
    """The encoder's pooled features as the output, so the trainer's `predict` can run it."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor) -> Tensor:
        return self.model.forward_features(tokens.float())


def pooled_features(model: torch.nn.Module, dataset, batch_size: int = 32) -> tuple[Tensor, Tensor]:
    """(N, F) features and (N,) labels, one row per video (its windows averaged, as `s5 eval` does)."""
    from s5cli.train.evaluation import predict
    from s5cli.train.metrics import aggregate_by_video

    ids, features, labels = predict(_Features(model), dataset, batch_size, torch.device("cpu"))
    _, merged, merged_labels = aggregate_by_video(ids, features, labels, kind="features")
    return merged, merged_labels


def fit_probe(train_x: Tensor, train_y: Tensor, num_classes: int, l2: float) -> torch.nn.Linear:
    """Multinomial logistic regression by L-BFGS (deterministic, no learning rate to tune)."""
    head = torch.nn.Linear(train_x.shape[1], num_classes)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    optimizer = torch.optim.LBFGS(head.parameters(), max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(train_x), train_y) + l2 * head.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return head


def main(argv: list[str] | None = None) -> int:
    """Probe the source and print one row of JSON; a user's mistake (a missing run folder, a bad override) is
    one `error:` line and exit 2, as in mask_precision.py, not a traceback ending in exit 1."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="checkpoint folder (finetune or LSMCL), or a recipe with --random")
    parser.add_argument("overrides", nargs="*", help="key=value recipe overrides (e.g. the data section)")
    parser.add_argument("--random", action="store_true", help="probe a randomly initialised model of the recipe")
    parser.add_argument("--split", default="val", help="split the probe is scored on")
    parser.add_argument("--l2", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_intermixed_args(argv)  # overrides may come after the options

    from s5cli.errors import UserError
    from s5cli.io import atomic_write_json

    try:
        result = probe(args)
        print(json.dumps(result))
        if args.json:
            atomic_write_json(args.json, result)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def probe(args: argparse.Namespace) -> dict:
    """Fit the probe on the training split's features and score it on `args.split`: the JSON row."""
    from s5cli.data.datasets import task_info
    from s5cli.seeding import seed_everything
    from s5cli.train.data import prepare_splits, token_dataset
    from s5cli.train.distributed import DistContext
    from s5cli.train.job import build_model_from_recipe, recipe_objects
    from s5cli.train.loading import load_trained_model, recipe_from_checkpoint

    seed_everything(args.seed)
    if args.random:
        recipe = recipe_objects(args.source, args.overrides, args.seed)
        model = build_model_from_recipe(recipe, task_info(recipe.data).num_outputs).eval()
    else:
        model, stored, _ = load_trained_model(args.source)
        recipe = recipe_from_checkpoint(stored, args.overrides)
    splits = ("train", args.split)
    records = prepare_splits(recipe.data, splits, DistContext(device=torch.device("cpu")), show_progress=False)
    train_x, train_y = pooled_features(model, token_dataset(recipe.data, records["train"], training=False))
    test_x, test_y = pooled_features(model, token_dataset(recipe.data, records[args.split], training=False))
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    num_classes = task_info(recipe.data).num_outputs
    head = fit_probe((train_x - mean) / std, train_y, num_classes, args.l2)
    with torch.no_grad():
        train_acc = (head((train_x - mean) / std).argmax(1) == train_y).float().mean().item()
        acc = (head((test_x - mean) / std).argmax(1) == test_y).float().mean().item()
    return {"source": args.source, "random": args.random, "split": args.split, "probe_top1": acc,
            "train_top1": train_acc, "train_videos": len(train_y), "eval_videos": len(test_y),
            "feature_dim": train_x.shape[1]}


if __name__ == "__main__":
    raise SystemExit(main())
