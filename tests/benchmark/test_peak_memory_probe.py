"""PeakRSSProbe picks the exact method (the kernel's VmHWM, reset per step) in forked workers too.

The benchmark's CPU workers are forks of a forkserver. Right after a fork, RSS still grows by a few pages
(copy-on-write and lazy faults) between two reads of /proc/self/status, so a support check of "VmHWM did not
rise after the reset" failed in every fork and each worker fell back to the 1 ms RSS sampler.
"""

from __future__ import annotations

import multiprocessing
import os
import sys

import pytest

from s5cli.benchmark.measure import PeakRSSProbe

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not os.access("/proc/self/clear_refs", os.W_OK),
    reason="needs Linux with a writable /proc/self/clear_refs (VmHWM reset)",
)


def _probe_method(results: multiprocessing.Queue) -> None:
    """In the child: the method a fresh probe chooses (what a benchmark worker does first)."""
    results.put(PeakRSSProbe().method)


def _method_in_child(start_method: str) -> str:
    context = multiprocessing.get_context(start_method)
    results = context.Queue()
    child = context.Process(target=_probe_method, args=(results,))
    child.start()
    try:
        return results.get(timeout=120)
    finally:
        child.join(timeout=30)


@pytest.mark.parametrize("start_method", ["forkserver", "fork"])
def test_a_forked_worker_resets_the_kernels_high_water_mark(start_method: str) -> None:
    assert PeakRSSProbe().method == "vmhwm-reset"  # this process: the reset is allowed here
    assert _method_in_child(start_method) == "vmhwm-reset"


def test_the_reset_probe_measures_a_freed_block_in_a_fork() -> None:
    """The method chosen in a fork also measures: a block touched and freed inside the window is its peak."""
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_peak_of_a_freed_block, args=(results,))
    child.start()
    try:
        method, rise = results.get(timeout=120)
    finally:
        child.join(timeout=30)
    assert method == "vmhwm-reset"
    # Not the full 64 MiB: the kernel's RSS counters are per-CPU approximations (see test_runner.py).
    assert rise >= 40 * 2**20


def _peak_of_a_freed_block(results: multiprocessing.Queue) -> None:
    import mmap

    from s5cli.benchmark.measure import current_rss

    probe = PeakRSSProbe()
    base = current_rss()
    probe.start()
    with mmap.mmap(-1, 64 * 2**20) as block:
        for offset in range(0, len(block), mmap.PAGESIZE):
            block[offset] = 1
    results.put((probe.method, probe.stop() - base))


def test_a_reset_the_kernel_accepts_but_ignores_falls_back_to_the_sampler(monkeypatch) -> None:
    """A clear_refs write that succeeds and changes nothing (an old kernel, a sandbox) must not pass for a reset:
    VmHWM would then be the process-lifetime peak, charged to every step."""
    from s5cli.benchmark import measure

    monkeypatch.setattr(measure, "_reset_hwm", lambda: True)
    assert PeakRSSProbe().method == "vmrss-sampler"
