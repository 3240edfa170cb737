"""`s5 eval --video`: score raw videos end to end (decode, backbone, model), each as the dataset evaluation
scores a video: windows of the clip length, their outputs averaged.
"""

from __future__ import annotations

import os
from pathlib import Path


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
        _print_video(console, path, result)
        results.append(result)
    return results


def predict_video(model, rec, task, video: Path, dev, top: int, quiet: bool, backbone=None) -> dict:
    """One raw video scored like a dataset video: windows of the recipe's clip length every
    `eval.window_stride` frames, window outputs averaged (softmax first) as `s5 eval` does per video.

    The model was trained on clips of that length; one pass over a whole movie would show it a sequence
    many times longer than any it learned from (and hold all of its tokens at once).
    """
    import torch

    from s5cli.data.encode import load_video_tokens
    from s5cli.train.metrics import aggregate_by_video

    tokens = load_video_tokens(video, rec.data, device=str(dev), backbone=backbone, show_progress=not quiet)
    starts, frames = video_windows(tokens.shape[0], rec)
    outputs = _window_outputs(model, tokens, starts, frames, rec.eval.batch_size, dev, quiet, rec.train.amp)
    _, merged, _ = aggregate_by_video(["video"] * len(starts), outputs, torch.zeros(len(starts)), task.kind)
    result: dict = {"video": str(video), "frames": int(tokens.shape[0]), "window_frames": frames,
                    "windows": len(starts)}
    fps = rec.data.fps  # frames sampled at a fixed rate: a window's start is also a time in the video
    where = [{"start_frame": start, **({"start_seconds": round(start / fps, 3)} if fps else {})} for start in starts]
    if task.kind == "regression":  # on the target's own scale: the training targets were centred
        result["prediction"] = float(merged.reshape(-1)[0]) + task.target_offset
        result["window_predictions"] = [{**at, "prediction": float(value) + task.target_offset}
                                        for at, value in zip(where, outputs.reshape(-1), strict=True)]
        return result
    probs = merged[0]
    names = task.class_names or [str(i) for i in range(probs.numel())]
    values, idx = probs.topk(min(top, probs.numel()))
    result["top"] = [{"class": int(i), "name": names[int(i)], "probability": float(v)}
                     for v, i in zip(values, idx, strict=True)]
    window_probs = outputs.softmax(-1)
    best_prob, best = window_probs.max(-1)
    result["window_predictions"] = [
        {**at, "class": int(c), "name": names[int(c)], "probability": float(p)}
        for at, c, p in zip(where, best, best_prob, strict=True)
    ]
    return result


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


def _print_video(console, video: Path, result: dict) -> None:
    if "prediction" in result:
        console.print(f"{video}: predicted value {result['prediction']:.4f} (mean of {_windows_text(result)})")
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
    count = result["windows"]
    return f"{count} window{'s' if count != 1 else ''} of {result['window_frames']} frames ({result['frames']} sampled)"
