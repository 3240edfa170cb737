"""Process-group setup decided in one place: single process by default, DDP under torchrun.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; we then use NCCL on CUDA and gloo on CPU. Everything else in
the trainer asks a `DistContext` instead of reading the environment, so the same code runs both ways.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import NoReturn

import torch
import torch.distributed as dist

from s5cli import torchrun_env

MAX_SIGNAL = 64  # the largest POSIX signal number (SIGRTMAX on Linux); see `DistContext.after_step`


@dataclass
class DistContext:
    """Rank, world size and device of this process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")  # noqa: RUF009 - immutable default

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, shows progress and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def after_step(self, loss: float, stop_signal: int, top1: float | None = None) -> tuple[float, int, float | None]:
        """(the ranks' mean loss, the largest stop signal any rank saw, 0 for none, the ranks' mean `top1`:
        LSMCL's contrastive top-1, None when not given) in one collective.

        Why the signal: stopping and saving after this step is a decision every rank must take together
        when only some saw its cause (a signal sent to one process); deciding alone would leave the others
        waiting in the next collective. Why one collective: both are needed after every step, and each
        all-reduce is a round trip and a host sync. The signal travels one-hot among `MAX_SIGNAL` slots, so
        the summing all-reduce that averages the loss also keeps the largest signal (SIGTERM over SIGINT).
        A non-finite loss on any rank makes every rank's mean non-finite: the trainer calls this before
        the optimiser step, so all ranks stop on it together.
        """
        if not self.distributed:
            return loss, stop_signal, top1
        if not 0 <= stop_signal <= MAX_SIGNAL:
            raise ValueError(f"stop_signal must be in [0, {MAX_SIGNAL}], got {stop_signal}")
        values = torch.zeros(3 + MAX_SIGNAL, dtype=torch.float64)
        values[0] = loss
        values[1 + stop_signal] = 1.0  # slot 1 = no signal
        values[-1] = 0.0 if top1 is None else top1  # every rank gives one or none alike (one objective)
        tensor = values.to(self._collective_device())
        dist.all_reduce(tensor)
        summed = tensor.cpu()
        seen = torch.nonzero(summed[2:-1] > 0)
        mean_top1 = None if top1 is None else float(summed[-1]) / self.world_size
        return float(summed[0]) / self.world_size, int(seen.max()) + 1 if seen.numel() else 0, mean_top1

    def _collective_device(self) -> torch.device | str:
        """Where a one-number collective's tensor lives: NCCL needs it on the GPU, gloo on the CPU."""
        return self.device if self.device.type == "cuda" else "cpu"

    def gather_objects(self, obj: object) -> list[object]:
        """Every rank's `obj`, in rank order (a one-element list in a single process)."""
        if not self.distributed:
            return [obj]
        out: list[object] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def stop_together(self, problem: Exception | None) -> None:
        """Raise `problem`, or a UserError naming another rank's, on every rank if any rank had one.

        Why: a check one rank makes alone (rank 0's run-folder lock) or that differs between ranks would
        otherwise fail on that rank while the others went on into their next collective, where they waited
        for the failed one until torchrun's SIGKILL ended them without a word.
        """
        if self.distributed:
            problems = self.gather_objects(None if problem is None else str(problem))
            if problem is None:
                for rank, text in enumerate(problems):
                    if text is not None:
                        from s5cli.errors import UserError

                        raise UserError(f"rank {rank} stopped: {text}")
        if problem is not None:
            raise problem

    def close(self) -> None:
        global _left_process_group
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()
            _left_process_group = True


# Set once this process has left a torchrun process group; the CLI entry point then ends the process with
# `exit_without_finalizing` instead of a normal interpreter shutdown (see there for why).
_left_process_group = False


def left_process_group() -> bool:
    """Whether this process took part in a multi-process run (and has since destroyed its group)."""
    return _left_process_group


def exit_without_finalizing(code: object) -> NoReturn:
    """Flush stdout/stderr and end the process now, skipping Python's interpreter shutdown.

    Why: once DistributedDataParallel has wrapped a model, `destroy_process_group` leaves the gloo group's
    worker threads running (torch 2.13), so they outlive the Python code. A worker that drops a finished
    collective's last reference to a tensor created in Python needs the GIL; when that happens while the
    interpreter is shutting down, the thread cannot get it and C++ calls std::terminate ("terminate called
    without an active exception", SIGABRT), turning a finished, fully saved run into a failed one (3 of 47
    two-process runs on a 2-core machine). Everything the run writes is closed (metrics, checkpoints
    written atomically) before this point, so skipping the shutdown loses nothing; `code` is a SystemExit
    code (None, an int or a message).
    """
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe or stream: nothing more to write
            stream.flush()
    os._exit(status)


def pick_device(requested: str | None = None) -> torch.device:
    """`requested` ("cpu", "cuda", "cuda:1"; "auto" or None: the best available device), checked by `check_device`.
    Under torchrun a CUDA device is this process's GPU, cuda:LOCAL_RANK (see `_made_current`)."""
    return _made_current(check_device(requested))


def check_device(requested: str | None = None) -> torch.device:
    """`requested` as a device, or the best available one; UserError for anything this machine cannot run.

    Only CPU and CUDA are supported (the models' FFT paths and AMP are written for those two), so "mps" or
    a typo such as "gpu" is refused here, before a run writes anything. Nothing is initialised (the
    benchmark's parent process checks the flag but runs nothing on the device).
    """
    if requested is not None and not requested.strip():
        from s5cli.errors import UserError

        raise UserError("--device is empty: use cpu, cuda, cuda:N or auto")
    if requested and requested.strip().lower() != "auto":  # "auto": as `s5 benchmark` takes it
        from s5cli.errors import UserError

        try:
            device = torch.device(requested)
        except RuntimeError:
            raise UserError(f"--device {requested!r} is not a device: use cpu, cuda, cuda:N or auto") from None
        if device.type not in ("cpu", "cuda"):
            raise UserError(f"--device {requested}: s5cli runs on cpu or cuda only")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"--device {requested}: CUDA is not available on this machine; use --device cpu")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(
                f"--device {requested}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                f"numbered from 0"
            )
        return device
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _made_current(device: torch.device) -> torch.device:
    """Under torchrun a CUDA device becomes this process's own GPU, cuda:LOCAL_RANK; a CUDA device with an
    index becomes the current device.

    Why: `torch.cuda` calls without a device argument (the DataLoader's pin-memory thread, memory
    statistics, capability checks) use the current device, which is GPU 0 unless set; left alone,
    `--device cuda:1` created a context on GPU 0 too, and `torchrun ... extract` put every rank on GPU 0.
    """
    if device.type != "cuda":
        return device
    if torchrun_env.world_size() > 1:
        local_rank, gpus = torchrun_env.local_rank(), torch.cuda.device_count()
        if local_rank >= gpus:  # else CUDA's "invalid device ordinal" from deep inside the first tensor move
            from s5cli.errors import UserError

            raise UserError(f"torchrun started local rank {local_rank} but this machine has {gpus} GPU(s): "
                            f"use --nproc-per-node {gpus} (one process per GPU at most) or add --device cpu")
        device = torch.device("cuda", local_rank)
    if device.index is not None:
        torch.cuda.set_device(device)
    return device


TIMEOUT_ENV = "S5_DIST_TIMEOUT_MINUTES"
DEFAULT_TIMEOUT_MINUTES = 60.0


def collective_timeout() -> timedelta:
    """How long a rank waits in a collective or barrier before the job is aborted: 60 minutes, or
    $S5_DIST_TIMEOUT_MINUTES.

    Why not torch's default: NCCL's is 10 minutes, and some phases keep ranks apart longer than that:
    the ranks extract their shares of a dataset's tokens before training and wait for the slowest at a
    barrier; rank 0 alone validates the whole split (LVU's stride-1 windows are tens of thousands)."""
    from s5cli.errors import UserError

    text = os.environ.get(TIMEOUT_ENV, "")
    try:
        minutes = float(text) if text.strip() else DEFAULT_TIMEOUT_MINUTES
    except ValueError:
        minutes = -1.0
    if not (minutes > 0 and minutes < float("inf")):
        raise UserError(f"{TIMEOUT_ENV}={text!r} is not a number of minutes: unset it or give e.g. 120")
    return timedelta(minutes=minutes)


def init_distributed(requested_device: str | None = None) -> DistContext:
    """Join the torchrun process group if there is one; otherwise a single-process context."""
    if torchrun_env.world_size() <= 1:
        return DistContext(device=pick_device(requested_device))
    rank, world = torchrun_env.require_group_variables()  # before the device: the first mistake reported
    device = pick_device(requested_device)  # under torchrun on CUDA: cuda:LOCAL_RANK, made current
    local_rank = torchrun_env.local_rank()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", timeout=collective_timeout())
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=device)
