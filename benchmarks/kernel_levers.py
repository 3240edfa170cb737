"""Evidence for model-side speed/memory levers of S4 and S5, measured with the benchmark's own worker.

    python benchmarks/kernel_levers.py                                   # default CPU size, inference
    python benchmarks/kernel_levers.py --mode train --repeat 3
    python benchmarks/kernel_levers.py --tokens-per-frame 197 --dim 1024 --repeat 2   # paper size

Each (model, lever) runs in its own process (`s5cli.benchmark.worker.serve`, same baseline and peak
memory method as `s5 benchmark`); the levers are applied inside that process by patching the models, so
nothing in s5cli changes. Levers:

* `baseline`      the models as they are.
* `cache-kernel`  inference only: the SSM convolution kernel depends on parameters alone, so it is
                  computed once and reused while no parameter changes (keyed on the parameters' versions).
* `chunk-2^18`    the DPLR kernel's Cauchy resolvents are cut in chunks of 2^18 instead of 2^20 complex
                  elements (`s5cli.models.cauchy.CHUNK_ELEMENTS`): smaller temporaries, the same arithmetic.
                  2^18 has been the default since the lean training convolution: now equal to `baseline`.
* `guide-quarter` S5 only: the momentum guide reads d_model/4 channels instead of min(256, d_model) (at the
                  paper's 1024-d both are 256; at 256-d the guide is otherwise as wide as the decoder).
* `cache+guide-quarter` both of the above (inference).
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import statistics
import sys
from queue import Empty
from typing import Any

LEVERS = ("baseline", "cache-kernel", "chunk-2^18", "guide-quarter", "cache+guide-quarter")


def _apply(lever: str) -> None:
    """Patch the model code in this (worker) process for one lever."""
    import torch

    from s5cli.models import cauchy, s4_kernels

    if "guide-quarter" in lever:
        from s5cli.benchmark import workload

        original_config = workload.Workload.model_config

        def quarter_guide(self):
            name, config = original_config(self)
            if name == "s5":
                config["guide_channels"] = max(1, self.dim // 4)
            return name, config

        workload.Workload.model_config = quarter_guide
    if lever == "chunk-2^18":
        cauchy.CHUNK_ELEMENTS = 1 << 18
    if lever.startswith("cache"):
        for cls in (s4_kernels.DPLRKernel, s4_kernels.DiagonalKernel):
            original = cls.forward

            def cached(self, length, channels=None, _original=original):
                if torch.is_grad_enabled():
                    return _original(self, length, channels)
                key = (length, None if channels is None else tuple(channels.tolist()),
                       tuple(p._version for p in self.parameters()), int(getattr(self, "l_kernel", 0)))
                store = self.__dict__.setdefault("_kernel_cache", {})
                if key not in store:
                    store.clear()  # parameters changed: older kernels are stale
                    store[key] = _original(self, length, channels)
                return store[key]

            cls.forward = cached


def _child(workload_json: dict[str, Any], lever: str, repeat: int, queue: Any) -> None:
    from s5cli.benchmark.worker import serve
    from s5cli.benchmark.workload import Workload

    _apply(lever)
    out = io.StringIO()
    serve(Workload.from_json(workload_json), ["step"] * repeat, out)
    queue.put([json.loads(line) for line in out.getvalue().splitlines() if line.strip()])


def _result_or_none(queue: Any, process: Any) -> list[dict[str, Any]] | None:
    """The child's events, or None once it has exited without sending them. Why not `queue.get()`: a child
    that crashes never puts anything, and the parent would wait forever."""
    while True:
        try:
            return queue.get(timeout=1.0)
        except Empty:
            if not process.is_alive():
                try:  # it may have put its result just before exiting
                    return queue.get(timeout=1.0)
                except Empty:
                    return None


def measure(workload_json: dict[str, Any], lever: str, repeat: int) -> dict[str, Any]:
    """Run one (workload, lever) in a fresh process, started as `s5 benchmark` starts its workers (on CPU
    a fork of a server that preloaded torch, `s5cli.benchmark.worker_process`); median/min step time and
    max peak memory. The script runs once, so the server's environment is the script's."""
    from s5cli.benchmark.worker_process import start_process

    queue = multiprocessing.get_context("spawn").Queue()  # passes to a forked and to a spawned child alike
    process = start_process(_child, (workload_json, lever, repeat, queue), workload_json.get("device", "cpu"))
    events = _result_or_none(queue, process)
    process.join()
    if events is None:  # the child died before it could report (a lever's patch or the build raised)
        return {"error": f"worker exited with code {process.exitcode} before reporting"}
    steps = [e for e in events if e["event"] == "step"]
    if not steps:
        return {"error": next((e.get("message") for e in events if e["event"] == "error"), "no steps")}
    times = [e["seconds"] for e in steps]
    # As in `s5 benchmark`: warm-up steps from a trimmed heap give the memory figure when available.
    warmups = [e for e in events if e["event"] == "warmup"]
    released = events[0].get("memory_released") and warmups
    return {"median_s": statistics.median(times), "min_s": min(times),
            "peak_bytes": max(e["peak_bytes"] for e in (warmups if released else steps))}


def main() -> int:
    """Measure every lever for S5 and S4 (and the transformer once, as the yardstick)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--tokens-per-frame", type=int, default=50)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--mode", choices=("infer", "train"), default="infer")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (1: steady on a shared CPU)")
    parser.add_argument("--json", default=None, help="write the rows here")
    args = parser.parse_args()
    from s5cli.benchmark.workload import Workload

    levers = [lv for lv in LEVERS if not (lv.startswith("cache") and args.mode == "train")]
    rows = []
    for label in ("s5", "s4", "transformer"):
        for lever in levers if label != "transformer" else ["baseline"]:
            if label == "s4" and "guide" in lever:
                continue
            workload = Workload(label=label, mode=args.mode, frames=args.frames,
                                tokens_per_frame=args.tokens_per_frame, dim=args.dim, batch=1, threads=args.threads)
            row = {"model": label, "lever": lever, "mode": args.mode, **measure(workload.to_json(), lever,
                                                                                args.repeat)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        from s5cli.io import atomic_write_json

        atomic_write_json(args.json, {"settings": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
