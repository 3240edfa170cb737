"""The repair hint of a damaged video: a command a user can paste as it is, whatever the video's name."""

from __future__ import annotations

import shlex
from pathlib import Path

from s5cli.data.probe import reencode_hint


def _command(hint: str) -> list[str]:
    return shlex.split(hint[hint.index("(") + 1 : hint.index(")")])


def test_a_name_starting_with_a_dash_is_not_read_as_an_ffmpeg_option():
    """161 LVU ids start with '-': `ffmpeg -i -5Rohhkg-7k.mp4 ... -5Rohhkg-7k-fixed.mp4` took the output
    for an option. The copy then replaces the original under the video's id, or the dataset misses it."""
    hint = reencode_hint(Path("/data/lvu/-5Rohhkg-7k.mkv"))
    assert _command(hint) == ["ffmpeg", "-i", "./-5Rohhkg-7k.mkv", "-c:v", "libx264", "./-5Rohhkg-7k-fixed.mp4"]
    assert hint.endswith("then replace the original with the copy, named -5Rohhkg-7k.mp4")


def test_a_name_with_spaces_or_quotes_is_one_shell_argument():
    hint = reencode_hint("/data/my film's cut.mp4")
    assert _command(hint) == ["ffmpeg", "-i", "my film's cut.mp4", "-c:v", "libx264", "my film's cut-fixed.mp4"]
