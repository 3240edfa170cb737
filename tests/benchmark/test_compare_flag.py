"""`s5 benchmark --compare` must name a model to measure beside S5: an empty list ran S5 alone, silently."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from s5cli.cli.app import app

CHOICES = "choose from s4, transformer, random, uniform, vit, vis4mer"


@pytest.mark.parametrize("value", [",", "s5", "s5,selective-s4", " , "])
def test_a_compare_list_without_another_model_is_a_one_line_error(value: str, monkeypatch) -> None:
    import s5cli.benchmark.runner as runner

    monkeypatch.setattr(runner, "run_group", lambda *a, **k: pytest.fail("S5 ran alone"))
    result = CliRunner().invoke(app, ["benchmark", "--device", "cpu", "--compare", value])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors == [f"error: --compare {value!r} names no model to measure beside S5 (always measured); "
                      f"{CHOICES}"]
    assert "Traceback" not in result.output


def test_s5_in_the_list_beside_another_model_is_still_accepted(monkeypatch) -> None:
    """Only a list that leaves nothing to compare is refused; 's5,s4' measures S5 and S4 as before."""
    import s5cli.benchmark.runner as runner

    seen: list[list[str]] = []

    def fake_group(workloads, *args, **kwargs):
        seen.append([w.label for w in workloads])
        raise KeyboardInterrupt  # stop before measuring: only the labels are of interest

    monkeypatch.setattr(runner, "run_group", fake_group)
    CliRunner().invoke(app, ["benchmark", "--device", "cpu", "--mode", "infer", "--compare", "s5,s4"])
    assert seen == [["s5", "s4"]]
