"""The training log: metrics.jsonl (and TensorBoard scalars when asked for), written by rank 0.

Its own module because a resumed run rewrites it: records from after the checkpoint it resumes from are
dropped (and TensorBoard's purged), so that the log of a killed and resumed run reads like one run's.
"""

from __future__ import annotations

import json
from pathlib import Path

from s5cli.io import atomic_write_text


class MetricsLog:
    """metrics.jsonl (+ optional TensorBoard) written by rank 0."""

    def __init__(self, out_dir: Path, enabled: bool, tensorboard: bool, resume_step: int | None):
        self.path = out_dir / "metrics.jsonl"
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        if resume_step is not None and self.path.exists():
            # Drop records from after the checkpoint we resume from, so the log reads like one run.
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        elif self.path.exists():
            self.path.unlink()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                # On resume, hide the killed run's events after the checkpoint (as metrics.jsonl drops
                # its records), so TensorBoard shows one curve instead of two overlapping ones.
                purge_step = resume_step + 1 if resume_step is not None else None
                self.writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=purge_step)
            except ImportError:
                from s5cli.cli.console import print_warning

                print_warning("train.tensorboard is on but tensorboard is not installed: pip install 's5cli[tensorboard]'")

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self.writer.add_scalar(key, value, record.get("step", 0))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
