"""`s5 extract` under torchrun: the ranks' shares are summed into one summary, which rank 0 alone prints."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from s5cli.cli.extract import shares_with_other_ranks
from s5cli.data.extract import ExtractReport, merge_shard_reports

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_shares_are_summed_and_what_every_rank_sees_alike_is_taken_once():
    first = ExtractReport(extracted=2, reused=1, failed=[("a", "bad")], frames=12, seconds=3.0, missing=2,
                          missing_videos=["x", "y"], skipped_splits=["test"], padded=["p"])
    second = ExtractReport(extracted=1, reused=2, failed=[("b", "worse")], frames=6, seconds=5.0, missing=2,
                           missing_videos=["x", "y"], skipped_splits=["test"], fps_above=[("q", 4.0)])
    merged = merge_shard_reports([first, second])
    assert (merged.extracted, merged.reused, merged.frames, merged.seconds) == (3, 3, 18, 5.0)
    assert merged.failed == [("a", "bad"), ("b", "worse")] and merged.padded == ["p"]
    assert merged.fps_above == [("q", 4.0)]
    assert (merged.missing, merged.missing_videos, merged.skipped_splits) == (2, ["x", "y"], ["test"])
    assert merge_shard_reports([first]) == first


def test_only_a_torchrun_job_without_shard_combines(monkeypatch):
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert not shares_with_other_ranks(None)  # RANK/WORLD_SIZE set by hand: no group to join
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    assert shares_with_other_ranks(None)
    assert not shares_with_other_ranks((0, 2))  # an explicit --shard is one share on its own
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not shares_with_other_ranks(None)


@pytest.mark.slow
def test_torchrun_extract_prints_one_summary_of_both_ranks(tmp_path):
    """Two real processes (gloo): stdout is one JSON document counting every video, then one table."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "s5cli", "extract", str(REPO_ROOT / "recipes" / "synthetic.yaml"),
        "data.synthetic.num_train=4", "data.synthetic.num_val=1", "data.synthetic.num_test=1",
        "data.synthetic.frames=12", "data.frames=6", f"data.cache_dir={tmp_path / 'cache'}",
        "--split", "train,val", "--quiet", "--device", "cpu",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "COLUMNS": "200"}

    def run(*extra: str) -> subprocess.CompletedProcess:
        done = subprocess.run([*command, *extra], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        return done

    summary = json.loads(run("--json").stdout)  # one document: a second one was "Extra data"
    assert (summary["extracted"], summary["reused"], summary["failed"]) == (5, 0, 0)
    table = run().stdout
    assert table.count("token cache") == 1, table
    row = next(line for line in table.splitlines() if line.strip().startswith("│ "))
    assert row.replace("│", " ").split()[:4] == ["0", "5", "0", "0"], table  # both ranks' reused videos


def _gather_after_uneven_shares(rank: int, world: int, port: int, results: dict) -> None:
    from s5cli.cli.extract import gathered_report

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      S5_DIST_TIMEOUT_MINUTES="0.02")  # 1.2 s: far less than rank 1's share takes here
    if rank == 1:
        time.sleep(4)  # a share that takes longer than the collective timeout (hours, with films)
    report, prints = gathered_report(ExtractReport(extracted=rank + 1, frames=10, seconds=float(rank)))
    results[rank] = (prints, report.extracted, report.frames, report.seconds)


@pytest.mark.slow
def test_a_rank_whose_share_ends_early_waits_for_the_others_beyond_the_collective_timeout():
    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with mp.Manager() as manager:
        shared = manager.dict()
        mp.spawn(_gather_after_uneven_shares, args=(2, port, shared), nprocs=2)
        results = dict(shared)
    assert results == {0: (True, 3, 20, 1.0), 1: (False, 3, 20, 1.0)}
