"""The machine and environment a benchmark report records (s5cli/benchmark/machine.py)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from s5cli.benchmark.machine import describe_environment, timing_environment
from s5cli.cli.app import app


def test_timing_environment_keeps_what_moves_timings_not_the_search_paths() -> None:
    environ = {"OMP_NUM_THREADS": "2", "GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1", "LD_PRELOAD": "libjemalloc.so",
               "MKL_NUM_THREADS": "1", "PYTHONPATH": "/home/me/src", "LD_LIBRARY_PATH": "/opt/lib", "HOME": "/home/me",
               "S5CLI_FUSED_CAUCHY": "0"}
    kept = timing_environment(environ)
    assert list(kept) == ["GLIBC_TUNABLES", "LD_PRELOAD", "MKL_NUM_THREADS", "OMP_NUM_THREADS", "S5CLI_FUSED_CAUCHY"]
    assert kept["GLIBC_TUNABLES"] == "glibc.malloc.trim_threshold=1"


def test_timing_environment_carries_no_directories() -> None:
    """A shared report names which allocator was preloaded, not where the user keeps files."""
    environ = {"TORCH_HOME": "/home/me/.cache/torch", "TORCH_EXTENSIONS_DIR": "/home/me/ext",
               "PYTORCH_KERNEL_CACHE_PATH": "/home/me/kernels", "TORCH_SHOW_CPP_STACKTRACES": "1",
               "LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 ./build/libprobe.so:/opt/tc/libtcmalloc.so",
               "MALLOC_CONF": "background_thread:true,prof_prefix:/home/me/prof/jeprof"}
    kept = timing_environment(environ)
    assert list(kept) == ["LD_PRELOAD", "MALLOC_CONF", "TORCH_SHOW_CPP_STACKTRACES"]
    assert kept["LD_PRELOAD"] == "libjemalloc.so.2 libprobe.so:libtcmalloc.so"
    assert kept["MALLOC_CONF"] == "background_thread:true,prof_prefix:jeprof"
    assert "/home/me" not in describe_environment(kept)


def test_describe_environment_is_one_line_or_nothing() -> None:
    assert describe_environment({}) is None
    line = describe_environment({"MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "1"})
    assert line == "environment: MALLOC_ARENA_MAX=2, OMP_NUM_THREADS=1"


def test_report_and_console_name_the_timing_environment(tmp_path: Path, monkeypatch) -> None:
    """The kernel stage (in-process, no workers) shows and records a set variable; an unset one is absent."""
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    out = tmp_path / "kernel.json"
    result = CliRunner().invoke(app, ["benchmark", "--stage", "kernel", "--frames", "4", "--tokens-per-frame", "4",
                                      "--dim", "8", "--repeat", "1", "--device", "cpu", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "environment: MALLOC_ARENA_MAX=4" in result.output
    environment = json.loads(out.read_text())["machine"]["environment"]
    assert environment["MALLOC_ARENA_MAX"] == "4" and "GLIBC_TUNABLES" not in environment
