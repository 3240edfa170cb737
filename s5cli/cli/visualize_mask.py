"""`s5 visualize-mask`: render which tokens S5 keeps on a video (GIF, MP4 or PNG grid)."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from s5cli.cli.help_text import flag
from s5cli.io import is_stdout

if TYPE_CHECKING:
    from s5cli.visualize.plan_warnings import TrainedClips

DEFAULT_FRAMES = 60
DEFAULT_SIZE = 224
# Smallest side a drawn frame gets by default (see --scale): the quick start's 64 px frames were a thumbnail
# whose captions covered a third of it.
MIN_DISPLAY_PX = 224
RANDOM_INIT_BACKBONE = "patch_pool"  # parameter-free: a smoke test needs no downloads
# Upper bounds of --frames and --size, so a mistyped value is refused by its flag instead of overflowing
# inside the frame plan or the image resize. Frames: sampling.MAX_FPS_PLAN_FRAMES (not imported here: start-up
# time); 8192 px is 262,144 patches a frame, far past any backbone's use.
MAX_FPS_PLAN_FRAMES = 1_000_000
MAX_IMAGE_SIZE = 8192


def visualize_mask(
    video: Path = typer.Argument(..., help="Video file to visualise (anything FFmpeg/decord reads)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output file: .gif (animation), .mp4 (video) or .png (contact sheet)."),
    checkpoint: str | None = typer.Option(
        None, "--checkpoint", "-c", help="S5 checkpoint folder, run folder or Hub id (default: last `s5 finetune` run here)."
    ),
    frames: int | None = typer.Option(
        None, "--frames", "-t", min=1, max=MAX_FPS_PLAN_FRAMES,
        help="Frames to sample: a clip of this many at --fps, or at the checkpoint's data.fps when it was trained at a fixed rate, else uniformly over the video, or, at a data.frame_pool checkpoint's own data.frames, the pool rows s5 eval reads (default: the checkpoint's clip; every frame at data.fps for a checkpoint trained on whole videos; else 60 uniform). A shorter video is padded with its last frame up to the checkpoint's clip length, no further.",
    ),
    fps: float | None = typer.Option(
        None, "--fps", min=0.001,
        help="Sample at this rate (also the playback rate): every frame from --start on, or a clip of --frames (default: the checkpoint's data.fps; another rate is warned about).",
    ),
    start: float = typer.Option(0.0, "--start", min=0.0, help="Seconds into the video where sampling starts (at a rate: the same frames extraction samples, so the first may be shown up to one frame before it)."),
    keep_ratio: float | None = typer.Option(None, "--keep-ratio", "-k", help="Fraction of tokens kept, in (0, 1] (default: the checkpoint's)."),
    size: int | None = typer.Option(None, "--size", max=MAX_IMAGE_SIZE, help="Frame size in px, a multiple of 16 (default: the checkpoint's image size, else 224)."),
    scale: int | None = typer.Option(
        None, "--scale", min=1, max=32,
        help=f"Draw each frame N times larger, nearest neighbour (default: enough for {MIN_DISPLAY_PX} px; 1 from "
             f"{MIN_DISPLAY_PX} px on). The model still sees --size.",
    ),
    style: str = typer.Option("dim", "--style", help="dim: dropped patches darkened; heatmap: score colours; both."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write per-frame kept token indices and scores as JSON ('-' = stdout, the summary then goes to stderr)."),
    random_init: bool = flag(False, "--random-init", help="Smoke test: a small S5 with random weights (says so on every frame)."),
    backbone: str | None = typer.Option(None, "--backbone", help="Backbone name (default: the checkpoint's; patch_pool with --random-init)."),
    backbone_weights: str | None = typer.Option(None, "--backbone-weights", help="Backbone safetensors path or Hub id (default: the checkpoint's, when the backbone is the checkpoint's)."),
    playback_fps: float | None = typer.Option(None, "--playback-fps", min=0.1, help="Frames per second of the GIF/MP4 (default: real time, 1-30)."),
    revision: str | None = typer.Option(None, "--revision", help="Hub revision when --checkpoint is a Hub repo."),
    seed: int = typer.Option(0, "--seed", help="Random seed (random init; the random selector's draw, where 0 shows what s5 eval keeps)."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:N or auto (default: auto, cuda if available)."),
    quiet: bool = flag(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Render which tokens S5 keeps on a video (GIF, MP4 or PNG grid).

    Kept patches stay in full colour, dropped ones are dimmed; each frame shows its index, time and the kept
    fraction.

    Examples:

      s5 visualize-mask movie.mp4 --out mask.gif

      s5 visualize-mask movie.mp4 --out grid.png --checkpoint runs/synthetic

      s5 visualize-mask movie.mp4 --out both.gif --style both --json sel.json

      s5 visualize-mask movie.mp4 --out smoke.gif --random-init --frames 16

      s5 visualize-mask movie.mp4 --out 1h.gif --fps 1 --frames 60 --start 3600

    Without --frames/--fps it samples what the checkpoint was trained on: a clip of data.frames frames at
    data.fps from --start (LVU: 60 s at 1 fps), every frame at data.fps without a clip length, or the
    data.frames uniform frames evaluation reads (of its data.frame_pool, if set). A plan longer than the
    checkpoint's clip is selected a window at a time, as s5 eval does.
    """
    from s5cli.cli.console import print_warning, stdout
    from s5cli.errors import UserError
    from s5cli.io import atomic_write_json, check_output_file
    from s5cli.seeding import seed_everything
    from s5cli.visualize.render import STYLES
    from s5cli.visualize.writers import check_distinct_paths, check_output

    if style not in STYLES:
        raise UserError(f"--style {style!r} is unknown: use one of {', '.join(STYLES)}")
    if random_init and checkpoint is not None:
        raise UserError("--random-init and --checkpoint exclude each other: drop one of them")
    for option, value in (("--fps", fps), ("--playback-fps", playback_fps)):
        if value is not None and not math.isfinite(value):
            raise UserError(f"{option} {value:g} is not a finite rate: give frames per second, e.g. 1 or 25")
    if keep_ratio is not None and not 0.0 < keep_ratio <= 1.0:
        raise UserError(f"--keep-ratio {keep_ratio} is out of range: use a value in (0, 1]")
    if size is not None and (size < 16 or size % 16):
        raise UserError(f"--size {size} must be a positive multiple of the 16 px patch (e.g. 96, 224)")
    # Cheap checks first: a bad suffix or folder must fail before any decoding or model loading.
    check_output(out)
    if not video.is_file():
        raise UserError(f"{video}: video file not found" if not video.exists() else f"{video}: not a video file")
    to_stdout = is_stdout(json_out)  # as `s5 eval --json -`
    check_distinct_paths(video, out, None if to_stdout else json_out)
    if json_out is not None and not to_stdout:
        check_output_file(json_out, "--json", "selection.json")
    seed_everything(seed)

    model, data, window_stride, model_name = _load_model(checkpoint, random_init, revision)
    name, weights = _backbone_and_weights(backbone, backbone_weights, data)
    if backbone_weights is not None and name == "patch_pool":
        raise UserError(f"--backbone-weights {backbone_weights}: the backbone here is patch_pool, which has no "
                        "weights (name a ViT with --backbone, or drop --backbone-weights)")
    if not random_init:  # a smoke test is random throughout, and says so on every frame
        _warn_random_backbone(name, weights)
    image_size = int(size or data.get("image_size") or DEFAULT_SIZE)
    trained_size = data.get("image_size")
    if trained_size and image_size != int(trained_size):
        # Allowed (the patch grid just grows), but the model then judges patches at a scale it never saw.
        print_warning(f"--size {image_size} differs from the checkpoint's image size {trained_size}: selections may differ")
    trained = _trained_clips(data, window_stride)
    frames, fps, frame_pool = _sampled_as(frames, fps, data, trained)
    drawn_scale = scale if scale is not None else max(1, math.ceil(MIN_DISPLAY_PX / image_size))
    _run(
        video, out, json_out, model, model_name, random_init, name, weights, image_size, frames, fps, start,
        trained, keep_ratio, style, playback_fps, seed, device, quiet, data, stdout, atomic_write_json, drawn_scale,
        frame_pool,
    )


def _sampled_as(
    frames: int | None, fps: float | None, data: dict, trained: TrainedClips | None
) -> tuple[int | None, float | None, int | None]:
    """(frames, fps, frame pool) to sample from --frames and --fps (None: not given) and the checkpoint's data
    section, as the checkpoint's evaluation samples where a flag leaves it open.

    Why: the picture must show what `s5 eval` scores. Without flags: one clip at data.fps (the guide reads
    tokens at the spacing it learned), every frame at data.fps for a model trained on whole videos at a
    rate, the pool rows evaluation reads for data.frame_pool, else its (or 60) uniform frames. `--frames`
    alone on a rate-trained checkpoint is a clip at that rate (uniform frames were 0.64 s apart where
    training used 0.25 s); another `--fps` is allowed but warned about, as another --size is. `--frames`
    equal to data.frames on a data.frame_pool checkpoint is its default clip, the pool rows evaluation
    reads (other source frames than that many uniform ones: the picture showed another selection); another
    count is that many uniform frames, as --help says.
    """
    from s5cli.cli.console import print_warning

    trained_fps = float(data["fps"]) if data.get("fps") else None
    pool = int(data["frame_pool"]) if data.get("frame_pool") and trained_fps is None else None
    if frames is None and fps is None:
        if trained_fps is not None:
            return (trained.frames if trained else None), trained_fps, None
        if trained is not None:
            return trained.frames, None, pool
        return DEFAULT_FRAMES, None, None
    if fps is None:
        return frames, trained_fps, pool if trained is not None and frames == trained.frames else None
    if trained_fps is not None and not math.isclose(fps, trained_fps):
        print_warning(f"--fps {fps:g} differs from the checkpoint's data.fps {trained_fps:g}: selections may differ "
                      f"(drop --fps to sample at {trained_fps:g} fps)")
    return frames, fps, None


def _backbone_and_weights(backbone: str | None, backbone_weights: str | None, data: dict) -> tuple[str, str | None]:
    """(backbone name, weights or None) from --backbone and --backbone-weights over the checkpoint's.

    The checkpoint's weights go with its backbone: a --backbone naming that same backbone keeps them (they
    were dropped, and the model then judged a randomly initialised ViT's tokens). Another backbone gets
    only --backbone-weights (`_check_other_backbone` says what that means for the model).
    """
    trained = data.get("backbone")
    name = backbone or trained or RANDOM_INIT_BACKBONE
    if backbone_weights is not None:
        return name, backbone_weights
    return name, (data.get("backbone_weights") or None) if name == trained else None


def _check_other_backbone(name: str, trained: str | None, width: int, model) -> None:
    """For a --backbone other than the checkpoint's: UserError when its tokens are not the width the model
    reads, else a warning, as the model was trained on the checkpoint's backbone's tokens, not these."""
    from s5cli.cli.console import print_warning
    from s5cli.errors import UserError

    if not trained or name == trained:
        return
    expected = int(model.config.d_input)
    if width != expected:
        raise UserError(f"--backbone {name} gives {width}-dim tokens but the model reads {trained}'s {expected}-dim "
                        f"tokens: drop --backbone to use the checkpoint's {trained}")
    print_warning(f"--backbone {name} is not the checkpoint's backbone {trained}: the model was trained on "
                  f"{trained}'s tokens, so its selection may mean little (drop --backbone to use {trained})")


def _warn_random_backbone(name: str, weights: str | None) -> None:
    """Warn when a ViT preset gets no weights, as `s5 eval` and `s5 extract` do (`load_backbone`): its tokens
    are then a random network's, and the picture shows what the model keeps of noise. Not for the
    parameter-free patch_pool, nor the vit_tiny_test preset (tests build it without weights on purpose)."""
    from s5cli.cli.console import print_warning
    from s5cli.models.backbone import random_weights_unwarned

    if not random_weights_unwarned(name, weights):
        return
    print_warning(f"backbone {name} has no weights: using random weights (pass --backbone-weights, a "
                  "safetensors file or Hub id, e.g. timm/vit_large_patch16_224.augreg_in21k, for meaningful tokens)")


def _trained_clips(data: dict, window_stride: int | None = None) -> TrainedClips | None:
    """How a checkpoint's training clips were sampled, with evaluation's window stride; None without a clip
    length (random init, or whole videos at data.fps: evaluation then reads a video whole)."""
    from s5cli.recipe_schema import clip_frames
    from s5cli.visualize.plan_warnings import TrainedClips

    frames = clip_frames(data)
    if not frames:
        return None
    return TrainedClips(int(frames), float(data["fps"]) if data.get("fps") else None, window_stride)


def _load_model(checkpoint: str | None, random_init: bool, revision: str | None):
    """(model or None for random init, recipe data section, eval.window_stride or None, display name)."""
    from s5cli.errors import UserError
    from s5cli.visualize.selection import RANDOM_INIT

    if random_init:
        return None, {}, None, RANDOM_INIT
    if checkpoint is None:
        from s5cli.train.last_run import last_run, stale_last_run

        found = last_run()
        if found is None:
            raise UserError(
                stale_last_run() or "no --checkpoint given and no `s5 finetune` run in this folder: train one "
                "with `s5 finetune recipes/synthetic.yaml`, or pass --random-init for a smoke test"
            )
        checkpoint = str(found / "best") if (found / "best").exists() else str(found)
    from s5cli.train.loading import load_trained_model

    model, recipe, _ = load_trained_model(checkpoint, expect_model="s5", revision=revision)
    evaluation = recipe.get("eval") if isinstance(recipe.get("eval"), dict) else {}
    stride = evaluation.get("window_stride")
    return model, dict(recipe.get("data") or {}), int(stride) if stride else None, checkpoint


def _run(
    video, out, json_out, model, model_name, random_init, backbone_name, weights, image_size, frames, fps, start,
    trained, keep_ratio, style, playback_fps, seed, device, quiet, data, stdout, atomic_write_json, scale,
    frame_pool=None,
) -> None:
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from s5cli.cli.console import stderr
    from s5cli.models.backbone import build_backbone
    from s5cli.train.distributed import pick_device
    from s5cli.visualize.progress import StageLines
    from s5cli.visualize.render import render_selection
    from s5cli.visualize.selection import random_init_model, run_selection, set_keep_ratio
    from s5cli.visualize.video_encoding import VideoSampling
    from s5cli.visualize.writers import slow_gif_hint, write_frames

    dev = pick_device(device)
    extractor = build_backbone(backbone_name, weights, image_size).to(dev)
    if random_init:
        model = random_init_model(int(extractor.dim), keep_ratio if keep_ratio is not None else 0.5, seed)
    else:
        _check_other_backbone(backbone_name, data.get("backbone"), int(extractor.dim), model)
    set_keep_ratio(model, keep_ratio)
    model.to(dev)

    # Piped or logged: no live bars (their last frame, and a blank line before an error), one plain line
    # as each stage ends instead, as training and extraction print plain lines there.
    plain = not stderr.is_terminal
    progress = Progress(
        TextColumn("{task.description:<9}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=stderr, disable=quiet or plain,
    )
    tasks: dict[str, int] = {}
    lines = StageLines(stderr.print) if plain and not quiet else None

    def report(stage: str, done: int, total: int) -> None:
        if plain:
            if lines is not None:
                lines.report(stage, done, total)
            return
        if stage not in tasks:
            tasks[stage] = progress.add_task(stage, total=total)
        progress.update(tasks[stage], completed=done, total=total)

    with progress, _clear_on_error(progress):
        sampling = VideoSampling(frames, fps, image_size, start, threads=int(data.get("decode_threads") or 2),
                                 storage_dtype=data.get("cache_dtype") or "float16",
                                 resize=data.get("resize") or "crop", frame_pool=frame_pool)
        selection = run_selection(video, model, extractor, sampling, model_name=model_name, seed=seed, report=report,
                                  trained=trained, scale=scale)
        hint = slow_gif_hint(out, len(selection.kept))
        if hint:
            stderr.print(f"[dim]hint: {escape(hint)}[/]", soft_wrap=True)
        rendered = render_selection(selection, style, report, scale=scale)
        rate = playback_fps or fps or _real_time_rate(selection)
        count = len(rendered)
        report("write", 0, count)
        # Frame by frame (a long GIF takes a minute); the last step is shown once the files are on disk.
        write_frames(out, rendered, rate, lambda done, total: report("write", min(done, total - 1), total))
        if json_out is not None and not is_stdout(json_out):
            atomic_write_json(json_out, selection.to_json(), follow_symlinks=True)
        report("write", count, count)

    patches = selection.grid**2
    mean_kept = sum(len(selection.kept_patches(t)) for t in range(len(selection.kept))) / len(selection.kept)
    # The CLS token competes for the same per-frame budget: without its count a small grid read as
    # "kept 0.0/1 patches" although one token per frame was kept.
    cls_frames = sum(0 in kept for kept in selection.kept)
    to_stdout = is_stdout(json_out)
    if to_stdout:
        import json

        typer.echo(json.dumps(selection.to_json(), indent=2, sort_keys=True))
    summary = stderr if to_stdout else stdout  # stdout then carries only the JSON (pipe-able)
    summary.print(
        f"wrote {out}: {len(rendered)} frames {image_size * scale}x{image_size * scale}"
        + (f" (the model's {image_size} px drawn x{scale})" if scale > 1 else "")
        + f", kept {mean_kept:.1f}/{patches} patches "
        f"per frame ({100 * mean_kept / patches:.0f}%) and the CLS token in {cls_frames}/{len(selection.kept)} "
        f"frames, model {model_name}"
        + (f", selection JSON {json_out}" if json_out is not None and not to_stdout else ""),
        soft_wrap=True,  # one line, so scripts can grep it
    )


@contextlib.contextmanager
def _clear_on_error(progress):
    """On failure, erase the bars so the error stays the one line the user sees."""
    try:
        yield
    except BaseException:
        progress.live.transient = True
        raise


def _real_time_rate(selection) -> float:
    """Playback rate that spans the sampled part of the video in real time, kept within 1-30 fps."""
    times = selection.times
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    rate = (len(times) - 1) / span if span > 0 else 4.0
    return min(30.0, max(1.0, rate))
