"""What one benchmark worker measures: a model built from the registry, a fixed input, and one step.

A `Workload` is plain data (JSON round-trip), so the parent can hand it to a worker process without
importing torch. torch and the models are imported inside the functions that need them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# Benchmark model labels → (registry name, extra config). "random"/"uniform" are S5 with a fixed selector:
# the same decoder on the same number of tokens, so they isolate what the learned selection costs.
MODEL_LABELS: dict[str, tuple[str, dict[str, Any]]] = {
    "s5": ("s5", {"selector": "learned"}),
    "s4": ("s4", {}),
    "transformer": ("transformer", {}),
    "random": ("s5", {"selector": "random"}),
    "uniform": ("s5", {"selector": "uniform"}),
}
LABEL_ALIASES = {"vit": "transformer", "vis4mer": "s4", "selective-s4": "s5"}
MODES = ("infer", "train")
NUM_OUTPUTS = 10  # LVU-sized classification head; the head is a negligible part of every model


def error_summary(error: BaseException, limit: int) -> str:
    """'ClassName: first line of the message' (cut to `limit`), as a worker reports a failed step or capture."""
    text = str(error)
    return f"{type(error).__name__}: {text.splitlines()[0][:limit] if text else ''}"


def canonical_label(name: str) -> str:
    """Benchmark label for `name` or one of its aliases; ValueError naming the choices otherwise."""
    key = name.strip().lower()
    key = LABEL_ALIASES.get(key, key)
    if key not in MODEL_LABELS:
        choices = ", ".join([*MODEL_LABELS, *LABEL_ALIASES])
        raise ValueError(f"unknown model {name!r} in --compare; choose from {choices}")
    return key


def transformer_heads(dim: int) -> int:
    """Heads of the baseline transformer: 64-d heads (16 at 1024-d, as ViT-L), always dividing `dim`."""
    heads = max(1, dim // 64)
    while dim % heads:
        heads -= 1
    return heads


@dataclass
class Workload:
    """One (model, mode, input size) measurement, as the worker receives it."""

    label: str  # key of MODEL_LABELS
    mode: str  # "infer" | "train"
    frames: int
    tokens_per_frame: int
    dim: int
    batch: int
    keep_ratio: float = 0.5
    device: str = "cpu"
    amp: bool = False
    seed: int = 0
    warmup: int = 1
    memory_budget: int | None = None  # bytes above the baseline; the worker stops when a step exceeds it
    threads: int | None = None  # torch intra-op threads of the worker; None = torch's default (all cores)
    release_memory: bool = True  # CPU: hand the C heap's free pages back before the baseline and warm-up steps
    # A process that only measures peak memory: glibc maps large blocks from the start, no warm-up (worker.py)
    memory_run: bool = False
    cuda_graphs: bool = False  # CUDA: capture the step once and time replays of it (cuda_graph.py)

    def to_json(self) -> dict[str, Any]:
        """Plain dict of the fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Workload:
        """Inverse of `to_json`."""
        return cls(**data)

    @property
    def tokens(self) -> int:
        """Tokens per clip (T·S)."""
        return self.frames * self.tokens_per_frame

    def model_config(self) -> tuple[str, dict[str, Any]]:
        """Registry name and config dict of the model this workload builds."""
        name, extra = MODEL_LABELS[self.label]
        if name == "transformer":
            config: dict[str, Any] = {
                "d_input": self.dim, "d_model": self.dim, "heads": transformer_heads(self.dim),
                "max_frames": self.frames, "max_tokens_per_frame": self.tokens_per_frame,
            }
        else:
            config = {"d_input": self.dim, "d_model": self.dim}
            if name == "s5":
                # The guide reads a quarter of the channels, the paper-size ratio (256 of 1024 = the S5Config
                # default); at small widths the default 256 would be every channel and cost a whole S4 block.
                config["keep_ratio"] = self.keep_ratio
                config["guide_channels"] = max(1, self.dim // 4)
        config.update(extra)
        return name, config


class PreparedStep:
    """A built model, its input and optimiser, and `run()` = one inference pass or one training step.

    With `workload.cuda_graphs` the step is captured as a CUDA graph when built and `run()` replays it;
    where capture fails (a step that is not graph-safe) `graph_error` says why and the caller should build
    an eager one instead (a failed capture may leave caches pointing at memory that was never written).
    """

    def __init__(self, workload: Workload):
        import torch
        import torch.nn.functional as F

        from s5cli.models.registry import build_model
        from s5cli.models.s4 import ssm_param_groups
        from s5cli.seeding import seed_everything

        self.workload = workload
        self.device = torch.device(workload.device)
        seed_everything(workload.seed, deterministic=False)
        name, config = workload.model_config()
        self.model = build_model(name, config, NUM_OUTPUTS).to(self.device)
        self.params = sum(p.numel() for p in self.model.parameters())
        generator = torch.Generator().manual_seed(workload.seed)
        shape = (workload.batch, workload.frames, workload.tokens_per_frame, workload.dim)
        self.tokens = torch.randn(shape, generator=generator).to(self.device)
        self.labels = torch.randint(0, NUM_OUTPUTS, (workload.batch,), generator=generator).to(self.device)
        self._torch, self._F = torch, F
        self.optimizer = None
        graphs = workload.cuda_graphs  # on a CPU, capture_step refuses with a ValueError
        self.output = None  # an inference step's logits (a graph's replays rewrite the same tensor)
        if workload.mode == "train":
            self.model.train()
            # The trainer's optimiser: AdamW with the SSM parameters in their own no-decay group (its step
            # count on the device when captured: a host-side count would be frozen into the graph).
            self.optimizer = torch.optim.AdamW(ssm_param_groups(self.model, 1e-4, 0.05), capturable=graphs)
        else:
            self.model.eval()
        self.graph = None
        self.graph_error: str | None = None
        if graphs:
            self._capture()

    def _capture(self) -> None:
        from s5cli.benchmark.cuda_graph import capture_step

        try:
            # The warm-up steps end with zero_grad(set_to_none=True), so gradients are None when capture
            # starts: backward then allocates them in the graph's pool and every replay writes (not adds)
            # them, and the captured step needs no zero_grad of its own.
            self.graph = capture_step(lambda: self._eager_step(zero_grad=False), self.device,
                                      warmup_step=self._eager_step)
        except self._torch.cuda.OutOfMemoryError:
            raise  # over budget, not a step that cannot be captured: an eager step would need as much
        except RuntimeError as error:
            self.graph_error = error_summary(error, 200)

    def _autocast(self):
        """The trainer's mixed precision (bfloat16 from Ampere on, else float16; CUDA only). Captured steps
        cast the weights afresh each time: autocast's cache of cast weights must not outlive a capture."""
        from s5cli.train.evaluation import autocast

        return autocast(self.device, self.workload.amp, cache_enabled=not self.workload.cuda_graphs)

    def run(self) -> None:
        """One step: forward (inference mode) or forward + backward + AdamW step (+ S5's momentum update)."""
        if self.graph is not None:
            self.graph.replay()
        else:
            self._eager_step()

    def _eager_step(self, zero_grad: bool = True) -> None:
        torch = self._torch
        if self.optimizer is None:
            with torch.inference_mode(), self._autocast():
                self.output = self.model(self.tokens)
            return
        with self._autocast():
            loss = self._F.cross_entropy(self.model(self.tokens).float(), self.labels)
        loss.backward()
        self.optimizer.step()
        if zero_grad:
            self.optimizer.zero_grad(set_to_none=True)
        momentum_update = getattr(self.model, "momentum_update", None)
        if momentum_update is not None:
            momentum_update()

    def synchronize(self) -> None:
        """Wait for queued device work (CUDA kernels run asynchronously)."""
        if self.device.type == "cuda":
            self._torch.cuda.synchronize(self.device)
