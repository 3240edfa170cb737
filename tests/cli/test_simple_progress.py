"""SimpleProgress in a log: no bar; plain lines only for jobs long enough to need them."""

from __future__ import annotations

import io

import pytest

from s5cli.cli import console


def _log(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    out = io.StringIO()
    monkeypatch.setattr(console, "stderr", console.LogFriendlyConsole(file=out, force_terminal=False, width=80))
    return out


def test_a_short_job_prints_nothing_to_a_log(monkeypatch: pytest.MonkeyPatch) -> None:
    out = _log(monkeypatch)
    progress = console.SimpleProgress("evaluating", total=5)
    for _ in range(5):
        progress.advance()
    progress.close()
    assert out.getvalue() == ""


def test_a_long_job_prints_plain_lines_with_count_and_eta(monkeypatch: pytest.MonkeyPatch) -> None:
    out = _log(monkeypatch)
    monkeypatch.setattr(console, "LOG_LINE_EVERY_S", 0.0)  # every advance counts as "long enough"
    progress = console.SimpleProgress("evaluating", total=4)
    for _ in range(4):
        progress.advance()
    progress.close()
    lines = out.getvalue().splitlines()
    assert [line.split(" elapsed ")[0] for line in lines] == [f"evaluating {n}/4" for n in range(1, 5)]
    assert all(" ETA " in line for line in lines) and "━" not in out.getvalue()


def test_a_terminal_gets_the_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(console, "stderr", console.LogFriendlyConsole(file=out, force_terminal=True, width=80))
    progress = console.SimpleProgress("evaluating", total=3)
    progress.advance(3)
    progress._progress.refresh()
    progress.close()
    assert "evaluating" in out.getvalue() and "3/3" in out.getvalue()
