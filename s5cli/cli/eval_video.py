"""`s5 eval --video`: score raw videos end to end (decode, backbone, model), each as the dataset evaluation
scores a video: windows of the clip length, their outputs averaged.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from s5cli.data.datasets.lvu import TargetScale


def video_files(paths: list[Path]) -> list[Path]:
    """The --video arguments as files, each once: a folder stands for its video files (sorted, not
    recursive); its other files are named in a warning, not skipped silently."""
    from s5cli.cli.console import print_warning
    from s5cli.data.datasets.base import VIDEO_SUFFIXES
    from s5cli.errors import UserError

    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            entries = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            found = [p for p in entries if p.suffix.lower() in VIDEO_SUFFIXES]
            if not found:
                raise UserError(f"--video {path}: no {'/'.join(VIDEO_SUFFIXES)} files in this folder")
            others = [p.name for p in entries if p not in found]
            if others:
                print_warning(f"--video {path}: skipped {len(others)} file(s) without a video suffix "
                              f"({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}); name one with "
                              "--video to score it anyway")
            files += found
        elif not path.exists():
            raise UserError(f"--video {path}: no such file or folder")
        else:
            files.append(path)
    unique: dict[Path, Path] = {}
    # A file named and also in a named folder is scored once. Keyed by the path as named, not the file it
    # resolves to: two names linked to one file (a folder of symlinks) are two videos to the user, and
    # keying by target dropped the second without a word.
    for file in files:  # normalised by name only (other/../a.mp4 is a.mp4; links stay links)
        unique.setdefault(Path(os.path.normpath(file.absolute())), file)
    return list(unique.values())


def predict_videos(model, rec, task, files: list[Path], dev, top: int, quiet: bool, console) -> list[dict]:
    """`predict_video` for each file with one backbone, printing each result as it comes. With several
    files an unreadable one is reported and skipped (its entry holds the error); one file raises it."""
    from s5cli.cli.console import print_warning
    from s5cli.data.decode import VideoDecodeError
    from s5cli.data.encode import load_backbone, settings_from_data

    backbone = load_backbone(settings_from_data(rec.data), str(dev))
    scale = target_scale(rec.data) if task.kind == "regression" else None
    results = []
    for path in files:
        try:
            result = predict_video(model, rec, task, path, dev, top, quiet, backbone)
        except VideoDecodeError as error:
            if len(files) == 1:
                raise
            print_warning(f"{error}; skipped")  # the message names the file already
            results.append({"video": str(path), "error": str(error)})
            continue
        _print_video(console, path, result, scale)
        results.append(result)
    return results


def predict_video(model, rec, task, video: Path, dev, top: int, quiet: bool, backbone=None) -> dict:
    """One raw video scored like a dataset video: windows of the recipe's clip length every
    `eval.window_stride` frames, window outputs averaged (softmax first) as `s5 eval` does per video.

    The model was trained on clips of that length; one pass over a whole movie would show it a sequence
    many times longer than any it learned from (and hold all of its tokens at once).
    """
    import torch

    from s5cli.data.encode import load_video_tokens_with_plan
    from s5cli.train.metrics import aggregate_by_video, nonfinite_rows

    tokens, plan = load_video_tokens_with_plan(video, rec.data, device=str(dev), backbone=backbone,
                                               show_progress=not quiet)
    starts, frames = video_windows(tokens.shape[0], rec)
    outputs = _window_outputs(model, tokens, starts, frames, rec.eval.batch_size, dev, quiet, rec.train.amp)
    _, merged, _ = aggregate_by_video(["video"] * len(starts), outputs, torch.zeros(len(starts)), task.kind)
    # The video's own frames: a short one is padded while sampled (uniform frames, pool rows), and a short
    # window after (frames at data.fps); "frames" said 16 sampled of a 1-frame video.
    real = plan.real_frames
    result: dict = {"video": str(video), "frames": real, "padded_frames": max(0, frames - real),
                    "window_frames": frames, "windows": len(starts)}
    fps = rec.data.fps  # frames sampled at a fixed rate: a window's start is also a time in the video
    where = [{"start_frame": start, **({"start_seconds": round(start / fps, 3)} if fps else {})} for start in starts]
    nonfinite = int(nonfinite_rows(outputs).sum())
    if nonfinite:  # as `s5 eval`'s metrics count them: outputs that predict nothing
        result["nonfinite"] = nonfinite
    if task.kind == "regression":  # on the target's own scale: the training targets were centred
        scale = target_scale(rec.data)
        if scale is not None:  # what the value is ("ln(view count)"), for a script as for a reader
            result["target"] = scale.name
        result["prediction"] = _finite_or_none(float(merged.reshape(-1)[0]) + task.target_offset)
        result["window_predictions"] = [{**at, "prediction": _finite_or_none(float(value) + task.target_offset)}
                                        for at, value in zip(where, outputs.reshape(-1), strict=True)]
        return result
    names = task.class_names or [str(i) for i in range(merged.shape[-1])]
    ranked = ranked_classes(merged[0]) if bool(merged[0].isfinite().all()) else []  # NaN: no prediction
    result["top"] = [{"class": c, "name": names[c], "probability": p} for c, p in ranked[:top]]
    window_probs = outputs.softmax(-1)
    result["window_predictions"] = [{**at, **_window_class(row, names)}
                                    for at, row in zip(where, window_probs, strict=True)]
    return result


def target_scale(data: Any) -> TargetScale | None:
    """What the dataset's regression target is on its own scale (a `TargetScale`: LVU's like ratio x10 and
    ln(view count)), or None where the adapter does not say (the value is then printed bare)."""
    from s5cli.data.datasets import adapter

    describe = getattr(adapter(data.dataset), "target_scale", None)
    return describe(data) if describe is not None else None


def ranked_classes(probs) -> list[tuple[int, float]]:
    """(class, probability) of a (C,) row, highest first; tied classes lower index first.

    Why not `topk`: its order among equal values is arbitrary (a collapsed head's 9 equal probabilities
    listed class 7 first while the window prediction and `s5 eval`'s confusion matrix said class 0). The
    stable descending sort `topk_accuracy` ranks with gives `argmax`'s first maximum."""
    ranked = probs.sort(descending=True, stable=True)
    return [(int(c), float(p)) for p, c in zip(ranked.values, ranked.indices, strict=True)]


def _window_class(probs, names: list[str]) -> dict:
    """One window's prediction from its (C,) probabilities: the first of `ranked_classes`, or None for
    each field when they are not finite (NaN/inf outputs predict nothing, and JSON has no NaN)."""
    if not bool(probs.isfinite().all()):
        return {"class": None, "name": None, "probability": None}
    best, probability = ranked_classes(probs)[0]
    return {"class": best, "name": names[best], "probability": probability}


def _finite_or_none(value: float) -> float | None:
    """`value`, or None when it is NaN or infinite: `json.dumps` wrote NaN, which strict readers refuse."""
    return value if math.isfinite(value) else None


def video_windows(total_frames: int, rec) -> tuple[list[int], int]:
    """(first frame of each window, window length) for a video of `total_frames` sampled frames, exactly the
    windows the dataset evaluation cuts (TokenDataset): a shorter video is one window, padded."""
    from s5cli.data.datasets.token_dataset import num_windows, window_start
    from s5cli.recipe_schema import clip_frames

    frames = clip_frames(rec.data) or total_frames
    stride = rec.eval.window_stride
    return [window_start(total_frames, frames, w, stride) for w in range(num_windows(total_frames, frames, stride))], frames


def _window_outputs(model, tokens, starts: list[int], frames: int, batch_size: int, dev, quiet: bool,
                    amp: bool = True):
    """Model outputs (W, C) of the windows, `batch_size` windows per forward pass.

    Not `predict` over a TokenDataset: the video's tokens already sit on the model's device, and windows
    are cut and stacked there; through a DataLoader every overlapping window (60 per frame with LVU's
    stride 1) would be stacked on the CPU and copied to the device again.
    """
    import torch

    from s5cli.cli.console import SimpleProgress
    from s5cli.data.datasets.token_dataset import fit_length
    from s5cli.train.evaluation import as_model_input, autocast

    batches = [starts[i : i + batch_size] for i in range(0, len(starts), batch_size)]
    progress = SimpleProgress("windows", total=len(batches), enabled=not quiet and len(batches) > 1)
    outputs = []
    try:
        with torch.inference_mode():
            for batch in batches:
                clips = torch.stack([fit_length(tokens[start : start + frames], frames) for start in batch])
                with autocast(dev, amp):
                    outputs.append(model(as_model_input(clips, dev)).float().cpu())
                progress.advance()
    finally:
        progress.close()
    return torch.cat(outputs)


def _print_video(console, video: Path, result: dict, scale: TargetScale | None = None) -> None:
    """One video's result as a line (regression: the value, described by `scale` when the dataset's target
    has one) or a table of its top classes."""
    if result.get("nonfinite"):
        count = result["nonfinite"]
        console.print(f"{video}: {count} of {_windows_text(result)} gave non-finite outputs (NaN/inf): no "
                      "prediction", soft_wrap=True)
        return
    if "prediction" in result:
        value = result["prediction"]
        shown = scale.describe(value) if scale is not None else f"value {value:.4f}"
        console.print(f"{video}: predicted {shown}; mean of {_windows_text(result)}", soft_wrap=True)
        return
    from rich.table import Table

    # The path on its own line: as a table title a long path wraps inside the table's narrow width.
    console.print(f"{video}: mean of {_windows_text(result)}", soft_wrap=True)
    table = Table()
    table.add_column("rank")
    table.add_column("class")
    table.add_column("probability", justify="right")
    for rank, row in enumerate(result["top"], 1):
        table.add_row(str(rank), f"{row['class']} {row['name']}", f"{row['probability']:.3f}")
    console.print(table)


def _windows_text(result: dict) -> str:
    """"3 windows of 8 frames (20 sampled)", and for a video shorter than a window how many frames were
    copies of its last one: a 1-frame video read "1 window of 16 frames (16 sampled)"."""
    count, padded = result["windows"], result.get("padded_frames", 0)
    sampled = f"{result['frames']} sampled" + (f", padded with {padded} copies of the last" if padded else "")
    return f"{count} window{'s' if count != 1 else ''} of {result['window_frames']} frames ({sampled})"
