"""How benchmark workers start and end: forked from a preloaded server on CPU, spawned where a fork would be
wrong, and never left behind or mistaken for alive, whatever happens to them or to their server."""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
import signal
import subprocess
import sys
import time

import pytest

from s5cli.benchmark import worker_process
from s5cli.benchmark.worker_handle import ERROR, OVER_BUDGET, WorkerHandle
from s5cli.benchmark.worker_process import worker_pids
from s5cli.benchmark.workload import Workload


def _tiny(label: str = "s5", **changes) -> Workload:
    return Workload(label=label, mode="infer", frames=4, tokens_per_frame=6, dim=16, batch=1, **changes)


def _gone(pid: int) -> bool:
    """No such process any more, or only its exit status left (a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("fresh", [False, True], ids=["as-on-this-device", "spawned"])
def test_a_worker_steps_over_its_socket_and_a_crash_is_named_by_its_last_printed_line(fresh: bool) -> None:
    """The protocol over the socket, in both ways a worker starts ("spawned" is also how CUDA workers
    start). A worker that fails before its first event (torch refuses -1 threads) is named by the last
    line it printed, which only its log socket carries."""
    worker = WorkerHandle(_tiny(), None, fresh=fresh)
    try:
        built = worker.wait("built", 120)
        assert built is not None and built["pid"] == worker.pid and built["threads"] >= 1
        assert worker.wait("warmup", 120) is not None
        worker.send("step")
        step = worker.wait("step", 120)
        assert step is not None and step["seconds"] > 0
        worker.quit()
        assert worker.process.exitcode == 0 and worker.alive
    finally:
        worker.kill()
    broken = WorkerHandle(_tiny(threads=-1), None, fresh=fresh)
    try:
        assert broken.wait("built", 120) is None
        assert broken.measurement.status == ERROR
        assert broken.measurement.reason.startswith("worker exited with code 1: RuntimeError: ")
        assert "set_num_threads" in broken.measurement.reason, broken.measurement.reason
    finally:
        broken.kill()
    assert worker_pids() == []


def test_workers_are_forked_on_cpu_and_spawned_for_cuda_fresh_sets_or_a_changed_environment(monkeypatch) -> None:
    monkeypatch.setattr(worker_process, "_forkserver_environment", None)
    # Unset from the start: run with OMP_NUM_THREADS=1 (as on a shared machine), the delenv below left an
    # environment that differed from the first one.
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert worker_process.worker_context("cpu").get_start_method() == "forkserver"
    assert worker_process.worker_context("cuda:1").get_start_method() == "spawn"
    assert worker_process.worker_context("cpu", fresh=True).get_start_method() == "spawn"
    # The forkserver keeps the environment it started with: a changed variable that libraries read as they
    # load needs a new interpreter; any other reaches a forked worker as it is now (next test).
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert worker_process.worker_context("cpu").get_start_method() == "spawn"
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setenv("S5CLI_TEST_PROBE", "changed")
    assert worker_process.worker_context("cpu").get_start_method() == "forkserver"


def _run_child_reporting_its_environment(workload_json, channel, log, environment) -> None:
    """The real `run_child`, with a `serve` that only sends the variable the test below sets."""
    from s5cli.benchmark import worker

    def serve(workload, commands, out) -> int:
        out.write(os.environ.get("S5CLI_TEST_PROBE", "<unset>"))
        out.flush()
        return 0

    worker.serve = serve
    worker.run_child(workload_json, channel, log, environment)


def test_a_forked_worker_sees_the_parents_environment_as_it_is_now(monkeypatch) -> None:
    monkeypatch.setattr(worker_process, "run_child", _run_child_reporting_its_environment)
    for value in ("first", "second"):  # the second worker comes from the same forkserver as the first
        monkeypatch.setenv("S5CLI_TEST_PROBE", value)
        started = worker_process.start_worker(_tiny().to_json())
        with started.channel, started.log:
            assert started.process._popen.__class__.__module__ == "multiprocessing.popen_forkserver"
            assert started.channel.makefile("r").read() == value
        started.process.join(30)
        assert started.process.exitcode == 0


def _run_child_reporting_its_ctrl_c_handling(workload_json, channel, log, environment) -> None:
    """The real `run_child`, with a `serve` that only says whether this process ignores SIGINT."""
    from s5cli.benchmark import worker

    def serve(workload, commands, out) -> int:
        out.write("ignored" if signal.getsignal(signal.SIGINT) is signal.SIG_IGN else "handled")
        out.flush()
        return 0

    worker.serve = serve
    worker.run_child(workload_json, channel, log, environment)


def test_the_forkserver_ignores_ctrl_c_from_its_first_import_and_so_do_its_workers(monkeypatch) -> None:
    """A Ctrl-C while the forkserver imported torch printed its KeyboardInterrupt traceback under the
    parent's "error: interrupted": it ignored SIGINT only after its preloads. The parent handles Ctrl-C
    and ends the workers itself."""
    assert worker_process.WORKER_PRELOAD[0] == "s5cli.benchmark.forkserver_ignores_ctrl_c"
    probe = ("import signal{}, s5cli.benchmark.forkserver_ignores_ctrl_c; "
             "print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)")
    for imports, ignored in ((", multiprocessing.forkserver", "True"), ("", "False")):  # elsewhere: no effect
        completed = subprocess.run([sys.executable, "-c", probe.format(imports)], capture_output=True, text=True,
                                   timeout=60, check=True)
        assert completed.stdout.strip() == ignored
    monkeypatch.setattr(worker_process, "run_child", _run_child_reporting_its_ctrl_c_handling)
    started = worker_process.start_worker(_tiny().to_json())
    with started.channel, started.log:
        assert started.process._popen.__class__.__module__ == "multiprocessing.popen_forkserver"
        assert started.channel.makefile("r").read() == "ignored"
    started.process.join(30)
    assert started.process.exitcode == 0


def test_a_forkserver_that_cannot_start_falls_back_to_spawn(monkeypatch) -> None:
    """Python puts the forkserver's socket under $TMPDIR; a long one passes the AF_UNIX path limit."""
    real_start = worker_process._start
    used = []

    def start(context, target, args):
        used.append(context.get_start_method())
        if context.get_start_method() == "forkserver":
            raise OSError("AF_UNIX path too long")
        return real_start(context, target, args)

    monkeypatch.setattr(worker_process, "_start", start)
    monkeypatch.setattr(worker_process, "_forkserver_environment", None)
    worker = WorkerHandle(_tiny(), None)
    try:
        assert worker.wait("built", 120) is not None
    finally:
        worker.kill()
    assert used == ["forkserver", "spawn"]


def test_a_worker_killed_with_a_command_unread_is_reported_at_once() -> None:
    """Its socket is reset rather than closed then; the reader must still tell `wait` it is gone."""
    worker = WorkerHandle(_tiny(), None)
    try:
        assert worker.wait("built", 120) is not None and worker.wait("warmup", 120) is not None
        os.kill(worker.pid, signal.SIGSTOP)
        worker.send("step")
        os.kill(worker.pid, signal.SIGKILL)
        # With the reset unnoticed, the 30 s budget would end the wait instead, with another reason.
        assert worker.wait("step", 30) is None
        assert worker.measurement.status == OVER_BUDGET
        assert worker.measurement.reason == "killed by the operating system (out of memory?)"
    finally:
        worker.kill()


def test_kill_ends_a_worker_whose_forkserver_died(monkeypatch) -> None:
    """Without its server multiprocessing reports a live worker as exited (code 255): `kill` must still
    end it and its reader threads; a later worker gets a new server."""
    monkeypatch.setattr(worker_process, "_forkserver_environment", None)
    worker = WorkerHandle(_tiny(), None)
    try:
        assert worker.process._popen.__class__.__module__ == "multiprocessing.popen_forkserver"
        assert worker.wait("built", 120) is not None and worker.wait("warmup", 120) is not None
        os.kill(multiprocessing.forkserver._forkserver._forkserver_pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while worker.process.exitcode is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert worker.process.exitcode == 255 and not _gone(worker.pid)  # alive, yet reported as exited
    finally:
        worker.kill()
    assert not worker._events_reader.is_alive() and not worker._log_reader.is_alive()
    deadline = time.monotonic() + 30
    while not _gone(worker.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(worker.pid)
    again = WorkerHandle(_tiny(), None)
    try:
        assert again.wait("built", 120) is not None
    finally:
        again.kill()


def test_worker_pids_sees_a_live_worker_and_nothing_else() -> None:
    """The leftover-worker checks elsewhere must fail when a worker is left, yet ignore children that are
    not the benchmark's (multiprocessing's resource tracker, a Manager started by another test, a subprocess)."""
    worker = WorkerHandle(_tiny("s4"), None)
    other = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(60,))
    other.start()
    plain = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert worker.wait("built", 120) is not None
        assert worker_pids() == [worker.pid]
    finally:
        worker.kill()
        other.kill()
        other.join()
        plain.kill()
        plain.wait()
    assert worker_pids() == []


def test_a_worker_ended_by_a_signal_is_named_by_the_signal(monkeypatch) -> None:
    """Not "exited with code -15": a negative exit code is how multiprocessing reports a signal."""
    from tests.benchmark.fake_worker import use_fake_workers

    use_fake_workers(monkeypatch, {"s5": {"warmup": "hang"}})
    worker = WorkerHandle(_tiny(), None)
    try:
        assert worker.wait("built", 120) is not None
        os.kill(worker.pid, signal.SIGTERM)
        assert worker.wait("warmup", 120) is None
        assert worker.measurement.status == ERROR
        assert worker.measurement.reason == "worker was killed by SIGTERM", worker.measurement.reason
    finally:
        worker.kill()
    assert worker_pids() == []
