"""MetricsLog: metrics.jsonl trimmed on resume, TensorBoard scalars (through a stand-in writer) and its absence."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import ClassVar

import pytest

from s5cli.train.metrics_log import MetricsLog


class RecordingWriter:
    """Stands in for torch.utils.tensorboard.SummaryWriter (tensorboard is an optional extra)."""

    made: ClassVar[list[RecordingWriter]] = []

    def __init__(self, log_dir: str, purge_step: int | None = None):
        self.log_dir, self.purge_step = log_dir, purge_step
        self.scalars: list[tuple[str, float, int]] = []
        self.closed = False
        RecordingWriter.made.append(self)

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, value, step))

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_tensorboard(monkeypatch: pytest.MonkeyPatch) -> type[RecordingWriter]:
    module = types.ModuleType("torch.utils.tensorboard")
    module.SummaryWriter = RecordingWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", module)
    RecordingWriter.made = []
    return RecordingWriter


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_numbers_go_to_tensorboard_by_step(tmp_path: Path, fake_tensorboard) -> None:
    log = MetricsLog(tmp_path, enabled=True, tensorboard=True, resume_step=None)
    log.write({"step": 10, "epoch": 1, "loss": 0.5, "lr": 1e-3, "split": "train"})
    log.write({"step": 20, "epoch": 1, "val_top1": 0.75})
    log.close()
    (writer,) = fake_tensorboard.made
    assert writer.log_dir == str(tmp_path / "tensorboard") and writer.purge_step is None
    # Numbers only, step and epoch are the axis, not curves.
    assert writer.scalars == [("loss", 0.5, 10), ("lr", 1e-3, 10), ("val_top1", 0.75, 20)]
    assert writer.closed
    assert [r["step"] for r in _records(tmp_path / "metrics.jsonl")] == [10, 20]


def test_resume_drops_later_records_and_hides_later_events(tmp_path: Path, fake_tensorboard) -> None:
    first = MetricsLog(tmp_path, enabled=True, tensorboard=True, resume_step=None)
    for step in (10, 20, 30):
        first.write({"step": step, "loss": 1.0 / step})
    first.close()  # killed after step 30; the last checkpoint was at step 20
    resumed = MetricsLog(tmp_path, enabled=True, tensorboard=True, resume_step=20)
    resumed.write({"step": 30, "loss": 0.02})
    assert [r["step"] for r in _records(tmp_path / "metrics.jsonl")] == [10, 20, 30]
    assert fake_tensorboard.made[-1].purge_step == 21  # TensorBoard hides the first run's step-30 events


def test_a_fresh_run_starts_a_new_log_and_other_ranks_write_nothing(tmp_path: Path, fake_tensorboard) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"step": 99}\n')
    MetricsLog(tmp_path, enabled=True, tensorboard=False, resume_step=None).write({"step": 1})
    assert _records(tmp_path / "metrics.jsonl") == [{"step": 1}]
    other_rank = MetricsLog(tmp_path, enabled=False, tensorboard=True, resume_step=None)
    other_rank.write({"step": 2})
    assert _records(tmp_path / "metrics.jsonl") == [{"step": 1}] and fake_tensorboard.made == []


def test_tensorboard_missing_is_one_warning_and_the_jsonl_still_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as when not installed
    log = MetricsLog(tmp_path, enabled=True, tensorboard=True, resume_step=None)
    log.write({"step": 1, "loss": 0.1})
    log.close()
    err = capsys.readouterr().err
    assert "tensorboard is not installed" in err and "s5cli[tensorboard]" in err
    assert _records(tmp_path / "metrics.jsonl") == [{"step": 1, "loss": 0.1}]


def test_resume_keeps_the_records_the_checkpoint_counted(tmp_path: Path, fake_tensorboard) -> None:
    """A stop at an epoch's last step saves before that epoch's validation: a run killed after logging the
    validation and resumed from that checkpoint logged the validation twice when cut by step alone."""
    first = MetricsLog(tmp_path, enabled=True, tensorboard=False, resume_step=None)
    for record in ({"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.9}):
        first.write(record)
    assert first.records == 2  # what the step-2 checkpoint stores
    first.write({"step": 2, "val_top1": 0.5})  # then killed before the next checkpoint
    resumed = MetricsLog(tmp_path, enabled=True, tensorboard=False, resume_step=2, resume_records=2)
    assert resumed.records == 2
    resumed.write({"step": 2, "val_top1": 0.5})
    assert _records(tmp_path / "metrics.jsonl") == [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.9},
                                                     {"step": 2, "val_top1": 0.5}]
    # A checkpoint from before the count (-1) keeps every record up to its step, as before.
    MetricsLog(tmp_path, enabled=True, tensorboard=False, resume_step=2)
    assert len(_records(tmp_path / "metrics.jsonl")) == 3


def test_a_torn_last_line_is_dropped_with_a_warning_on_resume(tmp_path: Path, capsys) -> None:
    from s5cli.cli.training import _last_logged_loss

    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.5}\n{"step": 3, "epoch": 1, "lo')
    assert _last_logged_loss(log) == 0.5
    resumed = MetricsLog(tmp_path, enabled=True, tensorboard=False, resume_step=2)
    assert "dropped 1 unreadable line(s)" in " ".join(capsys.readouterr().err.split())
    assert resumed.records == 2 and [r["step"] for r in _records(log)] == [1, 2]
