"""benchmarks/results_table.py: a stopped run is marked partial, memory keeps a decimal, S5's ratios read 1.00x."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.benchmark.scripts import load_script


def _row(model: str, peak_mib: float, interrupted: bool = False) -> dict[str, Any]:
    return {"model": model, "mode": "infer", "frames": 8, "tokens_per_frame": 8, "dim": 64, "status": "ok",
            "reason": None, "seconds": {"median": 0.01, "q1": 0.009, "q3": 0.011}, "clips_per_s": 100.0,
            "tokens_per_s": 6400.0, "peak_memory_bytes": peak_mib * 2**20, "interrupted": interrupted}


def _report(interrupted: bool) -> dict[str, Any]:
    return {"schema": "s5cli-benchmark/1", "stage": "model", "settings": {"interrupted": interrupted},
            "results": [_row("s5", 1.38, interrupted), _row("s4", 1.54, interrupted)],
            "ratios": [{"model": "s4", "mode": "infer", "frames": 8, "s5_throughput_ratio": 1.6,
                        "s5_memory_ratio": 1.38 / 1.54}], "slopes": [], "targets": []}


def _cells(lines: list[str]) -> dict[str, list[str]]:
    rows = [line.strip("|").split(" | ") for line in lines if line.startswith("| ") and not line.startswith("| model")]
    return {row[0].strip(): [cell.strip() for cell in row] for row in rows}


def test_memory_keeps_a_decimal_and_s5s_own_ratios_read_1_00x() -> None:
    """1.54 and 1.38 MiB printed as 2 and 1: a 10 % difference read as 2x. S5's ratio cell read a bare "1"."""
    cells = _cells(load_script("results_table").model_table(_report(False)))
    assert (cells["s5"][6], cells["s4"][6]) == ("1.4", "1.5")
    assert cells["s5"][7:] == ["1.00x", "1.00x"]
    assert cells["s4"][7:] == ["1.60x", "0.90x"]


def test_a_stopped_run_is_marked_partial_and_a_complete_one_is_not(tmp_path: Path, capsys) -> None:
    """`settings.interrupted`: Ctrl-C or SIGTERM stopped the run; its table lacks what was not reached."""
    table = load_script("results_table")
    stopped, complete = tmp_path / "stopped.json", tmp_path / "complete.json"
    stopped.write_text(json.dumps(_report(True)))
    complete.write_text(json.dumps(_report(False)))
    assert table.main([str(stopped), str(complete)]) == 0
    stopped_part, complete_part = capsys.readouterr().out.split("### complete.json")
    assert "Partial (interrupted)" in stopped_part
    assert "; 2 rows from steps cut short by the stop (marked)." in stopped_part
    assert all(row[3].endswith("cut short") for row in _cells(stopped_part.splitlines()).values())
    assert "Partial" not in complete_part and "cut short" not in complete_part
