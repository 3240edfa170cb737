"""The settings note of a token folder: `s5 extract` rewrites exactly the notes `s5 cache ls` calls unknown for
what they hold, never reads one that is not a regular file (a pipe hung it), and leaves every s5cli note alone."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from s5cli.data.cache import FeatureCache
from s5cli.data.cache_inventory import MAX_MARKER_BYTES, scan
from s5cli.data.encode import settings_from_data
from s5cli.data.extract import extract_records
from tests.data.test_extract import data_section, make_records

SECONDS = 20  # far above what a note check takes; a read of a pipe never ends


@pytest.fixture
def extracted(tmp_path):
    """(settings, cache, records): one of two videos extracted, so a later run has one left to extract."""
    settings = settings_from_data(data_section(tmp_path))
    cache = FeatureCache(tmp_path / "cache", settings)
    records = make_records(tmp_path / "videos", 2)
    extract_records(records[:1], settings, cache, decode_threads=1, show_progress=False)
    return settings, cache, records


def statuses(cache: FeatureCache) -> list[tuple[str, str]]:
    return [(entry.status, entry.settings) for entry in scan(cache_dirs=[cache.root]).entries]


def finishes(call: Callable[[], Any], pipe: Path) -> None:
    """Run `call` in a thread; fail if it is still running after SECONDS (blocked opening `pipe` to read it).

    A blocked reader is let go by opening the pipe for writing, so a failing test does not leave it behind.
    """
    failure: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as error:  # re-raised in the test's own thread
            failure.append(error)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(SECONDS)
    if worker.is_alive():
        with contextlib.suppress(OSError):  # ENXIO: no reader blocked on it after all
            os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(SECONDS)
        pytest.fail(f"still running after {SECONDS} s: it read the pipe {pipe}")
    if failure:
        raise failure[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
@pytest.mark.parametrize("linked", [False, True], ids=["pipe", "link to a pipe"])
def test_a_pipe_for_a_settings_note_is_never_read_and_left_alone(tmp_path, extracted, linked):
    """`os.mkfifo(folder/"settings.json")` hung every `s5 extract` (and a link to /dev/zero would read until
    memory ran out). A pipe or link is not damage but something put there: it stays, and the folder stays
    unknown in `s5 cache ls`, which says why."""
    settings, cache, records = extracted
    note = cache.folder / "settings.json"
    note.unlink()
    if linked:
        os.mkfifo(tmp_path / "pipe")
        note.symlink_to(tmp_path / "pipe")
    else:
        os.mkfifo(note)
    pipe = tmp_path / "pipe" if linked else note
    finishes(lambda: extract_records(records, settings, cache, decode_threads=1, show_progress=False), pipe)
    assert cache.has(records[1].video_id)
    finishes(lambda: extract_records(records, settings, cache, decode_threads=1, show_progress=False), pipe)
    finishes(cache.repair_settings_file, pipe)  # directly too: it never meets the pipe's UserError
    finishes(lambda: statuses(cache), pipe)
    assert note.is_symlink() == linked and not note.resolve().is_file()
    reason = "settings.json is a symbolic link: not read" if linked else "settings.json is a pipe: not read"
    assert statuses(cache) == [("unknown", reason)]


def test_a_linked_note_is_left_alone_and_its_target_untouched(tmp_path, extracted):
    """Renaming over the link would be harmless to its target, but a link is something someone put there."""
    settings, cache, records = extracted
    note = cache.folder / "settings.json"
    target = tmp_path / "elsewhere.json"
    target.write_text("not json")
    note.unlink()
    note.symlink_to(target)
    extract_records(records, settings, cache, decode_threads=1, show_progress=False)
    cache.repair_settings_file()
    assert note.is_symlink() and target.read_text() == "not json"
    assert statuses(cache) == [("unknown", "settings.json is a symbolic link: not read")]


TOO_BIG = b'{"pad": "' + b"x" * MAX_MARKER_BYTES + b'"}'
# Notes that parse but that `s5 cache ls` calls unknown all the same: each is rewritten.
NOT_A_MARKER = {
    "empty object": b"{}",
    "number format": b'{"format": 5}',
    "list": b"[]",
    "another tool's format": b'{"format": "other-tool/2"}',
    "the other kind's format": b'{"format": "s5cli-synthetic/2"}',
    "too big to read": TOO_BIG,
}


@pytest.mark.parametrize("content", NOT_A_MARKER.values(), ids=list(NOT_A_MARKER))
@pytest.mark.parametrize("nothing_to_do", [False, True], ids=["extracting", "all cached"])
def test_a_note_the_listing_calls_unknown_is_rewritten(extracted, content, nothing_to_do):
    """Only notes that did not parse as a JSON object were rewritten: `{"format": 5}` or `{}` stayed, and
    `s5 cache ls` kept calling the folder unknown, which is what the repair was for."""
    settings, cache, records = extracted
    if nothing_to_do:
        extract_records(records, settings, cache, decode_threads=1, show_progress=False)
    note = cache.folder / "settings.json"
    note.write_bytes(content)
    assert statuses(cache)[0][0] == "unknown"
    extract_records(records, settings, cache, decode_threads=1, show_progress=False)
    assert json.loads(note.read_text()) == settings.metadata()
    assert [status for status, _ in statuses(cache)] == ["current"]


@pytest.mark.parametrize("note_format", ["s5cli-tokens/0", "s5cli-tokens/1"], ids=["stale", "current"])
def test_an_s5cli_note_is_never_rewritten(extracted, note_format):
    """A note of any s5cli-tokens format identifies the folder (a stale one lets `s5 cache clean` find it):
    it is left byte for byte, by a run that extracts and by one with nothing to do."""
    settings, cache, records = extracted
    note = cache.folder / "settings.json"
    text = json.dumps({"format": note_format, "backbone": "by hand"})
    note.write_text(text)
    extract_records(records, settings, cache, decode_threads=1, show_progress=False)
    cache.repair_settings_file()
    assert note.read_text() == text
    assert [status for status, _ in statuses(cache)] == ["stale" if note_format.endswith("/0") else "current"]


def test_a_note_that_cannot_be_read_is_left_alone(extracted, monkeypatch):
    """What it holds is unknown (maybe another user's note of this very folder): it is not replaced blindly.
    The tests run as root, for whom chmod 000 does not stop a read: the read itself is made to fail."""
    settings, cache, records = extracted
    note = cache.folder / "settings.json"
    note.write_text('{"format": "s5cli-tokens/1", "mine": "yes"}')
    read_text = Path.read_text

    def denied(self: Path, *args, **kwargs) -> str:
        if self == note:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", denied)
    extract_records(records, settings, cache, decode_threads=1, show_progress=False)
    cache.repair_settings_file()
    monkeypatch.undo()
    assert json.loads(note.read_text())["mine"] == "yes"
