"""Recipe files that are no regular file (pipes, devices), not UTF-8, or far too large: one-line errors.

Why: `s5 recipes show <(cat r.yaml)` said the pipe "is a folder"; a Latin-1 recipe gave Python's codec
message with a byte offset and no fix; a 200 MB recipe of comments was parsed for minutes.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from s5cli.errors import UserError
from s5cli.recipe import bundled_recipes, load_recipe, load_recipe_text
from s5cli.recipe_yaml import MAX_RECIPE_BYTES

SYNTHETIC = Path(__file__).resolve().parents[1] / "recipes" / "synthetic.yaml"


def error_of(path: str | Path) -> str:
    with pytest.raises(UserError) as info:
        load_recipe(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def _feed(write_end: int, data: bytes) -> threading.Thread:
    """Write `data` into a pipe from a thread (as a shell's `<(cat ...)` does), ignoring a reader that stops."""
    def run() -> None:
        try:
            with open(write_end, "wb") as pipe:
                pipe.write(data)
        except BrokenPipeError:
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_process_substitution_is_read_as_the_recipe_it_holds() -> None:
    read_end, write_end = os.pipe()
    feeder = _feed(write_end, SYNTHETIC.read_bytes())
    try:
        recipe = load_recipe(f"/dev/fd/{read_end}")  # what bash passes for <(cat recipes/synthetic.yaml)
    finally:
        os.close(read_end)
        feeder.join(5)
    assert recipe.data.dataset == "synthetic" and recipe.source == f"/dev/fd/{read_end}"


def test_a_named_pipe_is_read_as_the_recipe_it_holds(tmp_path: Path) -> None:
    fifo = tmp_path / "recipe.fifo"
    os.mkfifo(fifo)
    data = SYNTHETIC.read_bytes()

    def write() -> None:
        # Opened for writing in the thread, which waits for the reader: an O_RDWR end written and closed
        # before `load_recipe` opened the pipe lost its bytes, and the reader then waited forever.
        _feed(os.open(fifo, os.O_WRONLY), data).join(5)

    feeder = threading.Thread(target=write, daemon=True)
    feeder.start()
    assert load_recipe(fifo).data.dataset == "synthetic"
    feeder.join(5)


def test_a_character_device_is_no_folder() -> None:
    message = error_of("/dev/null")
    assert "folder" not in message and message.startswith("/dev/null is empty")


def test_a_folder_is_still_called_one(tmp_path: Path) -> None:
    assert error_of(tmp_path) == (f"recipe {tmp_path} is a folder: name a recipe .yaml file in it "
                                  "(`s5 recipes ls` lists the bundled ones)")


def test_a_latin1_recipe_names_the_line_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("# notes\ndata:\n  root: /data/caf\u00e9\n".encode("latin-1"))
    assert error_of(path) == (f"recipe {path} is not UTF-8 text: line 3 holds byte 0xe9 (Latin-1 or another "
                              "legacy encoding?): save it as UTF-8")


def test_bundled_recipes_are_far_below_the_size_cap() -> None:
    for name, path in bundled_recipes().items():
        assert path.stat().st_size < MAX_RECIPE_BYTES // 100, name


def test_a_huge_recipe_file_is_refused_by_its_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "huge.yaml"
    path.write_bytes(SYNTHETIC.read_bytes() + b"# padding\n" * (MAX_RECIPE_BYTES // 10 + 1))
    parsed: list[str] = []
    monkeypatch.setattr("s5cli.recipe.parse_recipe_yaml", lambda text, source: parsed.append(source))
    message = error_of(path)
    assert message.startswith(f"recipe {path} is 1.0 MiB, more than the 1 MiB a recipe may be")
    assert not parsed  # refused before any parsing


def test_a_huge_recipe_in_a_pipe_is_refused_after_the_cap() -> None:
    read_end, write_end = os.pipe()
    feeder = _feed(write_end, b"# padding\n" * (MAX_RECIPE_BYTES // 5))  # 2 MiB: the reader stops at 1
    try:
        message = error_of(f"/dev/fd/{read_end}")
    finally:
        os.close(read_end)
        feeder.join(5)
    assert message.startswith(f"recipe /dev/fd/{read_end} holds more than the 1 MiB a recipe may be")


def test_huge_recipe_text_in_memory_is_refused() -> None:
    with pytest.raises(UserError, match=r"^recipe hf://o/n/r\.yaml is 1\.0 MiB, more than the 1 MiB"):
        load_recipe_text("#" * (MAX_RECIPE_BYTES + 1), "hf://o/n/r.yaml")


def test_s5_finetune_reads_a_piped_recipe_once(tmp_path: Path) -> None:
    """`s5 finetune <(cat r.yaml)`: the objective check read the pipe first, and loading it then found it
    empty. The check leaves a pipe to the loading."""
    from s5cli.cli.training import _check_objective
    from s5cli.train.job import recipe_objects

    read_end, write_end = os.pipe()
    feeder = _feed(write_end, SYNTHETIC.read_bytes())
    try:
        _check_objective(f"/dev/fd/{read_end}", [], "supervised")
        recipe = recipe_objects(f"/dev/fd/{read_end}", ["train.objective=supervised"], None)
    finally:
        os.close(read_end)
        feeder.join(5)
    assert recipe.data.dataset == "synthetic"
