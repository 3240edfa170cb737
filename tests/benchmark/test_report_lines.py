"""The printed report says where each target's bar comes from, and what a peak holds in each mode."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

from s5cli.benchmark.report import render, target_rows


def _printed(report: dict[str, Any]) -> list[str]:
    out = io.StringIO()
    render({"results": [], "ratios": [], "slopes": [], "targets": [], "settings": {}, **report},
           Console(file=out, width=200, force_terminal=False))
    return out.getvalue().splitlines()


def _ratio(model: str, speed: float, memory: float) -> dict[str, Any]:
    return {"model": model, "mode": "infer", "frames": 60, "s5_throughput_ratio": speed, "s5_memory_ratio": memory}


def test_memory_vs_the_transformer_is_judged_against_issue_6_and_the_design_notes_bar() -> None:
    """0.18x "met" against issue 6's 0.5x alone read as if the project's bar were met; the design notes set
    0.1x at the paper size, so the line names both."""
    targets = target_rows([_ratio("transformer", 40.0, 0.18), _ratio("s4", 1.7, 0.7)], [], grid=(197, 1024))
    memory = next(c for c in targets if (c["model"], c["metric"]) == ("transformer", "memory"))
    assert (memory["source"], memory["threshold"], memory["met"]) == ("issue 6", 0.5, True)
    assert (memory["design_threshold"], memory["design_met"]) == (0.1, False)
    assert all(c["source"] == "issue 6" for c in targets)
    assert all("design_threshold" not in c for c in targets if c is not memory)  # the other bars agree

    lines = [line for line in _printed({"targets": targets}) if line.startswith("target ")]
    assert ("target S5 memory vs transformer (infer, 60 frames): 0.18x (issue 6 target <= 0.5x) met; "
            "design notes' bar at the paper size <= 0.1x missed") in lines
    assert "target S5 memory vs s4 (infer, 60 frames): 0.70x (issue 6 target <= 0.77x) met" in lines
    assert "target S5 throughput vs transformer (infer, 60 frames): 40.00x (issue 6 target >= 4.0x) met" in lines


def test_a_value_next_to_the_design_bar_gets_a_third_decimal() -> None:
    (memory,) = [c for c in target_rows([_ratio("transformer", 40.0, 0.1049)], [], grid=(197, 1024))
                 if c["metric"] == "memory"]
    line = next(line for line in _printed({"targets": [memory]}) if line.startswith("target "))
    assert ": 0.105x (issue 6 target <= 0.5x) met; design notes' bar at the paper size <= 0.1x missed" in line


@pytest.mark.parametrize("grid", [(50, 768), None])
def test_the_design_bar_is_not_judged_away_from_the_paper_size(grid: tuple[int, int] | None) -> None:
    """The design notes' 0.1x is set for 60 x 197 x 1024: the default CPU size's 0.18x read "missed" against it
    under a line that said "at the paper size"."""
    (memory,) = [c for c in target_rows([_ratio("transformer", 40.0, 0.18)], [], grid=grid) if c["metric"] == "memory"]
    assert (memory["met"], memory["design_threshold"], memory["design_met"]) == (True, 0.1, None)
    line = next(line for line in _printed({"targets": [memory]}) if line.startswith("target "))
    assert line.endswith("met; design notes' bar <= 0.1x is set for the paper size (60 x 197 x 1024): not judged here")


def _row(mode: str) -> dict[str, Any]:
    return {"model": "s5", "mode": mode, "frames": 4, "status": "error", "reason": "stub"}


@pytest.mark.parametrize(("modes", "contents"), [
    (["infer"], "weights + input + activations)."),
    (["train"], "weights + input + optimiser state + activations)."),
    (["infer", "train"], "weights + input + activations, + optimiser state in train)."),
])
def test_the_memory_footnote_names_optimiser_state_only_where_a_row_trains(modes: list[str], contents: str) -> None:
    footnote = next(line for line in _printed({"results": [_row(mode) for mode in modes]})
                    if line.startswith("S5 speedup = "))
    assert footnote.endswith(f"(peak above the process baseline: {contents}")
