"""A token file that goes missing or is damaged mid-run: one line naming it, a checkpoint, and a resume
that extracts it again and ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from s5cli.cli.app import app
from s5cli.data.cache import CorruptCacheEntry, TokensLost, lost_tokens_reason
from s5cli.train import step as train_step
from s5cli.train.evaluation import read_batches
from tests.train.test_finetune_e2e import RECIPE, _env, _losses_if_any, tiny


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def _records(run: Path) -> list[dict]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [{k: v for k, v in r.items() if k != "samples_per_s"} for r in records]


def _token_files(cache: Path) -> list[Path]:
    files = sorted(cache.rglob("*.safetensors"))
    assert files, f"no token files under {cache}"
    return files


def _lose_tokens(cache: Path, how: str) -> None:
    for path in _token_files(cache):
        if how == "delete":
            path.unlink()
        else:  # a disk fault: the header now claims more bytes than the file has
            path.write_bytes(b"\xff" * 8 + b"{}")


@pytest.mark.parametrize(("how", "workers", "after_call", "when"), [
    ("delete", 0, 5, "at step 6"),
    ("damage", 2, 5, ""),  # workers load ahead: the step or the validation after it finds the damage
    ("delete", 0, 3, "validating after epoch 1"),
])
def test_lost_tokens_stop_with_one_line_and_resume_extracts_them_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str, workers: int, after_call: int, when: str,
) -> None:
    shared = tmp_path / "shared"
    settings = {"train.epochs": 4, "model.dropout": 0.1, "data.num_workers": workers, "data.prefetch_batches": 1}
    full = tiny(shared, **settings, **{"train.out_dir": tmp_path / "full"})
    result = CliRunner().invoke(app, ["finetune", RECIPE, *full, "--quiet"])
    assert result.exit_code == 0, result.output

    real_loss, calls = train_step.batch_loss, {"n": 0}

    def loss_then_lose_tokens(setup, module, batch):
        calls["n"] += 1
        if calls["n"] == after_call:
            _lose_tokens(shared / "cache", how)
        return real_loss(setup, module, batch)

    monkeypatch.setattr(train_step, "batch_loss", loss_then_lose_tokens)
    cut = tiny(shared, **settings, **{"train.out_dir": tmp_path / "cut"})
    result = CliRunner().invoke(app, ["finetune", RECIPE, *cut, "--quiet"])
    output = " ".join(result.output.split())
    assert result.exit_code == 1, result.output
    assert "Traceback" not in output and "DataLoader worker" not in output
    reason = "no cached tokens for video" if how == "delete" else "corrupt cache entry"
    assert f"error: {reason}" in output and str(shared / "cache") in output
    assert when in output and "checkpoint saved to" in output and "--resume" in output
    from s5cli.train.checkpoint_paths import checkpoint_dir

    assert checkpoint_dir(tmp_path / "cut").name in output

    monkeypatch.setattr(train_step, "batch_loss", real_loss)
    result = CliRunner().invoke(app, ["finetune", RECIPE, *cut, "--quiet", "--resume"])
    assert result.exit_code == 0, result.output
    assert _records(tmp_path / "cut") == _records(tmp_path / "full")


def test_eval_names_a_token_file_lost_while_it_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = CliRunner().invoke(app, ["finetune", RECIPE, *tiny(tmp_path, **{"train.epochs": 1}), "--quiet"])
    assert result.exit_code == 0, result.output
    from s5cli.train import evaluation

    real_predict = evaluation.predict

    def predict_after_losing_tokens(*args, **kwargs):
        _lose_tokens(tmp_path / "cache", "delete")
        return real_predict(*args, **kwargs)

    monkeypatch.setattr(evaluation, "predict", predict_after_losing_tokens)
    result = CliRunner().invoke(app, ["eval", "--checkpoint", str(tmp_path / "run"), "--quiet"])
    assert result.exit_code == 1, result.output
    line = " ".join(result.output.split())
    assert line.startswith("error: no cached tokens for video") and "Traceback" not in line
    assert line.endswith("run the same command again; it extracts missing tokens first")


def _loader_failing_with(error: Exception, workers: int):
    class Failing(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, index: int):
            if index == 1:
                raise error
            return torch.zeros(1)

    return torch.utils.data.DataLoader(Failing(), batch_size=1, num_workers=workers)


@pytest.mark.parametrize("workers", [0, 1])
@pytest.mark.parametrize("error", [FileNotFoundError("no cached tokens for video 'a' at /c/a.safetensors"),
                                   CorruptCacheEntry("corrupt cache entry /c/a.safetensors: truncated")])
def test_read_batches_turns_a_loader_error_into_its_own_one_line_reason(error: Exception, workers: int) -> None:
    batches = read_batches(_loader_failing_with(error, workers))
    assert next(batches).shape == (1, 1)
    with pytest.raises(TokensLost) as raised:
        next(batches)
    assert str(raised.value) == f"{error} (the file went missing or was damaged during the run)"


def test_lost_tokens_reason_keeps_other_messages_whole() -> None:
    assert lost_tokens_reason(FileNotFoundError("plain")) == "plain"
    assert lost_tokens_reason(FileNotFoundError()) == "FileNotFoundError"


def _run_losing_tokens(args: list[str], tmp_path: Path) -> tuple[int, str]:
    """Start `args` (a tiny run into tmp_path), delete every token file once 4 steps are logged, and
    return its exit code and stderr; a process that never exits fails the test at the timeout."""
    proc = subprocess.Popen(args, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and len(_losses_if_any(metrics)) < 4:
        time.sleep(0.02)
    assert proc.poll() is None, "run finished before its tokens could be deleted; make it longer"
    _lose_tokens(tmp_path / "cache", "delete")
    try:
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    return proc.returncode, err


def test_a_process_whose_loader_workers_lose_tokens_exits_with_the_line(tmp_path: Path) -> None:
    """As a user runs it: the workers are ended with the error (they ignore SIGTERM, with which Python's
    exit ends leftover workers, so a process whose error held its loader never exited)."""
    args = [sys.executable, "-m", "s5cli", "finetune", RECIPE, "--quiet",
            *tiny(tmp_path, **{"train.epochs": 6, "data.num_workers": 2, "data.prefetch_batches": 1})]
    code, err = _run_losing_tokens(args, tmp_path)
    assert code == 1, err
    assert "Traceback" not in err and "no cached tokens for video" in err and "--resume" in err


def test_under_torchrun_the_rank_that_loses_tokens_names_them_and_every_rank_stops(tmp_path: Path) -> None:
    """Two processes: whichever finds the file gone (a training step, or rank 0's validation) reports it,
    and the run ends rather than leaving the other rank waiting in a collective; --resume finishes it (here
    in one process, which is allowed: the tokens are extracted again either way)."""
    finetune = ["finetune", RECIPE, "--quiet", "--device", "cpu", *tiny(tmp_path, **{"train.epochs": 6})]
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "s5cli", *finetune]
    code, err = _run_losing_tokens(args, tmp_path)
    assert code != 0, err
    assert "error: no cached tokens for video" in err and "--resume" in err
    resumed = CliRunner().invoke(app, [*finetune, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert len(_losses_if_any(tmp_path / "run" / "metrics.jsonl")) == 6 * 3
