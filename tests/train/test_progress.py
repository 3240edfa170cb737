"""The training progress display: a live bar on a terminal, plain lines in logs; both readable at 80 columns."""

from __future__ import annotations

import io
import re

import pytest

from s5cli.cli import console as console_module
from s5cli.cli.console import LogFriendlyConsole
from s5cli.train.progress import TrainingProgress


def _run(monkeypatch: pytest.MonkeyPatch, terminal: bool, total: int = 1500) -> str:
    out = io.StringIO()
    fake = LogFriendlyConsole(file=out, force_terminal=terminal, width=80, color_system=None)
    monkeypatch.setattr(console_module, "stderr", fake)
    progress = TrainingProgress(total, 0)
    for step in range(1, total + 1):
        progress.update(step, epoch=step * 60 // (total + 1), loss=0.0123, lr=1e-3, samples_per_s=445.9)
    progress.close()
    return out.getvalue()


def test_logs_get_plain_lines_and_no_cut_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = _run(monkeypatch, terminal=False).splitlines()
    assert len(lines) == 20  # one every 5 % of the run
    assert all(line.startswith("epoch ") and " samples/s elapsed " in line for line in lines)
    assert "step 1500/1500" in lines[-1]
    assert not any("━" in line or "…" in line for line in lines)  # no final bar frame after them


def test_terminal_bar_fits_80_columns_and_reports_the_time(monkeypatch: pytest.MonkeyPatch) -> None:
    text = _run(monkeypatch, terminal=True)
    last_frame = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text.split("\r")[-1]).splitlines()
    bar = next(line for line in reversed(last_frame) if "━" in line)
    assert "1500/1500" in bar and "ETA 0:00:00" in bar and "…" not in bar
    assert len(bar.rstrip()) <= 80
    assert last_frame[-1].startswith("1500 step(s) in 0:00:")
