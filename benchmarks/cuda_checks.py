"""Checks worth a borrowed GPU's minutes: host syncs per training/inference step, and CPU vs CUDA numbers.

    python benchmarks/cuda_checks.py                        # 60 x 50 x 768, batch 2; JSON on stdout
    python benchmarks/cuda_checks.py --dim 1024 --tokens-per-frame 197 --json out.json

Why these two: this project's machines have no GPU, so code written for CUDA is checked only when a
session borrows one, for minutes. (1) Each host sync (a `.item()`, `int()` of a device tensor, a copy from
pageable memory) stalls the launch queue: `torch.cuda.set_sync_debug_mode` counts them in steady-state
steps of S5, S4 and an LSMCL step with a queue, and the first one's place in s5cli is reported. (2) The
same weights and tokens through S5 and S4 on the CPU and on the GPU in float32 (TF32 off) must give the
same logits to rounding and S5 must keep the same tokens. On a machine without CUDA the script still runs
every step (so it cannot rot) and reports the sync counts and the CPU-vs-CUDA entries as null.
"""

from __future__ import annotations

import argparse
import json
import traceback
import warnings
from collections.abc import Callable


def count_syncs(step: Callable[[], None], cuda: bool, steps: int = 2) -> dict:
    """Host syncs per call of `step` (None without CUDA), and where the first one happens in s5cli."""
    import torch

    if not cuda:
        step()
        return {"syncs_per_step": None}
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    # Only torch's per-sync warning: the first `set_sync_debug_mode` of a process also warns that the
    # mode "is a prototype feature and does not yet detect all synchronizing operations", and counting
    # that one made the first step measured (S5's float32 training) read 0.5 syncs per step (v20-v21).
    syncs = [w for w in caught if "called a synchronizing" in str(w.message)]
    found: dict = {"syncs_per_step": len(syncs) / steps}
    if syncs:
        found["sync_sites"] = sorted({f"{w.filename}:{w.lineno}: {str(w.message)[:100]}" for w in syncs})
    if found["syncs_per_step"]:
        torch.cuda.set_sync_debug_mode("error")  # raises at the first sync: its traceback says where
        try:
            # As many steps as were counted: a sync every other step (S5's float32 training, v20-v21)
            # did not come in the one step this ran before, and the report had no place for it.
            for _ in range(steps):
                step()
        except RuntimeError:
            frames = [line.strip() for line in traceback.format_exc().splitlines()
                      if "s5cli" in line or "torch/" in line]
            found["first_sync"] = frames[-6:]
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return found


def model_syncs(device: str, frames: int, tokens_per_frame: int, dim: int, batch: int) -> dict:
    """Sync counts of the benchmark's steps (S5 and S4, train and infer, with and without AMP)."""
    from s5cli.benchmark.workload import PreparedStep, Workload

    found = {}
    for label in ("s5", "s4"):
        for mode in ("train", "infer"):
            for amp in (False, True):
                step = PreparedStep(Workload(label=label, mode=mode, frames=frames, tokens_per_frame=tokens_per_frame,
                                             dim=dim, batch=batch, device=device, amp=amp))
                for _ in range(3):  # kernels cached, lengths settled, allocator warm
                    step.run()
                found[f"{label} {mode} amp={amp}"] = count_syncs(step.run, device == "cuda")
    return found


def lsmcl_syncs(device: str) -> dict:
    """Sync count of an LSMCL pretraining step with a queue of negatives (its fill level is a buffer)."""
    import torch

    from s5cli.models.lsmcl import LSMCL, LSMCLConfig
    from s5cli.models.registry import build_model

    encoder = build_model("s5", {"d_input": 64, "d_model": 64, "guide_channels": 16, "d_state": 16}, 10)
    model = LSMCL(encoder, LSMCLConfig(short_frames=4, long_frames=8, queue_size=16)).to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], 1e-4)
    tokens = torch.randn(4, 8, 10, 64, generator=torch.Generator().manual_seed(0)).to(device)

    def step() -> None:
        model(tokens).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        model.momentum_update()

    for _ in range(3):
        step()
    return count_syncs(step, device == "cuda")


def cpu_vs_cuda(frames: int, tokens_per_frame: int, dim: int, batch: int) -> dict:
    """Largest logit difference between CPU and CUDA float32 inference, and S5's kept-token agreement."""
    import torch

    from s5cli.benchmark.workload import NUM_OUTPUTS, Workload
    from s5cli.models.registry import build_model

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    tokens = torch.randn(batch, frames, tokens_per_frame, dim, generator=torch.Generator().manual_seed(1))
    found = {}
    for label in ("s5", "s4"):
        # The benchmark's models at this size (S5's guide on a quarter of the channels).
        name, config = Workload(label=label, mode="infer", frames=frames, tokens_per_frame=tokens_per_frame,
                                dim=dim, batch=batch).model_config()
        torch.manual_seed(0)
        on_cpu = build_model(name, config, NUM_OUTPUTS).eval()
        on_gpu = build_model(name, config, NUM_OUTPUTS)
        on_gpu.load_state_dict(on_cpu.state_dict())
        on_gpu = on_gpu.to("cuda").eval()
        with torch.inference_mode():
            cpu_logits, gpu_logits = on_cpu(tokens), on_gpu(tokens.to("cuda")).cpu()
            entry = {"max_abs_diff": float((cpu_logits - gpu_logits).abs().max()),
                     "max_abs_logit": float(cpu_logits.abs().max())}
            if label == "s5":
                kept_cpu = on_cpu.select(tokens).indices
                kept_gpu = on_gpu.select(tokens.to("cuda")).indices.cpu()
                entry["same_kept_tokens"] = float((kept_cpu == kept_gpu).float().mean())
        found[label] = entry
    return found


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--tokens-per-frame", type=int, default=50)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    sizes = (args.frames, args.tokens_per_frame, args.dim, args.batch)
    report = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
        "sizes": dict(zip(("frames", "tokens_per_frame", "dim", "batch"), sizes, strict=True)),
        "syncs": {**model_syncs(device, *sizes), "lsmcl train": lsmcl_syncs(device)},
        "cpu_vs_cuda": cpu_vs_cuda(*sizes) if cuda else None,
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        from s5cli.io import atomic_write_bytes

        atomic_write_bytes(args.json, (text + "\n").encode())


if __name__ == "__main__":
    main()
