"""End to end on the bundled synthetic task (tiny sizes): finetune, eval, kill -9 + resume, torchrun, pretrain."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from s5cli.cli.app import app

REPO = Path(__file__).resolve().parents[2]
RECIPE = str(REPO / "recipes" / "synthetic.yaml")


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs record themselves in ./.s5/last_run: keep that out of the checkout."""
    monkeypatch.chdir(tmp_path)


def tiny(tmp: Path, **extra: object) -> list[str]:
    """Overrides that shrink the synthetic recipe to a few seconds of CPU work."""
    values: dict[str, object] = {
        "data.root": tmp / "videos", "data.cache_dir": tmp / "cache",
        "data.synthetic.num_train": 24, "data.synthetic.num_val": 8, "data.synthetic.num_test": 8,
        "data.synthetic.frames": 8, "data.frames": 8,
        "model.d_model": 32, "model.n_blocks": 2, "model.d_state": 8, "model.guide_channels": 8,
        "model.dropout": 0.0, "train.epochs": 2, "train.batch_size": 8, "train.log_every": 1,
        "train.out_dir": tmp / "run", "eval.batch_size": 8,
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def finetune_in_processes(args: list[str], processes: int = 2, command: str = "finetune") -> subprocess.CompletedProcess:
    """`s5 COMMAND RECIPE ARGS --quiet --device cpu` under torchrun with `processes` ranks (the one-process
    references run in this interpreter: `run_here`).

    On the CPU always, as in CI: on a GPU machine the ranks would otherwise take GPUs (a one-GPU machine
    has no second one) and train in mixed precision, which the comparisons here are not written for.
    --standalone: the rendezvous binds a port the OS picks and hands it to the ranks (a port found free
    beforehand and passed in could be taken by another process in between)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
    return subprocess.run([*launcher, "-m", "s5cli", command, RECIPE, *args, "--quiet", "--device", "cpu"],
                          env=_env(), capture_output=True, text=True, timeout=600)


def run_here(args: list[str], command: str = "finetune") -> None:
    """`s5 COMMAND RECIPE ARGS --quiet --device cpu` in this interpreter: the one-process reference a
    torchrun run is compared with (torch is imported already, which saves a fresh interpreter's seconds)."""
    result = CliRunner().invoke(app, [command, RECIPE, *args, "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output


def _losses(run: Path, key: str = "loss") -> list[float]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [rec[key] for rec in lines if key in rec]


def test_finetune_writes_a_complete_run_and_eval_reads_it(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["finetune", RECIPE, *tiny(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    for name in ("recipe.yaml", "metrics.jsonl", "latest", "best/model.safetensors"):
        assert (run / name).exists(), name
    assert len(_losses(run)) == 2 * 3  # 24 videos / batch 8 x 2 epochs
    out = tmp_path / "eval.json"
    # A run folder means its best checkpoint.
    result = runner.invoke(app, ["eval", "--checkpoint", str(run), "--split", "val", "--json", str(out), "-q"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert metrics["count"] == 8 and 0.0 <= metrics["top1"] <= 1.0
    best = json.loads((run / "best" / "metrics.json").read_text())
    assert metrics["top1"] == pytest.approx(best["top1"])
    # --json -: stdout is the JSON alone, so it can be piped.
    result = runner.invoke(app, ["eval", "--checkpoint", str(run), "--split", "val", "--json", "-", "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["top1"] == pytest.approx(metrics["top1"])
    # One raw video end to end: decode + backbone + model, top predictions as JSON.
    video = next((tmp_path / "videos").rglob("*.mp4"))
    out = tmp_path / "video.json"
    result = runner.invoke(app, ["eval", "--video", str(video), "--checkpoint", str(run), "--top", "3",
                                 "--json", str(out), "-q"])
    assert result.exit_code == 0, result.output
    top = json.loads(out.read_text())["top"]
    assert len(top) == 3 and sum(p["probability"] for p in top) <= 1.0 + 1e-6
    assert [p["probability"] for p in top] == sorted((p["probability"] for p in top), reverse=True)
    # A second finetune into the same folder must not silently overwrite it.
    result = runner.invoke(app, ["finetune", RECIPE, *tiny(tmp_path), "--quiet"])
    assert result.exit_code == 2 and "--resume" in result.output
    _eval_refusals(runner, run)


def _eval_refusals(runner: CliRunner, run: Path) -> None:
    """Mistakes `s5 eval` refuses up front, each as one line, with the run left as it was."""
    weights = run / "best" / "model.safetensors"
    before = weights.read_bytes()
    result = runner.invoke(app, ["eval", "-c", str(run), "-q", "--json", str(weights)])
    assert result.exit_code == 2 and "refusing to replace it" in result.output, result.output
    assert weights.read_bytes() == before
    result = runner.invoke(app, ["eval", "-c", str(run), "-q", "--json", str(run)])
    assert result.exit_code == 2 and "is a folder" in result.output, result.output
    result = runner.invoke(app, ["eval", "-c", str(run), "-q", "model.d_model=64"])
    assert result.exit_code == 2 and "was trained with model.d_model=32, and eval cannot change" in result.output
    result = runner.invoke(app, ["eval", "-c", str(run), "-q", "keep_ratio=0.25"])  # the short form too
    assert result.exit_code == 2 and "was trained with model.keep_ratio=0.5, and eval cannot" in result.output, \
        result.output
    # Tokens of another backbone once reached the model and failed there with a bare shape error.
    import yaml

    other = yaml.safe_load((run / "recipe.yaml").read_text())
    other["data"]["backbone"], other["model"]["d_input"] = "vit_tiny_test", 32  # a consistent recipe of its own
    (run.parent / "other.yaml").write_text(yaml.safe_dump(other))
    result = runner.invoke(app, ["eval", str(run.parent / "other.yaml"), "-c", str(run), "-q"])
    assert result.exit_code == 2, result.output
    assert "was trained on tokens of data.backbone=patch_pool" in " ".join(result.output.split()), result.output
    result = runner.invoke(app, ["eval", "-c", str(run), "-q", "eval.batch_size=0"])
    assert result.exit_code == 2 and f"{run}'s recipe (command-line override)" in result.output, result.output
    (run / "latest").write_text("")  # emptied by hand: it named the run itself, an endless lookup
    from s5cli.errors import UserError
    from s5cli.train.checkpoint_paths import checkpoint_dir

    with pytest.raises(UserError, match="does not name a checkpoint of this run"):
        checkpoint_dir(run)


def test_eval_of_a_split_without_videos_is_a_user_error(monkeypatch) -> None:
    import s5cli.train.data
    from s5cli.cli.evaluate import _evaluate_split
    from s5cli.errors import UserError
    from s5cli.recipe import load_recipe

    monkeypatch.setattr(s5cli.train.data, "prepare_splits", lambda data, splits, ctx, show_progress: {"test": []})
    with pytest.raises(UserError, match="the test split of synthetic has no videos"):
        _evaluate_split(None, load_recipe(RECIPE), None, "test", None, quiet=True)


S5_WITH_DROPOUT = {"train.epochs": 6, "model.dropout": 0.1}


@pytest.fixture(scope="module")
def uninterrupted_dropout_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[float], dict]:
    """(its data folder, its losses, its best checkpoint's metrics): S5 with dropout, no loader processes,
    never stopped. Shared by the interrupted runs below, which train on the same data folder (its videos
    and tokens are reused) and must end where it ended."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    shared = tmp / "shared"
    full = subprocess.run([sys.executable, "-m", "s5cli", "finetune", RECIPE, "--quiet",
                           *tiny(shared, **S5_WITH_DROPOUT, **{"train.out_dir": tmp / "full"})],
                          env=_env(), capture_output=True, text=True, timeout=600, cwd=tmp)
    assert full.returncode == 0, full.stderr
    losses = _losses(tmp / "full")
    assert len(losses) == 6 * 3
    return shared, losses, json.loads((tmp / "full" / "best" / "metrics.json").read_text())


def test_kill9_then_resume_matches_an_uninterrupted_run(
    tmp_path: Path, uninterrupted_dropout_run: tuple[Path, list[float], dict]
) -> None:
    """Killed with no chance to save (after its first checkpoint) and resumed: the losses and the best
    checkpoint's metrics of the run that was never stopped (S5 with dropout: the model's RNG is in play)."""
    shared, full_losses, full_metrics = uninterrupted_dropout_run
    args = [sys.executable, "-m", "s5cli", "finetune", RECIPE, "--quiet",
            *tiny(shared, **S5_WITH_DROPOUT, **{"train.out_dir": tmp_path / "killed"})]
    proc = subprocess.Popen(args, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = tmp_path / "killed" / "latest"
    deadline = time.time() + 300
    while not latest.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = subprocess.run([*args, "--resume"], env=_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((tmp_path / "killed" / "best" / "metrics.json").read_text()) == full_metrics
    assert _losses(tmp_path / "killed") == full_losses


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_a_batch_the_processes_cannot_split_is_refused_before_any_data_work(tmp_path: Path) -> None:
    """train.batch_size=7 on 2 processes was refused only inside the trainer: after the whole extraction (on
    LVU a ViT-L pass), with the run folder and .s5/last_run already written."""
    result = finetune_in_processes(tiny(tmp_path, **{"train.batch_size": 7}), processes=2)
    assert result.returncode != 0
    assert "train.batch_size=7 (the global batch) does not split evenly over 2 processes" in result.stderr
    assert not (tmp_path / "cache").exists() and not (tmp_path / "videos").exists()  # no video made or read
    assert not (tmp_path / "run").exists() and not (tmp_path / ".s5").exists()


def test_two_process_torchrun_matches_one_process(tmp_path: Path) -> None:
    # ViS4mer without dropout: no sampling noise, so one process with global batch 8 and two with 4 each
    # must follow the same trajectory up to float reduction order.
    shared = tmp_path / "shared"
    extra = {"model.selector": "none", "train.epochs": 1}
    one_args = tiny(shared, **extra, **{"train.out_dir": tmp_path / "one"})
    two_args = tiny(shared, **extra, **{"train.out_dir": tmp_path / "two"})
    run_here(one_args)
    two = finetune_in_processes(two_args, processes=2)
    assert two.returncode == 0, two.stderr[-3000:]
    losses_one, losses_two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(losses_one) == len(losses_two) == 3
    # Tolerance: gradients are averaged over ranks instead of summed in one batch -> 1e-4 relative.
    assert losses_two == pytest.approx(losses_one, rel=1e-4)


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_torchrun_ranks_draw_their_own_noise_and_resume_it(tmp_path: Path) -> None:
    """S5 with dropout under two processes: each rank has its own generator state in the checkpoint, and a
    run stopped after epoch 1 (validation included) and resumed takes the uninterrupted run's steps.

    Both halves failed before: every rank restored rank 0's state, and rank 0's validation drew one
    number from the global generator (its loader's worker seed) that the other rank did not."""
    from safetensors.torch import load_file

    shared = tmp_path / "shared"
    extra = {"model.dropout": 0.2, "model.explore_temperature": 1.0, "optim.schedule": "constant"}
    full = finetune_in_processes(tiny(shared, **extra, **{"train.out_dir": tmp_path / "full"}), processes=2)
    assert full.returncode == 0, full.stderr[-3000:]
    cut_args = tiny(shared, **extra, **{"train.out_dir": tmp_path / "cut", "train.epochs": 1})
    cut = finetune_in_processes(cut_args, processes=2)
    assert cut.returncode == 0, cut.stderr[-3000:]
    latest = tmp_path / "cut" / (tmp_path / "cut" / "latest").read_text().strip()  # `latest` names the folder
    saved = load_file(latest / "trainer_state.safetensors")
    assert not torch.equal(saved["rng.torch"], saved["rng.rank1.torch"])  # the ranks' generators differ
    resumed = finetune_in_processes([*tiny(shared, **extra, **{"train.out_dir": tmp_path / "cut"}), "--resume"],
                                    processes=2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert len(_losses(tmp_path / "full")) == 6
    assert _losses(tmp_path / "cut") == _losses(tmp_path / "full")
    assert "was written by" not in resumed.stderr  # the same process count: nothing to say
    # One process going on with the two-process run: allowed, and said (its draws are not the run's).
    more = CliRunner().invoke(app, ["finetune", RECIPE, *tiny(shared, **extra, **{"train.out_dir": tmp_path / "cut",
                                                                                   "train.epochs": 3}), "--resume", "-q"])
    assert more.exit_code == 0, more.output
    assert "was written by 2 process(es), this run has 1: training goes on with the same global batch" in (
        " ".join(more.output.split()))


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_lsmcl_under_torchrun_contrasts_against_every_process_videos(tmp_path: Path) -> None:
    """Two processes with 4 videos each must solve the task of one process with 8: keys are gathered.

    Made deterministic so the two runs can be compared: ViS4mer without dropout, no masking, and a short
    clip as long as the long one (no random crop), no queue, no BatchNorm projector.
    """
    shared = tmp_path / "shared"
    extra = {"model.selector": "none", "train.epochs": 1, "train.lsmcl.short_frames": 8,
             "train.lsmcl.long_frames": 8, "train.lsmcl.mask_ratio": 0.0, "train.lsmcl.proj_dim": 16,
             "train.lsmcl.queue_size": 0, "train.lsmcl.projector_norm": "none"}
    run_here(tiny(shared, **extra, **{"train.out_dir": tmp_path / "one"}), command="pretrain")
    two = finetune_in_processes(tiny(shared, **extra, **{"train.out_dir": tmp_path / "two"}), processes=2,
                                command="pretrain")
    assert two.returncode == 0, two.stderr[-3000:]
    losses_one, losses_two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(losses_one) == len(losses_two) == 3
    # Per-process negatives would give a loss near log(4) instead of log(8) from the first step on.
    assert losses_two == pytest.approx(losses_one, rel=1e-4)
    # The contrastive top-1 is averaged over the processes' queries: one process's 8 in the same step.
    top1_one, top1_two = _losses(tmp_path / "one", "contrastive_top1"), _losses(tmp_path / "two", "contrastive_top1")
    assert len(top1_one) == 3 and top1_two == pytest.approx(top1_one, abs=1e-6)


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_a_check_only_rank_0_fails_stops_every_rank_with_its_reason(tmp_path: Path) -> None:
    """Rank 0 alone takes the run folder's lock. Finding it taken used to stop rank 0 before the process
    group met, leaving rank 1 waiting in it until torchrun killed it, silently, half a minute later."""
    import fcntl

    from s5cli.train.run_lock import LOCK_NAME

    run = tmp_path / "run"
    run.mkdir()
    with open(run / LOCK_NAME, "w") as holder:  # another training holds the folder
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        holder.write("4242")
        holder.flush()
        result = finetune_in_processes(tiny(tmp_path, **{"train.out_dir": run}), processes=2)
    assert result.returncode != 0
    said = " ".join(result.stderr.split())
    assert "is in use by another training (pid 4242)" in said
    assert "rank 0 stopped: run folder" in said  # rank 1's own line, not torchrun's kill


def test_pretrain_then_finetune_from_it(tmp_path: Path) -> None:
    runner = CliRunner()
    pre = tiny(tmp_path, **{"train.out_dir": tmp_path / "pre", "train.epochs": 1, "train.lsmcl.short_frames": 4,
                            "train.lsmcl.long_frames": 8, "train.lsmcl.proj_dim": 16, "train.log_every": 100,
                            "train.lsmcl.queue_size": 8})
    result = runner.invoke(app, ["pretrain", RECIPE, *pre, "--quiet"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "videos" / "val").exists()  # pretraining reads no val split: none made or extracted
    # The queued keys carry their videos (so no video meets its own keys as negatives): 4 videos, 2 keys each.
    latest = tmp_path / "pre" / (tmp_path / "pre" / "latest").read_text().strip()
    queue_ids = load_file(latest / "model.safetensors")["queue_ids"].tolist()
    assert min(queue_ids) >= 0 and len(set(queue_ids)) == 4 and queue_ids[0] == queue_ids[1]
    # Shorter than log_every (3 steps): the last step is logged, so the summary has a loss to show.
    assert len(_losses(tmp_path / "pre")) == 1 and "loss" in result.output
    (top1,) = _losses(tmp_path / "pre", "contrastive_top1")  # MoCo's acc@1 beside the loss
    assert 0.0 <= top1 <= 1.0 and "contrastive top-1 (last logged)" in result.output
    # Its head was never trained: eval refuses it (explicitly, and as "the last run", which is not it).
    result = runner.invoke(app, ["eval", "--checkpoint", str(tmp_path / "pre"), "-q"])
    assert result.exit_code == 2 and "LSMCL pretraining checkpoint" in result.output
    result = runner.invoke(app, ["eval", "-q"])
    assert result.exit_code == 2 and "no finetune run in this folder" in result.output
    # A mistyped init fails before any data work, naming the key.
    typo = tiny(tmp_path, **{"train.out_dir": tmp_path / "typo", "train.init": "runs/pre/best"})
    result = runner.invoke(app, ["finetune", RECIPE, *typo, "--quiet"])
    assert result.exit_code == 2 and "train.init=runs/pre/best" in result.output
    assert not (tmp_path / "typo").exists()  # a run that failed its checks leaves no empty run folder behind
    fine = tiny(tmp_path, **{"train.out_dir": tmp_path / "fine", "train.epochs": 1, "train.init": tmp_path / "pre"})
    # Checking train.init before extraction builds a model of its own: the run's random numbers stay as they were.
    from s5cli.train import init_weights, job

    rng = torch.get_rng_state()
    recipe = job.recipe_objects(RECIPE, fine, None)
    assert init_weights.check_init(recipe, init_weights.resolve_init(str(tmp_path / "pre")), "pre")
    assert torch.equal(rng, torch.get_rng_state())
    result = runner.invoke(app, ["finetune", RECIPE, *fine])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "fine" / "best" / "model.safetensors").exists()
    # Said once, so a user can see the weights came from there (and which stayed new).
    said = " ".join(result.output.split())
    assert f"weights from train.init={tmp_path / 'pre'} ({tmp_path / 'pre' / 'checkpoints'}/step-" in said
    assert "newly initialised (e.g. head." in said  # pretraining never trains the head: the run draws its own
    # A checkpoint that cannot start the run is refused before any video is extracted.
    other = tiny(tmp_path, **{"train.out_dir": tmp_path / "other", "train.init": tmp_path / "pre",
                              "model.n_blocks": 1, "data.cache_dir": tmp_path / "other-cache"})
    result = runner.invoke(app, ["finetune", RECIPE, *other, "--quiet"])
    assert result.exit_code == 2 and "model.n_blocks=2 (recipe: 1)" in " ".join(result.output.split())
    assert not list((tmp_path / "other-cache").rglob("*.safetensors"))
    # A preemptible job's first start (--resume, no checkpoint yet) starts from train.init too, not from scratch.
    first = tiny(tmp_path, **{"train.out_dir": tmp_path / "first", "train.epochs": 1, "train.init": tmp_path / "pre"})
    result = runner.invoke(app, ["finetune", RECIPE, *first, "--resume"])
    assert result.exit_code == 0, result.output
    assert f"no checkpoint in {tmp_path / 'first'} yet; starting a new run from train.init=" in " ".join(result.output.split())
    weights = [load_file(str(tmp_path / run / "best" / "model.safetensors")) for run in ("fine", "first")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    # An override alone is read as one (the checkpoint's recipe is used); another class count is refused.
    result = runner.invoke(app, ["eval", "eval.split=val", "-q", "--json", "-"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["split"] == "val"
    result = runner.invoke(app, ["eval", RECIPE, *tiny(tmp_path, **{"train.out_dir": tmp_path / "first"}),
                                 "data.synthetic.num_event_types=4", "-q"])
    assert result.exit_code == 2 and "outputs, but the recipe's synthetic task has" in result.output


def test_a_run_without_validation_clips_says_so_at_the_start(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["finetune", RECIPE, *tiny(tmp_path, **{"data.synthetic.num_val": 0,
                                                                           "train.epochs": 1}), "--quiet"])
    assert result.exit_code == 0, result.output
    assert ("warning: the val split has no clips: no best checkpoint is chosen, and no plateau or early stop acts"
            in " ".join(result.output.split()))
    assert not (tmp_path / "run" / "best").exists() and (tmp_path / "run" / "latest").is_file()


def test_nan_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path: Path, monkeypatch) -> None:
    import torch

    from s5cli.train import step as train_step

    real_loss, calls = train_step.batch_loss, {"n": 0}

    def loss_that_explodes(setup, module, batch):
        calls["n"] += 1
        loss = real_loss(setup, module, batch)
        return loss * float("nan") if calls["n"] == 5 else loss

    monkeypatch.setattr(train_step, "batch_loss", loss_that_explodes)
    result = CliRunner().invoke(app, ["finetune", RECIPE, *tiny(tmp_path), "--quiet"])
    assert result.exit_code == 1, result.output
    assert "loss became nan at step 5" in result.output and "Traceback" not in result.output
    run = tmp_path / "run"
    from s5cli.train.checkpoint_paths import checkpoint_dir
    from s5cli.train.checkpoint_weights import load_state

    good = checkpoint_dir(run)
    assert good.name == "step-0000003" and good.name in result.output

    assert all(torch.isfinite(t).all() for t in load_state(checkpoint_dir(run)).values() if t.is_floating_point())


@pytest.mark.parametrize(("stop_signal", "code", "word", "to_the_group"),
                         [(signal.SIGINT, 130, "interrupted", True), (signal.SIGTERM, 143, "terminated", False)])
def test_a_stop_signal_mid_epoch_saves_a_checkpoint_and_resume_changes_no_number(
    tmp_path: Path, stop_signal: int, code: int, word: str, to_the_group: bool,
    uninterrupted_dropout_run: tuple[Path, list[float], dict],
) -> None:
    """Ctrl-C (SIGINT to the whole process group, as a terminal and `timeout` send it) and SIGTERM to the
    trainer alone (as `kill` or a batch scheduler sends it) finish the step, save a checkpoint and say how
    to go on; resumed, the run takes the uninterrupted run's steps.

    With `data.num_workers=2` (one batch ready each): training clips come from per-video generators and
    the loader never draws from the model's RNG, so loader processes change no number. Workers that died
    of a group's signal once failed the trainer's next batch (a traceback, exit 1, no checkpoint)."""
    shared, full_losses, _ = uninterrupted_dropout_run
    base = [sys.executable, "-m", "s5cli", "finetune", RECIPE, "--quiet"]
    args = [*base, *tiny(shared, **S5_WITH_DROPOUT, **{"train.out_dir": tmp_path / "cut", "data.num_workers": 2,
                                                     "data.prefetch_batches": 1})]
    proc = subprocess.Popen(args, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    metrics = tmp_path / "cut" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and len(_losses_if_any(metrics)) < 4:
        time.sleep(0.02)
    assert proc.poll() is None, "run finished before it could be interrupted; make it longer"
    if to_the_group:
        os.killpg(proc.pid, stop_signal)
    else:
        proc.send_signal(stop_signal)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert f"{word} at step" in err and "checkpoint saved to" in err and "--resume" in err
    from s5cli.train.checkpoint_paths import checkpoint_dir

    step = json.loads((checkpoint_dir(tmp_path / "cut") / "trainer_state.json").read_text())["trainer"]["step"]
    # Written at the signal, after the 4th logged step (a signal landing just after a checkpoint stops on it).
    assert step >= 4 and f"step-{step:07d}" in err
    resumed = subprocess.run([*args, "--resume"], env=_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert _losses(tmp_path / "cut") == full_losses, f"interrupted at step {step}"


def _losses_if_any(metrics: Path) -> list[float]:
    try:
        return _losses(metrics.parent)
    except (OSError, ValueError):
        return []



def test_a_synthetic_recipe_without_training_videos_names_the_field(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["finetune", RECIPE, *tiny(tmp_path, **{"data.synthetic.num_train": 0}),
                                      "--quiet"])
    assert result.exit_code == 2
    assert "data.synthetic.num_train=0: there is nothing to train on (set it to at least 1)" in result.output
    # Refused before any work: no val videos made, no tokens extracted, no run folder.
    assert not (tmp_path / "videos").exists() and not (tmp_path / "cache").exists()
    assert not (tmp_path / "run").exists()
