"""Measurement primitives: peak resident memory of this process, timing statistics, log-log slopes.

Peak CPU memory. `getrusage().ru_maxrss` is a high-water mark since the process started, so it would
charge a step with whatever model construction or an earlier, larger step once touched. On Linux we
instead reset the kernel's own high-water mark before each timed step (`echo 5 > /proc/self/clear_refs`
sets VmHWM to the current VmRSS) and read VmHWM after it: exact (the kernel updates it on every page
fault), free, and per step. Whether the reset works is tested once per probe by raising the peak on
purpose (`_hwm_reset_works`), not by reading VmHWM twice: right after a fork RSS still grows by a few pages
between two reads, so "VmHWM did not rise after a reset" failed in forked benchmark workers and they fell back
needlessly. Where the reset does not work we fall back to a thread that samples VmRSS every millisecond
(torch kernels release the GIL, so it keeps running; it can miss spikes shorter than that), and off Linux
to ru_maxrss (a process-lifetime high-water mark, flagged as such in the report). `memory_method` in the
JSON says which a worker used.
"""

from __future__ import annotations

import math
import mmap
import os
import re
import resource
import statistics
import sys
import threading
from collections.abc import Sequence

_STATUS_FIELD = re.compile(r"^(VmRSS|VmHWM):\s+(\d+)\s+kB", re.MULTILINE)
# The block `_hwm_reset_works` touches and unmaps to raise VmHWM above RSS: large beside the few pages a
# process may fault in between two reads, small beside any machine. Mapped directly, so unmapping it surely
# leaves RSS (a freed heap block may stay resident).
_RESET_CHECK_BYTES = 16 * 2**20
_MEMORY_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*$", re.IGNORECASE)


def read_vm_status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS and VmHWM of a process in bytes (empty dict where /proc is unavailable or the process is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return {}
    return {name: int(kib) * 1024 for name, kib in _STATUS_FIELD.findall(text)}


def current_rss() -> int:
    """Resident set size of this process in bytes (ru_maxrss where /proc is unavailable)."""
    status = read_vm_status()
    if "VmRSS" in status:
        return status["VmRSS"]
    return _ru_maxrss_bytes()


def _ru_maxrss_bytes() -> int:
    # Linux reports KiB, macOS bytes.
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value if sys.platform == "darwin" else value * 1024


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def _hwm_reset_works() -> bool:
    """Whether writing 5 to clear_refs really lowers VmHWM to the current RSS.

    Why a block: the write may be accepted and ignored (old kernels, sandboxes), so its success is not
    enough, and comparing VmHWM before and after a reset is not either: where VmHWM already equals RSS (a
    fresh fork), RSS growing by a page between the reads looked like a failed reset. A touched, unmapped
    block puts the high-water mark `_RESET_CHECK_BYTES` above RSS; a working reset brings it at least half
    of that down."""
    with mmap.mmap(-1, _RESET_CHECK_BYTES) as block:
        for offset in range(0, _RESET_CHECK_BYTES, mmap.PAGESIZE):
            block[offset] = 1
        raised = read_vm_status().get("VmHWM", 0)
    if not _reset_hwm():
        return False
    return read_vm_status().get("VmHWM", raised) <= raised - _RESET_CHECK_BYTES // 2


class PeakRSSProbe:
    """Peak resident memory of this process between `start()` and `stop()`, in bytes (absolute RSS)."""

    def __init__(self, sample_interval_s: float = 0.001) -> None:
        self.sample_interval_s = sample_interval_s
        self._sampled_peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        status = read_vm_status()
        if "VmHWM" in status and _hwm_reset_works():
            self.method = "vmhwm-reset"
        elif "VmRSS" in status:
            self.method = "vmrss-sampler"
        else:
            self.method = "ru_maxrss"

    def start(self) -> None:
        """Begin a measurement window."""
        if self.method == "vmhwm-reset":
            _reset_hwm()
        elif self.method == "vmrss-sampler":
            self._sampled_peak = current_rss()
            self._stop.clear()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()

    def stop(self) -> int:
        """End the window and return the peak RSS seen in it, in bytes."""
        if self.method == "vmhwm-reset":
            status = read_vm_status()
            return max(status.get("VmHWM", 0), status.get("VmRSS", 0))
        if self.method == "vmrss-sampler":
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            return max(self._sampled_peak, current_rss())
        return _ru_maxrss_bytes()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._sampled_peak = max(self._sampled_peak, current_rss())
            self._stop.wait(self.sample_interval_s)


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of a non-empty sequence."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Median, quartiles and range of repeated measurements."""
    if not values:
        raise ValueError("summarize needs at least one value")
    return {
        "median": statistics.median(values),
        "q1": quantile(values, 0.25),
        "q3": quantile(values, 0.75),
        "min": min(values),
        "max": max(values),
    }


def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope of log(y) against log(x); None with fewer than two distinct positive x."""
    points = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if x > 0 and y > 0]
    if len({px for px, _ in points}) < 2:
        return None
    mean_x = sum(px for px, _ in points) / len(points)
    mean_y = sum(py for _, py in points) / len(points)
    covariance = sum((px - mean_x) * (py - mean_y) for px, py in points)
    variance = sum((px - mean_x) ** 2 for px, _ in points)
    return covariance / variance


def parse_memory_size(text: str) -> int:
    """Bytes in a size such as '8GB', '512MiB', '2g' or '1048576' (K/M/G/T are powers of 1024)."""
    match = _MEMORY_SIZE.match(text)
    if match is None:
        raise ValueError(f"not a memory size: {text!r} (use e.g. 8GB, 512MB)")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * 1024 ** " kmgt".index(unit or " "))


def format_bytes(value: float | None) -> str:
    """Human-readable size in binary units ('1.50 GiB')."""
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{value:.2f} TiB"


def available_memory() -> int | None:
    """MemAvailable of this machine in bytes (None where /proc/meminfo is unavailable)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
