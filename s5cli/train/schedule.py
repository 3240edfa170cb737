"""Optimiser and learning-rate schedule from the recipe's `optim:` section.

AdamW with S4's parameter groups (A, B, Δt at their own lr, never weight-decayed; paper.md), then one of:
linear warmup + cosine decay (per step), ReduceLROnPlateau on the validation metric (ViS4mer's choice), or
constant. Scheduler state is plain numbers, so it round-trips through the JSON half of a checkpoint.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from s5cli.models.s4 import ssm_param_groups


def build_optimizer(model: nn.Module, optim: Any) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters with the SSM groups; `optim.ssm_lr` overrides the model's hint."""
    groups = ssm_param_groups(model, lr=optim.lr, weight_decay=optim.weight_decay)
    ssm_lr = getattr(optim, "ssm_lr", None)
    if ssm_lr is not None:
        for group in groups:
            if all(hasattr(p, "_optim") for p in group["params"]):
                group["lr"] = ssm_lr
    for group in groups:
        group["initial_lr"] = group["lr"]
    return torch.optim.AdamW(groups, lr=optim.lr, betas=tuple(optim.betas), weight_decay=optim.weight_decay)


class WarmupCosine:
    """lr factor: linear warmup to 1 over `warmup` steps, then cosine decay to 0 at `total` steps."""

    def __init__(self, warmup: int, total: int):
        self.warmup = warmup
        self.total = max(total, 1)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))


class Schedule:
    """One interface for per-step schedules and the per-evaluation plateau schedule."""

    def __init__(self, optimizer: torch.optim.Optimizer, optim: Any, total_steps: int, maximize: bool):
        self.kind = optim.schedule
        self.optimizer = optimizer
        self.plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
        self.lambda_lr: torch.optim.lr_scheduler.LambdaLR | None = None
        if self.kind == "cosine":
            fn = WarmupCosine(optim.warmup_steps, total_steps)
            self.lambda_lr = torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
        elif self.kind == "plateau":
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="max" if maximize else "min", factor=optim.plateau_factor,
                patience=optim.plateau_patience,
            )

    def after_step(self) -> None:
        if self.lambda_lr is not None:
            self.lambda_lr.step()

    def after_eval(self, metric: float) -> None:
        if self.plateau is not None:
            self.plateau.step(metric)

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        if self.lambda_lr is not None:
            state = self.lambda_lr.state_dict()
            state.pop("lr_lambdas", None)
            return {"kind": self.kind, "state": state}
        if self.plateau is not None:
            return {"kind": self.kind, "state": self.plateau.state_dict()}
        return {"kind": self.kind, "state": {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue a saved schedule. A per-step schedule also sets the learning rate of the current step
        now: the optimiser's saved rate was computed for the saved run's length, and a resume that changes
        train.epochs would otherwise take its first step at that rate."""
        inner = state.get("state", {})
        if self.lambda_lr is not None:
            self.lambda_lr.load_state_dict({**inner, "lr_lambdas": [None] * len(self.optimizer.param_groups)})
            scheduler = self.lambda_lr
            for group, base, factor in zip(self.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas,
                                           strict=True):
                group["lr"] = base * factor(scheduler.last_epoch)
        elif self.plateau is not None:
            self.plateau.load_state_dict(inner)
