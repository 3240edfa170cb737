"""A resume that changes the process count or the validation protocol: the extra ranks draw their own noise,
and what changed is said."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from s5cli.cli.app import app
from s5cli.seeding import rank_seed
from s5cli.train import checkpoint as ckpt
from s5cli.train.resume_point import apply_resume_point, read_resume_point
from s5cli.train.rng_states import restore_rng
from tests.train.test_checkpoint import _trained_pair
from tests.train.test_finetune_e2e import RECIPE, tiny
from tests.train.test_rng_states import FakeGpus


def _seeded_state(seed: int) -> torch.Tensor:
    return torch.Generator().manual_seed(seed).get_state()


def test_a_rank_without_a_saved_state_seeds_its_own_instead_of_copying_rank_0s(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A checkpoint written by one process, resumed by two: rank 1 took rank 0's CPU and CUDA states, so both
    ranks drew the same dropout, Gumbel noise and LSMCL masks. It now seeds them with rank_seed(seed + step)."""
    gpus = FakeGpus(monkeypatch, current=0)
    cuda_seeds: list[int] = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", cuda_seeds.append)  # what torch.manual_seed calls
    model, opt = _trained_pair()
    path = ckpt.save_checkpoint(tmp_path / "c", model, {}, opt, {}, ckpt.TrainerState(step=3))
    point = read_resume_point(path)
    cuda_seeds.clear()  # _trained_pair's own torch.manual_seed(0)
    rank0_cpu = point.tensors["rng.torch"]
    restore_rng(point.tensors, point.payload["rng"], rank=1, fresh_seed=10)
    assert torch.equal(torch.get_rng_state(), _seeded_state(rank_seed(10, 1)))
    assert not torch.equal(torch.get_rng_state(), rank0_cpu)
    assert gpus.restored == [] and cuda_seeds == [rank_seed(10, 1)]  # rank 0's CUDA state not copied either
    restore_rng(point.tensors, point.payload["rng"], rank=2, fresh_seed=10)
    assert torch.equal(torch.get_rng_state(), _seeded_state(rank_seed(10, 2)))  # every extra rank its own
    # The trainer's path: the run's seed plus the step resumed at (3).
    apply_resume_point(read_resume_point(path), opt, rank=1, seed=7)
    assert torch.equal(torch.get_rng_state(), _seeded_state(rank_seed(10, 1)))
    # Rank 0 always has a saved state: it continues exactly.
    apply_resume_point(read_resume_point(path), opt, rank=0, seed=7)
    assert torch.equal(torch.get_rng_state(), rank0_cpu)


def test_the_process_count_warning_says_what_the_other_ranks_draw(capsys: pytest.CaptureFixture[str]) -> None:
    from s5cli.train.resume_warnings import say_the_process_count_changed

    say_the_process_count_changed(Path("run/checkpoints/step-0000003"), 1, 3)
    more = " ".join(capsys.readouterr().err.split())
    assert "written by 1 process(es), this run has 3" in more
    assert "ranks 1-2 had no saved generator state and draw from a new seed" in more
    say_the_process_count_changed(Path("run/checkpoints/step-0000003"), 4, 2)
    fewer = " ".join(capsys.readouterr().err.split())
    assert "the generator states of its ranks 2-3 are not used" in fewer


@pytest.fixture
def finished_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["finetune", RECIPE, *tiny(tmp_path), "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return tmp_path / "run"


def test_a_resume_that_changes_how_validation_scores_says_so(tmp_path: Path, finished_run: Path) -> None:
    """eval.* may change on --resume, but the best metric and early-stop patience then compare validations
    scored two ways: a warning names the changed keys; other eval keys (the batch) change nothing."""
    runner = CliRunner()
    extra = {"train.epochs": 3, "eval.window_stride": 4, "eval.batch_size": 4}
    result = runner.invoke(app, ["finetune", RECIPE, *tiny(tmp_path, **extra), "--quiet", "--device", "cpu",
                                 "--resume"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "--resume: eval.window_stride (null -> 4) changes how validation scores" in said
    assert "eval.batch_size" not in said
    # The next resume compares with the recipe of the checkpoint it continues: nothing changed since.
    result = runner.invoke(app, ["finetune", RECIPE, *tiny(tmp_path, **{**extra, "train.epochs": 4}), "--quiet",
                                 "--device", "cpu", "--resume"])
    assert result.exit_code == 0, result.output
    assert "changes how validation scores" not in result.output
