"""`s5 extract`: decode videos and cache frozen-backbone tokens for a recipe's dataset."""

from __future__ import annotations

import errno
from datetime import timedelta
from typing import TYPE_CHECKING

import typer

from s5cli.cli.help_text import flag
from s5cli.torchrun_env import launched_by_torchrun

if TYPE_CHECKING:
    from s5cli.data.extract import ExtractReport

SPLIT_NAMES = ("train", "val", "test")
# A full disk or quota while extracting: nothing finished is lost (tokens are written atomically), so the
# way forward is space and the same command again, which `_system_error_line`'s generic line does not say.
FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'i/n' -> (i, n); None stays None (torchrun's RANK/WORLD_SIZE then decide)."""
    from s5cli.errors import UserError

    if text is None:
        return None
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text!r} is not of the form i/n (e.g. 0/4)") from None
    if count < 1 or not 0 <= index < count:
        raise UserError(f"--shard {text}: need 0 <= i < n")
    return index, count


def parse_splits(text: str) -> tuple[str, ...]:
    """'train,val' -> ('train', 'val'), rejecting unknown names."""
    from s5cli.errors import UserError

    splits = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [s for s in splits if s not in SPLIT_NAMES]
    if unknown or not splits:
        raise UserError(f"--split {text!r}: use a comma list of {', '.join(SPLIT_NAMES)}")
    return splits


def extract(
    recipe: str = typer.Argument(..., help="Recipe YAML (path, bundled name like 'synthetic', or hf://repo/file)."),
    overrides: list[str] | None = typer.Argument(
        None, help="key=value overrides, e.g. data.fps=1 data.cache_dtype=float32"
    ),
    split: str = typer.Option("train,val,test", "--split", help="Comma-separated splits to extract."),
    shard: str | None = typer.Option(
        None, "--shard", help="Take share i of n (e.g. 0/4); default: torchrun rank or all."
    ),
    seed: int | None = typer.Option(
        None, "--seed", help="Random seed (extraction draws none: tokens do not depend on it; kept for uniformity)."
    ),
    device: str | None = typer.Option(
        None, "--device", help="cpu, cuda, cuda:N or auto (default: auto, cuda if available)."
    ),
    quiet: bool = flag(False, "--quiet", "-q", help="No progress bar."),
    json_output: bool = flag(False, "--json", help="Print the summary as JSON."),
    strict: bool = flag(
        False, "--strict",
        help="Exit 1 if any video failed to decode or is not on disk (the others are still cached). "
             "Default: report them and exit 0, as training then uses the videos that work.",
    ),
) -> None:
    """Decode a dataset's videos and cache frozen-backbone tokens (resumable: finished videos are skipped).

    The bundled LVU recipes need only data.root: their split files are read from <data.root>/lvu_1.0 unless
    data.annotations names another folder.

    Examples:

      s5 extract recipes/lvu/relationship.yaml data.root=~/lvu --split train,val

      s5 extract recipe.yaml --shard 1/4     # one of four machines

      torchrun --nproc-per-node 2 -m s5cli extract recipe.yaml

      s5 extract recipe.yaml --strict        # in a pipeline: fail if a video is broken or missing
    """
    import json

    from s5cli.cli.console import stdout
    from s5cli.data.cache import FeatureCache
    from s5cli.data.encode import settings_from_data
    from s5cli.data.extract import ensure_cached, resolve_shard
    from s5cli.errors import RunFailure
    from s5cli.seeding import seed_everything
    from s5cli.train.distributed import pick_device
    from s5cli.train.job import recipe_objects

    splits = parse_splits(split)
    shard_pair = parse_shard(shard)
    resolve_shard(shard_pair)  # RANK/WORLD_SIZE checked now, not after the videos are listed
    dev = pick_device(device)
    loaded = recipe_objects(recipe, overrides, seed)
    seed_everything(loaded.train.seed)
    settings = settings_from_data(loaded.data)
    cache = FeatureCache(loaded.data.cache_dir, settings)
    folder = cache.folder
    try:
        report = ensure_cached(
            loaded.data, splits, shard=shard_pair, show_progress=not quiet, device=dev, fail_if_none=False,
            skip_empty_splits=True,
        )
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM: what is done stays done
        from s5cli.errors import Interrupted
        from s5cli.stop_signals import signal_of, stop_outcome

        word, code = stop_outcome(signal_of(stop))
        # Token files, not the folder: it is made (with the videos' claims) before the first video is done.
        kept = f"the videos finished so far stay in {folder}" if cache.cached_ids() else "nothing was extracted yet"
        raise Interrupted(f"{word}; {kept}: run the same command again to extract the rest",
                          exit_code=code) from None
    except OSError as error:
        if error.errno not in FULL_DISK or error.filename is None:
            raise  # the app's own line (`app._system_error_line`) names the file and the fix
        raise RunFailure(f"{error.filename}: {error.strerror or 'no space left'} (free space or choose another "
                         "data.cache_dir, then run the same command again: finished videos are kept)") from error
    prints = True
    if shares_with_other_ranks(shard_pair):
        report, prints = gathered_report(report)
    summary = {
        "cache": str(folder),
        "extracted": report.extracted,
        "reused": report.reused,
        "failed": len(report.failed),
        "missing": report.missing,
        "skipped_splits": report.skipped_splits,
        "failed_videos": [{"video_id": vid, "reason": reason} for vid, reason in report.failed],
        "missing_videos": report.missing_videos,  # what to download, for a script
        "padded_videos": report.padded,  # shorter than the sampling asked for: last frame repeated
        "frames_per_second": round(report.frames / report.seconds, 2) if report.frames else None,
    }
    if prints and json_output:
        stdout.print_json(json.dumps(summary))
    elif prints:
        _print_summary(stdout, summary)
    if report.failed and report.extracted + report.reused == 0:
        raise RunFailure(f"none of {len(report.failed)} videos could be decoded")
    if strict and (report.failed or report.missing):
        raise RunFailure(_strict_failure(len(report.failed), report.missing))


# How long a rank that finished its share waits for the others before its summary. Not the collective
# timeout (an hour): shares of a dataset of films, or of one resumed unevenly, can end hours apart, and a
# timeout here would abort the ranks still extracting. A rank that fails or is killed ends the job anyway
# (torchrun stops the others), so a long wait never outlives it.
SHARES_WAIT = timedelta(days=7)


def shares_with_other_ranks(shard: tuple[int, int] | None) -> bool:
    """Whether this process is one rank of a torchrun job whose ranks split the dataset (no --shard): then
    their reports are combined into one summary. torchrun sets MASTER_ADDR/PORT; WORLD_SIZE set by hand
    (one machine's share, run alone) has no group to join."""
    return shard is None and launched_by_torchrun()


def gathered_report(report: ExtractReport) -> tuple[ExtractReport, bool]:
    """(every rank's report merged, whether this process prints the summary: rank 0 alone).

    Why: each rank printed its own summary of its share, so `torchrun ... extract --json` wrote one JSON
    document per rank to stdout, which no JSON reader takes. A CPU (gloo) group is joined for this one
    gather, also when the ranks extracted on GPUs: it moves a few Python objects.
    """
    import torch.distributed as dist

    from s5cli.data.extract import merge_shard_reports
    from s5cli.train.distributed import collective_timeout

    joined = not dist.is_initialized()
    if joined:  # joined once the share is done: a rank waits here until the slowest share is done too
        dist.init_process_group("gloo", timeout=max(collective_timeout(), SHARES_WAIT))
    try:
        reports: list[ExtractReport | None] = [None] * dist.get_world_size()
        dist.all_gather_object(reports, report)
        rank = dist.get_rank()
    finally:
        if joined:
            dist.destroy_process_group()
    return merge_shard_reports([r for r in reports if r is not None]), rank == 0


def _strict_failure(failed: int, missing: int) -> str:
    """One line for --strict: what went wrong and what to do about it."""
    def videos(count: int) -> str:
        return f"{count} video" + ("s" if count != 1 else "")

    parts = [f"{videos(failed)} failed to decode (listed above)"] if failed else []
    parts += [f"{videos(missing)} of the split files not under data.root"] if missing else []
    return f"--strict: {' and '.join(parts)}; fix or remove them, or drop --strict"


def _print_summary(console, summary: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"token cache {escape(summary['cache'])}")
    table.add_column("extracted", justify="right", style="green")
    table.add_column("reused", justify="right")
    table.add_column("failed", justify="right", style="red" if summary["failed"] else None)
    table.add_column("not on disk", justify="right", style="yellow" if summary["missing"] else None)
    table.add_column("frames/s", justify="right")
    rate = summary["frames_per_second"]
    table.add_row(
        str(summary["extracted"]),
        str(summary["reused"]),
        str(summary["failed"]),
        str(summary["missing"]),
        "-" if rate is None else f"{rate}",
    )
    console.print(table)
    for item in summary["failed_videos"]:
        console.print(f"[red]failed[/] {escape(item['video_id'])}: {escape(item['reason'])}", soft_wrap=True)
