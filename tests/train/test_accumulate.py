"""Gradient accumulation (train.accumulate): micro-batches whose summed gradients are the whole batch's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from s5cli.cli.app import app
from s5cli.train.batching import micro_batches
from tests.train.test_finetune_e2e import RECIPE, _losses, finetune_in_processes, run_here, tiny

# ViS4mer without dropout: nothing is sampled, so runs that differ only in how a batch is split must follow
# the same trajectory up to the order of float sums. On the CPU (as in CI): on a GPU the runs would train in
# bfloat16, whose rounding differs between a batch and its halves by more than these tolerances.
DETERMINISTIC = {"model.selector": "none", "train.epochs": 1}
ON_CPU = ["--device", "cpu"]


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def test_micro_batches_are_consecutive_and_as_equal_as_possible() -> None:
    assert micro_batches(list(range(8)), 3) == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert micro_batches(list(range(8)), 1) == [list(range(8))]
    assert micro_batches([5, 9], 4) == [[5], [9]]  # a short last batch: fewer pieces, none empty


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "best" / "model.safetensors"))


def _recording_gradient_norms(monkeypatch) -> list[float]:
    """Record the gradient norm each optimizer step sees (Adam's update alone would hide a scale error)."""
    from s5cli.train import loop

    norms: list[float] = []
    real_build = loop.build_optimizer

    def build(module, config):
        optimizer = real_build(module, config)
        real_step = optimizer.step

        def step(*args, **kwargs):
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
            return real_step(*args, **kwargs)

        optimizer.step = step
        return optimizer

    monkeypatch.setattr(loop, "build_optimizer", build)
    return norms


def test_accumulated_micro_batches_train_like_the_whole_batch(tmp_path: Path, monkeypatch) -> None:
    from s5cli.train import step as train_step

    seen: list[int] = []
    real_loss = train_step.batch_loss

    def recording_loss(setup, module, batch):
        seen.append(batch.tokens.shape[0])
        return real_loss(setup, module, batch)

    runner = CliRunner()
    whole_norms = _recording_gradient_norms(monkeypatch)
    whole = tiny(tmp_path, **DETERMINISTIC, **{"train.out_dir": tmp_path / "whole"})
    assert runner.invoke(app, ["finetune", RECIPE, *whole, "--quiet", *ON_CPU]).exit_code == 0
    monkeypatch.undo()
    split_norms = _recording_gradient_norms(monkeypatch)
    monkeypatch.setattr(train_step, "batch_loss", recording_loss)
    split = tiny(tmp_path, **DETERMINISTIC, **{"train.out_dir": tmp_path / "split", "train.accumulate": 2})
    result = runner.invoke(app, ["finetune", RECIPE, *split, "--quiet", *ON_CPU])
    assert result.exit_code == 0, result.output
    assert seen == [4] * 6  # 24 clips, batches of 8 in two micro-batches of 4: the model never saw 8 at once
    assert len(split_norms) == 3 and split_norms == pytest.approx(whole_norms, rel=1e-4)
    assert len(_losses(tmp_path / "split")) == 3  # one logged step per optimizer step
    assert _losses(tmp_path / "split") == pytest.approx(_losses(tmp_path / "whole"), rel=1e-4)
    whole_weights, split_weights = _weights(tmp_path / "whole"), _weights(tmp_path / "split")
    for name, value in whole_weights.items():
        torch.testing.assert_close(split_weights[name], value, rtol=1e-4, atol=1e-5)


def test_accumulate_above_the_batch_is_a_one_line_error_before_any_work(tmp_path: Path) -> None:
    args = tiny(tmp_path, **{"train.accumulate": 9})
    result = CliRunner().invoke(app, ["finetune", RECIPE, *args, "--quiet"])
    assert result.exit_code == 2, result.output
    assert "train.accumulate=9" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "videos").exists() and not (tmp_path / "run").exists()  # nothing generated


def test_accumulate_above_a_process_share_of_the_batch_is_refused_when_training_starts(tmp_path: Path) -> None:
    # 8 clips over 2 processes are 4 each: 6 micro-batches cannot be made of them (the recipe alone is fine).
    args = tiny(tmp_path, **DETERMINISTIC, **{"train.accumulate": 6})
    result = finetune_in_processes(args, processes=2)
    assert result.returncode != 0  # torchrun reports a failed rank as 1, whatever the rank's own code (2)
    assert "train.accumulate=6" in result.stderr and "per process (2 processes)" in result.stderr
    assert not (tmp_path / "run" / "latest").exists()


def test_two_processes_accumulating_match_one_process(tmp_path: Path) -> None:
    # Two ranks of 4 clips, each in two micro-batches of 2 (gradients averaged once, at the last micro-batch)
    # against one process with the whole batch of 8.
    shared = tmp_path / "shared"
    one_args = tiny(shared, **DETERMINISTIC, **{"train.out_dir": tmp_path / "one"})
    two_args = tiny(shared, **DETERMINISTIC, **{"train.out_dir": tmp_path / "two", "train.accumulate": 2})
    run_here(one_args)
    two = finetune_in_processes(two_args, processes=2)
    assert two.returncode == 0, two.stderr[-3000:]
    assert _losses(tmp_path / "two") == pytest.approx(_losses(tmp_path / "one"), rel=1e-4)
    for name, value in _weights(tmp_path / "one").items():
        torch.testing.assert_close(_weights(tmp_path / "two")[name], value, rtol=1e-4, atol=1e-5)


def _setup(batch: int, world: int, objective: str = "supervised", accumulate: int = 1, norm: str = "batch",
           queue: int = 0, clips: int = 64):
    from types import SimpleNamespace

    lsmcl = SimpleNamespace(projector_norm=norm, queue_size=queue)
    train = SimpleNamespace(batch_size=batch, accumulate=accumulate, lsmcl=lsmcl)
    ctx = SimpleNamespace(world_size=world, distributed=world > 1, is_main=True)
    return SimpleNamespace(recipe=SimpleNamespace(train=train), ctx=ctx, objective=objective,
                           train_set=range(clips))


def test_lsmcl_micro_batches_of_one_video_without_a_queue_are_refused() -> None:
    """A contrastive task of one video has one logit: loss 0, no gradient, yet the optimiser stepped on it.
    The recipe check refused train.batch_size=1; accumulation reached the same thing unnoticed."""
    from s5cli.errors import UserError
    from s5cli.train.batching import check_batch_settings

    with pytest.raises(UserError) as error:
        check_batch_settings(_setup(8, 1, "lsmcl", accumulate=5, norm="none"))  # micro-batches 2, 2, 2, 1, 1
    assert str(error.value) == ("train.accumulate=5 with LSMCL and no queue leaves micro-batches of one video, "
                                "which has no negative (the loss is 0 and nothing is learnt): use "
                                "train.accumulate <= 4 or set train.lsmcl.queue_size")
    check_batch_settings(_setup(8, 1, "lsmcl", accumulate=4, norm="none"))
    check_batch_settings(_setup(8, 1, "lsmcl", accumulate=8, norm="none", queue=16))  # queued negatives
    check_batch_settings(_setup(8, 2, "lsmcl", accumulate=4, norm="none"))  # gathered: 2 videos a task
    check_batch_settings(_setup(8, 1, "supervised", accumulate=8))
    with pytest.raises(UserError, match=r"^the train split has 1 video\(s\): LSMCL .* needs at least two videos"):
        check_batch_settings(_setup(8, 1, "lsmcl", norm="none", clips=1))
    with pytest.raises(UserError, match=r"^the train split has 1 video\(s\)"):  # padded onto both processes
        check_batch_settings(_setup(2, 2, "lsmcl", norm="none", clips=1))


def test_lsmcl_on_a_split_of_one_video_is_refused_also_with_a_queue() -> None:
    """A video's own queued keys are no negatives: with a queue, one video trained on a loss of exactly 0 and
    a top-1 of 1.0, and the run ended ok. The message sent users without a queue to that very setting."""
    from s5cli.errors import UserError
    from s5cli.train.batching import check_batch_settings

    for queue in (0, 8):
        with pytest.raises(UserError) as error:
            check_batch_settings(_setup(2, 1, "lsmcl", norm="none", queue=queue, clips=1))
        assert str(error.value) == ("the train split has 1 video(s): LSMCL contrasts each video with others and "
                                    "needs at least two videos (with one the loss is 0 and nothing is learnt): "
                                    "add videos to it")
    check_batch_settings(_setup(2, 1, "lsmcl", norm="none", queue=8, clips=2))
    check_batch_settings(_setup(2, 1, "supervised", clips=1))


def test_two_videos_in_micro_batches_of_one_are_refused_with_the_settings_that_fix_it() -> None:
    from s5cli.errors import UserError
    from s5cli.train.batching import check_batch_settings

    with pytest.raises(UserError) as error:
        check_batch_settings(_setup(8, 1, "lsmcl", accumulate=4, norm="none", clips=2))
    assert str(error.value) == ("the train split has 2 videos, but train.accumulate=4 gives each a micro-batch "
                                "of its own, with no negative: lower train.accumulate or set "
                                "train.lsmcl.queue_size")
    check_batch_settings(_setup(8, 1, "lsmcl", accumulate=4, norm="none", queue=8, clips=2))


def test_distinct_videos_counts_video_ids_not_records() -> None:
    from types import SimpleNamespace

    from s5cli.train.batching import distinct_videos

    records = [SimpleNamespace(video_id=video) for video in ("a", "a", "b")]
    assert distinct_videos(SimpleNamespace(records=records)) == 2
    assert distinct_videos(range(5)) == 5


@pytest.mark.parametrize(("clips", "batch", "world", "accumulate", "queue", "objective", "steps"), [
    (25, 8, 1, 1, 0, "lsmcl", 3),  # the last batch of one video left out
    (25, 8, 1, 1, 16, "lsmcl", 4),  # with a queue it has negatives
    (25, 8, 1, 1, 0, "supervised", 4),
    (26, 8, 1, 2, 0, "lsmcl", 3),  # 2 videos in 2 micro-batches of one
    (27, 8, 1, 2, 0, "lsmcl", 3),  # 3 in micro-batches of 2 and 1: one video alone again
    (25, 8, 2, 1, 0, "lsmcl", 3),  # 13 a process: the last step's two clips are one video and a padding repeat
    (26, 8, 2, 1, 0, "lsmcl", 4),  # 13 a process, no padding: two videos in the last step
    (24, 8, 1, 1, 0, "lsmcl", 3),
    (5, 4, 2, 1, 0, "lsmcl", 1),  # last step: one video on a rank, the other's a repeat of the padding
    (1, 2, 2, 1, 0, "lsmcl", 0),  # one clip on both ranks: never two videos
])
def test_steps_per_epoch_leave_out_an_lsmcl_batch_with_no_negative(clips, batch, world, accumulate, queue,
                                                                    objective, steps) -> None:
    from s5cli.train.batching import steps_per_epoch

    setup = _setup(batch, world, objective, accumulate, queue=queue, clips=clips)
    assert steps_per_epoch(setup, setup.ctx) == steps


def test_a_global_batch_that_does_not_split_over_the_processes_is_refused() -> None:
    from s5cli.errors import UserError
    from s5cli.train.batching import check_batch_settings

    with pytest.raises(UserError) as error:
        check_batch_settings(_setup(7, 2))
    assert str(error.value) == ("train.batch_size=7 (the global batch) does not split evenly over 2 processes: "
                                "use a multiple of 2 (e.g. 6, 8)")
    with pytest.raises(UserError, match=r"use a multiple of 4 \(e\.g\. 4\)"):
        check_batch_settings(_setup(1, 4))
    check_batch_settings(_setup(8, 2))
    check_batch_settings(_setup(7, 1))


def test_a_batch_norm_projector_over_one_clip_is_warned_about(monkeypatch) -> None:
    import s5cli.cli.console as console
    from s5cli.train.batching import check_batch_settings

    said: list[str] = []
    monkeypatch.setattr(console, "print_warning", said.append)
    check_batch_settings(_setup(2, 2, "lsmcl"))  # one clip per process
    assert len(said) == 1 and "projector_norm=batch sees one clip per forward pass" in said[0]
    said.clear()
    check_batch_settings(_setup(4, 1, "lsmcl", accumulate=2, norm="none"))  # the warning about accumulate only
    check_batch_settings(_setup(4, 2, "lsmcl"))
    check_batch_settings(_setup(2, 2, "supervised"))
    assert [m for m in said if "projector_norm" in m] == []
