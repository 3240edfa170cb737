"""Reading recipe YAML: numbers and booleans as YAML 1.2 writes them (numbers keeping their text), no repeated
keys, few aliases, little nesting, and the line of each key (`KeyMarks`) for the validation's messages.

Why a loader of its own: PyYAML reads YAML 1.1, where `0042` is octal, `2:00` base 60, `2024-01-01` a
date and `off` false, and it keeps the last of a repeated key silently; a recipe is read (and overrides parsed) through
the loaders here instead. Only SafeLoader subclasses: a recipe can never build arbitrary objects. A recipe
file's bytes are read here too (`read_recipe_file`: pipes, a size cap, UTF-8 with the line of a bad byte).
"""

from __future__ import annotations

import math
import os
import re
import stat
import typing
from pathlib import Path
from typing import Any

import yaml

from s5cli.errors import UserError
from s5cli.recipe_validation import yaml_kind
from s5cli.recipe_values import MAX_NUMBER_DIGITS, KeyMarks, LongNumber, WrittenFloat, WrittenInt


class _DuplicateKeyError(yaml.constructor.ConstructorError):
    """A key given twice in one mapping."""


class YamlTooDeepError(yaml.composer.ComposerError):
    """Values nested more than `MAX_YAML_DEPTH` levels (the loader's recursion would exhaust Python's stack)."""


# Numbers as YAML 1.2 writes them. PyYAML reads YAML 1.1, where `0042` is octal 34, `2:00` is 120 (base
# 60) and `2024-01-01` a date: a seed, a revision or a folder name quietly became another value. Here
# `0042` is 42, those others are text, and `0o42` is octal. Digit groups (`65_536`) stay a number, as
# recipes written for PyYAML used them; a text field keeps what was written (`2024_06_01`) in any case.
_INT = re.compile(r"^[-+]?(?:[0-9]+(?:_[0-9]+)*|0x[0-9a-fA-F]+|0o[0-7]+)$")
_FLOAT = re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)"
                    r"|\.(?:nan|NaN|NAN))$")
_YAML11_ONLY = {"tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:timestamp",
                "tag:yaml.org,2002:value", "tag:yaml.org,2002:bool"}
# Booleans as YAML 1.2's core schema writes them. YAML 1.1 also read yes/no/on/off as booleans, so
# `train.out_dir=off` or `hub.revision=yes` became false/true and "had the wrong type"; now they are text,
# and a true/false field given one is told to write true or false.
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_SPECIAL_FLOATS = {".inf": math.inf, "+.inf": math.inf, "-.inf": -math.inf, ".nan": math.nan}


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    """A `WrittenInt` (decimal, 0x hex or 0o octal), or the text when it has too many digits to convert."""
    text = str(loader.construct_scalar(node))
    digits = text.strip().lstrip("+-")
    base = {"0x": 16, "0o": 8}.get(digits[:2].lower(), 10)
    digits = digits[2:] if base != 10 else digits
    if len(digits) > MAX_NUMBER_DIGITS:
        return LongNumber(text)
    try:
        number = int(digits, base)
    except ValueError:  # an explicit `!!int` on other text
        raise yaml.constructor.ConstructorError(None, None, f"{text!r} is not an integer", node.start_mark) from None
    return WrittenInt(-number if text.strip().startswith("-") else number, text)


def _construct_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    """A `WrittenFloat` (its text kept for a text field)."""
    text = str(loader.construct_scalar(node))
    try:
        number = _SPECIAL_FLOATS.get(text.strip().lower()) or float(text)
    except ValueError:  # an explicit `!!float` on other text
        raise yaml.constructor.ConstructorError(None, None, f"{text!r} is not a number", node.start_mark) from None
    return WrittenFloat(number, text)


class Yaml12Loader(yaml.SafeLoader):
    """SafeLoader that reads numbers as YAML 1.2 does (`_INT`, `_FLOAT`), keeping the text they were written as,
    booleans as YAML 1.2 does (`_BOOL`: `off` is text), and no dates: a recipe holds none, and
    `train.out_dir=2024-01-01` is a folder name."""

    yaml_implicit_resolvers: typing.ClassVar[dict[Any, Any]] = {
        first: [(tag, regex) for tag, regex in resolvers if tag not in _YAML11_ONLY]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:int", _INT, list("-+0123456789"))
Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+.0123456789"))
Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL, list("tTfF"))
Yaml12Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
Yaml12Loader.add_constructor("tag:yaml.org,2002:float", _construct_float)


# Aliases (*name) one recipe may use: a few `<<: *defaults` merges at most. Nested aliases multiply: 450
# bytes of them described 10^9 values, and printing one in an error message took all memory.
MAX_YAML_ALIASES = 32
# Levels of nesting (sections, lists, `[`/`{`) one recipe may use: its deepest key is data.synthetic.seed or
# train.lsmcl.mask_ratio (3). PyYAML composes nested values by recursion: 400 `[` ended in a RecursionError
# traceback, of a file, a Hub recipe being pulled or a command-line value alike.
MAX_YAML_DEPTH = 50
_NULL_TAG = "tag:yaml.org,2002:null"


class StrictLoader(Yaml12Loader):
    """`Yaml12Loader` that refuses a key repeated in one mapping, more than `MAX_YAML_ALIASES` aliases and
    more than `MAX_YAML_DEPTH` levels of nesting, and notes each mapping's key lines (`mapping_marks`).

    PyYAML keeps the last value silently, so `lr: 0.001` followed further down by `lr: 1` trained at 1.
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.events.AliasEvent):
            self.aliases_seen = getattr(self, "aliases_seen", 0) + 1
            if self.aliases_seen > MAX_YAML_ALIASES:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(
                    None, None, f"more than {MAX_YAML_ALIASES} aliases (*name): a recipe needs a few at most", mark)
        self.depth = getattr(self, "depth", 0) + 1
        try:
            if self.depth > MAX_YAML_DEPTH:
                raise YamlTooDeepError(None, None, f"more than {MAX_YAML_DEPTH} levels of nested values "
                                       "(sections, lists, [ or {): a recipe needs 3", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` merges, it does not repeat
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, typing.Hashable):
                continue  # the base constructor reports unhashable keys itself
            if key in seen:
                raise _DuplicateKeyError(None, None, f"key {key!r} is given twice in one section",
                                         key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_marked_map(self, node: yaml.MappingNode) -> Any:
        """SafeLoader's mapping, and its keys' lines and empty values noted in `mapping_marks` under the id of
        the dict (alive as long as the parsed recipe is)."""
        data: dict[Any, Any] = {}
        yield data
        data.update(self.construct_mapping(node))
        marks = KeyMarks()
        for key_node, value_node in node.value:  # merged keys first, then the mapping's own: as the dict has them
            key = self.construct_object(key_node)
            if isinstance(key, typing.Hashable):
                marks.lines[str(key)] = key_node.start_mark.line + 1
                empty = isinstance(value_node, yaml.ScalarNode) and value_node.tag == _NULL_TAG and not value_node.value
                (marks.empty.add if empty else marks.empty.discard)(str(key))
        self.mapping_marks = getattr(self, "mapping_marks", {})
        self.mapping_marks[id(data)] = marks


StrictLoader.add_constructor("tag:yaml.org,2002:map", StrictLoader.construct_marked_map)


def _collect_marks(mapping: dict[Any, Any], loader: StrictLoader, into: KeyMarks, prefix: str = "",
                   depth: int = 3) -> None:
    """`into` filled with the dotted keys of `mapping` and its mappings, `depth` levels down (a recipe's
    deepest key is data.synthetic.seed)."""
    own = getattr(loader, "mapping_marks", {}).get(id(mapping))
    if own is None:
        return
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if str(key) in own.lines:
            into.lines[dotted] = own.lines[str(key)]
        if str(key) in own.empty:
            into.empty.add(dotted)
        if isinstance(value, dict) and depth > 1:
            _collect_marks(value, loader, into, f"{dotted}.", depth - 1)


# The largest recipe read: bundled ones are about 5 KB. Parsing is slow (5 MB of comments took 2.5 s and
# 200 MB minutes), and nothing that large is a recipe: a wrong file named, or one grown by a script.
MAX_RECIPE_BYTES = 1 << 20


def recipe_too_large(path: str, size: int | None) -> UserError:
    """The error for a recipe over `MAX_RECIPE_BYTES`; `size` None where it is not known (a pipe)."""
    amount = f"is {size / (1 << 20):.1f} MiB, more than" if size is not None else "holds more than"
    return UserError(f"recipe {path} {amount} the 1 MiB a recipe may be (bundled ones are about 5 KB): "
                     "name the recipe's .yaml file, or remove what was added to it")


def read_recipe_file(path: Path, name: str | None = None) -> str:
    """The text of recipe file `path` (`name` names it in errors); one-line UserError for a folder, a file
    over `MAX_RECIPE_BYTES` or one that is not UTF-8.

    Read once and as a stream, not by `is_file()`: `<(cat recipe.yaml)`, /dev/stdin and a named pipe are
    no regular files but hold a recipe's text, and were called folders. At most `MAX_RECIPE_BYTES` + 1 bytes
    are read, so a huge file or an endless pipe is refused at once instead of parsed for minutes.
    """
    name = name or str(path)
    if path.is_dir():
        raise UserError(f"recipe {name} is a folder: name a recipe .yaml file in it (`s5 recipes ls` lists the "
                        "bundled ones)")
    try:
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            if stat.S_ISREG(info.st_mode) and info.st_size > MAX_RECIPE_BYTES:  # refused before reading any
                raise recipe_too_large(name, info.st_size)
            data = handle.read(MAX_RECIPE_BYTES + 1)
    except OSError as error:
        raise UserError(f"recipe {name} cannot be read: {error.strerror or error}") from None
    if len(data) > MAX_RECIPE_BYTES:  # a pipe, whose size is known only by reading it
        raise recipe_too_large(name, None)
    return _decode_recipe(data, name)


def _decode_recipe(data: bytes, name: str) -> str:
    """`data` as UTF-8 text; else a UserError naming the line of the first other byte (Python's own message
    gave a byte offset and no fix)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise UserError(f"recipe {name} is not UTF-8 text: line {line} holds byte 0x{data[error.start]:02x} "
                        "(Latin-1 or another legacy encoding?): save it as UTF-8") from None


def parse_recipe_yaml(text: str, path: str, marks: KeyMarks | None = None) -> dict[str, Any]:
    """The top-level mapping of a recipe's YAML text; one-line UserError naming `path` for anything else.
    `marks`, when given, is filled with where the file's keys are."""
    if len(text) > MAX_RECIPE_BYTES:  # text in memory (a download): each character is a byte at least
        raise recipe_too_large(path, len(text.encode("utf-8")))
    loader = StrictLoader(text)  # a SafeLoader subclass: no arbitrary objects
    try:
        raw = loader.get_single_data()
    except yaml.YAMLError as error:
        raise UserError(f"{path}: {_yaml_problem(error, text)}") from None
    finally:
        loader.dispose()
    if raw is None:
        raise UserError(f"{path} is empty: a recipe is a mapping of sections (data:, model:, optim:, train:, ...)")
    if not isinstance(raw, dict):
        kind = "a list" if isinstance(raw, list) else f"{'an' if yaml_kind(raw)[0] in 'aeiou' else 'a'} {yaml_kind(raw)}"
        raise UserError(f"{path} holds {kind}, not a recipe: the top level must map section names (data:, model:, ...)")
    if marks is not None:
        _collect_marks(raw, loader, marks)
    return raw


def peek_recipe_yaml(text: str) -> Any:
    """The YAML value of `text` read as a recipe is (`StrictLoader`), or None where it cannot be: for a look
    ahead of the real loading, which reports the problem. Why not yaml.safe_load: a file nested a thousand
    levels deep raised a RecursionError traceback there, which no `except yaml.YAMLError` caught."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError:
        return None


def _yaml_problem(error: yaml.YAMLError, text: str) -> str:
    """PyYAML's error as one line: what is wrong, where (line, column) and, where known, the fix."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    line = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    if str(getattr(error, "context", "")).startswith("expected a single document") and mark is not None:
        # PyYAML said only "but found another document": its context was dropped with the second line.
        lines = text.splitlines()
        if mark.line < len(lines) and lines[mark.line].startswith("---"):
            return f"a recipe is one YAML document: remove the `---` at line {mark.line + 1}"
        return f"a recipe is one YAML document, but another starts at line {mark.line + 1}: make them one"
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    kinds = {_DuplicateKeyError: "repeated key", YamlTooDeepError: "too deeply nested"}
    return f"{kinds.get(type(error), 'YAML syntax error')}{line}: {problem}"
