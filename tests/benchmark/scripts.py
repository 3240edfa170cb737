"""Load a script of benchmarks/ as a module, so tests can call its functions (the folder is no package)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def script_path(name: str) -> Path:
    """benchmarks/<name>.py in this checkout."""
    return REPO / "benchmarks" / f"{name}.py"


def load_script(name: str) -> ModuleType:
    """benchmarks/<name>.py imported under its own name."""
    spec = importlib.util.spec_from_file_location(name, script_path(name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
