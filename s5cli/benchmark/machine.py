"""What a benchmark report says about the machine and process settings its numbers came from.

Why the environment is part of it: on this project's 2-core VM one variable moved both models' CPU steps.
With glibc's allocator told to keep freed memory
(`GLIBC_TUNABLES=glibc.malloc.mmap_threshold=...:glibc.malloc.trim_threshold=...`), S4's default-size
inference step ran ~20 % faster and S5's ~12 % (S4 no longer faults ~35 MiB in every step;
benchmarks/README.md, v24). Two reports that differ only in such a variable would otherwise look like a
regression or a speed-up of the code.
"""

from __future__ import annotations

import os
import platform
import re
from typing import Any

# Prefixes of environment variables that change how fast a step runs: thread pools (OpenMP, MKL, BLAS),
# the C allocator, a preloaded allocator library, torch's own switches and s5cli's (`S5CLI_FUSED_CAUCHY`
# chooses the GPU's DPLR kernel). Not the search paths PYTHONPATH and LD_LIBRARY_PATH: they choose what is
# loaded, not how fast it runs. Kin of `worker_process.LOAD_TIME_VARIABLES`, which asks another question
# (what needs a fresh interpreter) and so also holds PYTHON* and LD_*.
TIMING_VARIABLES = ("OMP_", "KMP_", "GOMP_", "MKL_", "OPENBLAS_", "MALLOC_", "GLIBC_TUNABLES", "LD_PRELOAD",
                    "TORCH_", "PYTORCH_", "S5CLI_")

# Matched variables that only choose a directory (TORCH_HOME, TORCH_EXTENSIONS_DIR, PYTORCH_KERNEL_CACHE_PATH):
# they say where files go, not how fast a step runs, and would put a user's directories into a report that is
# meant to be shared (attached to an issue, committed under benchmarks/results/).
DIRECTORY_SUFFIXES = ("_HOME", "_DIR", "_PATH", "_ROOT")

# A path's directory part inside a value: the longest run of non-separators that ends in "/". Separators are
# those of the variables above (LD_PRELOAD's spaces and colons, GLIBC_TUNABLES' colons and "=", MALLOC_CONF's
# commas), so "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2" keeps "libjemalloc.so.2" (which allocator ran,
# the fact that moves timings) and drops where it is installed.
_DIRECTORY_PART = re.compile(r"[^\s:;,=]*/")


def timing_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The set variables of `TIMING_VARIABLES` (of `os.environ` by default), sorted by name, without directories.

    Directory-choosing variables (`DIRECTORY_SUFFIXES`) are left out and paths in the other values keep only
    their file names, so a shared report names the settings that moved its timings and no user's directories.
    """
    source = os.environ if environ is None else environ
    return {name: _DIRECTORY_PART.sub("", source[name]) for name in sorted(source)
            if name.startswith(TIMING_VARIABLES) and not name.endswith(DIRECTORY_SUFFIXES)}


def describe_environment(environment: dict[str, str]) -> str | None:
    """One line for the console ("environment: NAME=value, ..."), or None when nothing is set."""
    if not environment:
        return None
    return "environment: " + ", ".join(f"{name}={value}" for name, value in environment.items())


def machine_facts(device: str) -> dict[str, Any]:
    """Device, CPU count, versions, load average and timing environment, for a report's `machine` entry."""
    import torch

    from s5cli.benchmark.measure import cpu_count

    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(device)
    else:
        name = cpu_name() or platform.processor() or "cpu"
    # The load average says how busy a shared machine was: alternation keeps ratios fair, not absolute times.
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return {"device": device, "device_name": name, "cpus": cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(), "load_average": load,
            "environment": timing_environment()}


def cpu_name() -> str | None:
    """The CPU model from /proc/cpuinfo (Linux); None elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None
