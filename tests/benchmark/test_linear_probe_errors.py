"""benchmarks/linear_probe.py reports a user's mistake in one `error:` line, exit 2, as mask_precision.py does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.benchmark.scripts import CPU_ONLY, REPO, script_path


def _probe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(script_path("linear_probe")), *args], capture_output=True,
                          text=True, timeout=300, check=False, cwd=REPO, env=CPU_ONLY)


def test_a_missing_run_folder_is_one_error_line_and_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-run"
    proc = _probe(str(missing))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: checkpoint {missing} does not exist: pass a checkpoint folder (with model.safetensors) "
        "or a run folder"]
    assert proc.stdout == ""


def test_a_bad_override_with_random_weights_is_one_error_line(tmp_path: Path) -> None:
    proc = _probe("--random", str(REPO / "recipes" / "synthetic.yaml"), "model.no_such_key=1")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "no_such_key" in lines[0], proc.stderr
