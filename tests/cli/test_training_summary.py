"""The end-of-run summary of `s5 pretrain` / `s5 finetune`, and LSMCL runs refused before they train on nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from s5cli.cli.app import app
from s5cli.train.checkpoint_paths import checkpoint_dir
from s5cli.train.init_weights import resolve_init
from tests.train.test_finetune_e2e import RECIPE, tiny

PRETRAIN = {"train.epochs": 1, "train.lsmcl.short_frames": 4, "train.lsmcl.long_frames": 8,
            "train.lsmcl.proj_dim": 16, "data.synthetic.num_train": 4, "train.batch_size": 2}


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs record themselves in ./.s5/last_run: keep that out of the checkout."""
    monkeypatch.chdir(tmp_path)


def test_a_pretraining_summary_names_a_checkpoint_train_init_accepts(tmp_path: Path) -> None:
    """A pretraining run has no best/: the summary printed RUN/latest, the pointer file that train.init and
    `s5 eval -c` refuse."""
    result = CliRunner().invoke(app, ["pretrain", RECIPE, *tiny(tmp_path, **PRETRAIN), "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    printed = re.search(r"^checkpoint: (.+)$", result.output, re.MULTILINE)
    assert printed is not None, result.output
    named = printed.group(1).strip()
    assert resolve_init(named) == checkpoint_dir(tmp_path / "run")  # the run's latest checkpoint


def test_lsmcl_on_one_video_with_a_queue_is_refused_before_training(tmp_path: Path) -> None:
    """A video's own queued keys are no negatives: one video trained on a loss of exactly 0 and reported a
    contrastive top-1 of 1.0, exit 0."""
    args = tiny(tmp_path, **{**PRETRAIN, "data.synthetic.num_train": 1, "train.lsmcl.queue_size": 8})
    result = CliRunner().invoke(app, ["pretrain", RECIPE, *args, "--quiet", "--device", "cpu"])
    said = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "the train split has 1 video(s)" in said and "at least two videos" in said
    assert "queue_size" not in said  # the setting that led into the silent no-op is not offered
    assert not (tmp_path / "run" / "latest").exists()
