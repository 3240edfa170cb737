"""The training log: metrics.jsonl (and TensorBoard scalars when asked for), written by rank 0.

Its own module because a resumed run rewrites it: records from after the checkpoint it resumes from are
dropped (and TensorBoard's purged), so that the log of a killed and resumed run reads like one run's.
"""

from __future__ import annotations

import json
from pathlib import Path

from s5cli.io import atomic_write_text


def read_records(path: Path) -> tuple[list[dict], int]:
    """The records of a metrics.jsonl and how many lines could not be read.

    Why tolerate bad lines: the log is appended without fsync (unlike checkpoints), so a power loss or a
    full disk can leave a torn last line; it cost the run's `--resume` a JSONDecodeError traceback.
    """
    records, unreadable = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            unreadable += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            unreadable += 1
    return records, unreadable


class MetricsLog:
    """metrics.jsonl (+ optional TensorBoard) written by rank 0; `records` counts the lines it holds."""

    def __init__(self, out_dir: Path, enabled: bool, tensorboard: bool, resume_step: int | None,
                 resume_records: int = -1):
        self.path = out_dir / "metrics.jsonl"
        self.enabled = enabled
        self.writer = None
        self.records = 0
        if not enabled:
            return
        if resume_step is not None and self.path.exists():
            # Drop records from after the checkpoint we resume from, so the log reads like one run: those
            # it held when saved (`resume_records`, from the checkpoint), else those up to its step.
            records, unreadable = read_records(self.path)
            kept = [r for r in records if r.get("step", 0) <= resume_step]
            if resume_records >= 0:
                kept = kept[:resume_records]
            if unreadable:
                from s5cli.cli.console import print_warning

                print_warning(f"{self.path}: dropped {unreadable} unreadable line(s) (a write cut short?)")
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
            self.records = len(kept)
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
        self.records += 1
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self.writer.add_scalar(key, value, record.get("step", 0))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
