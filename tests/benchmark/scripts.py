"""Run a script of benchmarks/ as a user would, or load it as a module so tests can call its functions (the
folder is no package)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
CPU_ONLY = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # the CPU path, also on a GPU machine


def run_script(name: str, *args: str, env: dict[str, str] | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """benchmarks/<name>.py with `args`, from the repository root, on the CPU; fails the test on a non-zero exit."""
    completed = subprocess.run([sys.executable, str(script_path(name)), *args], capture_output=True, text=True,
                               timeout=timeout, check=False, cwd=REPO, env=env or CPU_ONLY)
    assert completed.returncode == 0, completed.stderr
    return completed


def script_path(name: str) -> Path:
    """benchmarks/<name>.py in this checkout."""
    return REPO / "benchmarks" / f"{name}.py"


def load_script(name: str) -> ModuleType:
    """benchmarks/<name>.py imported under its own name."""
    spec = importlib.util.spec_from_file_location(name, script_path(name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
