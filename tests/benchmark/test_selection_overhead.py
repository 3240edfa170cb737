"""benchmarks/selection_overhead.py: the three models and S5's selection are timed, ratios come from medians."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmark.scripts import load_script, run_script


def _module():
    return load_script("selection_overhead")


def test_every_model_is_timed_and_the_ratios_are_their_medians(monkeypatch) -> None:
    module = _module()
    monkeypatch.setattr(module, "SETTLE_S", 0.0)
    result = module.measure(dim=32, tokens_per_frame=6, frames=4, steps=3, warmup=1, seed=0)
    assert set(result["models"]) == {"s5", "random", "s4"}
    for row in [*result["models"].values(), result["s5_select"]]:
        assert 0 < row["min_ms"] <= row["median_ms"]
    median = {label: row["median_ms"] for label, row in result["models"].items()}
    assert result["ratios_from_medians"]["s4_over_s5"] == pytest.approx(median["s4"] / median["s5"])
    assert result["ratios_from_medians"]["s4_over_random"] == pytest.approx(median["s4"] / median["random"])
    assert result["size"] == {"frames": 4, "tokens_per_frame": 6, "dim": 32, "batch": 1} and result["steps"] == 3


def test_the_script_prints_a_row_per_model_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "overhead.json"
    proc = run_script("selection_overhead", "--dim", "32", "--tokens-per-frame", "6", "--frames", "4",
                      "--steps", "2", "--warmup", "1", "--threads", "1", "--json", str(out))
    assert [line.split()[0] for line in proc.stdout.splitlines()[:3]] == ["s5", "random", "s4"]
    data = json.loads(out.read_text())
    assert data["threads"] == 1 and set(data["models"]) == {"s5", "random", "s4"}
