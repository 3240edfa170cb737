"""Recipe values between YAML and the schema: numbers that remember the text they were written as, and
YAML value -> field type conversion (`coerce`), with the type in words for errors (`describe_type`).
"""

from __future__ import annotations

import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

_FLOAT_TEXT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
INT64_MAX = 2**63 - 1
# Digits past which YAML text is not converted to a number (Python's int() refuses over 4300): no field holds
# such a number, and a text field keeps the text as it is.
MAX_NUMBER_DIGITS = 1000
# The largest integer str() is asked to write (about 3000 digits), kept under Python's 4300-digit limit.
_MAX_STR_BITS = 10_000


class _RemembersText:
    """A number read from YAML that remembers the text it was written as (mixed into int and float).

    Why: a text field (a path, a revision) takes its value as written: str() of the number made
    `hub.revision=0123456` '123456', `train.out_dir=0x10` '16' and `data.root=0.10` '0.1'.
    """

    text: str

    def __new__(cls, value: Any, text: str) -> Any:
        number = super().__new__(cls, value)  # type: ignore[call-arg]  # int's or float's
        number.text = text
        return number


class WrittenInt(_RemembersText, int):
    """An integer read from YAML, with the text it was written as."""


class WrittenFloat(_RemembersText, float):
    """A float read from YAML, with the text it was written as."""


class LongNumber(str):
    """Digits YAML would read as a number, too many to convert (`MAX_NUMBER_DIGITS`): text for a text field,
    too large for any number field."""


class OverrideText(str):
    """A command-line value kept as typed because YAML would have cut or reread it (`#` starts a comment, `&`
    an anchor, ...); `why` says what YAML does with it, for the error when the key takes no text."""

    why: str

    def __new__(cls, text: str, why: str) -> OverrideText:
        value = super().__new__(cls, text)
        value.why = why
        return value


@dataclass
class KeyMarks:
    """Where the keys of a recipe file are: dotted key -> its line (1-based), and the keys written with no
    value (`epochs:`), which YAML reads as null. Filled by `s5cli.recipe_yaml.parse_recipe_yaml`; the
    validation names the line of a key whose own value is wrong."""

    lines: dict[str, int] = field(default_factory=dict)
    empty: set[str] = field(default_factory=set)


def written_text(value: Any) -> str | None:
    """The text a number was written as in the YAML (None for other values)."""
    if isinstance(value, _RemembersText):
        return value.text
    return str(value) if isinstance(value, LongNumber) else None


def too_large(value: Any) -> bool:
    """Whether `value` is a number past any field's range: past a 64-bit integer, or too long to convert."""
    if isinstance(value, LongNumber):
        return True
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT64_MAX


def coerce(value: Any, hint: Any) -> tuple[bool, Any]:
    """(ok, value converted to `hint`): ints for floats, numbers for '1e-3' strings, text as written for numbers.

    The value comes back a plain int, float or str: the loader's `WrittenInt` and kin stop here (a subclass
    in the Recipe would not even dump back to YAML).
    """
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None:
            return type(None) in args, None
        for arg in args:
            if arg is not type(None):
                ok, converted = coerce(value, arg)
                if ok:
                    return True, converted
        return False, value
    if hint is Any:
        return True, _plain(value)
    if origin is list:
        (item_hint,) = typing.get_args(hint) or (Any,)
        if not isinstance(value, (list, tuple)):
            return False, value
        items = [coerce(item, item_hint) for item in value]
        return all(ok for ok, _ in items), [converted for _, converted in items]
    if value is None or isinstance(value, bool):
        return hint is bool and isinstance(value, bool), value
    if hint is str:
        return _coerce_text(value)
    if isinstance(value, LongNumber):
        return False, value
    if hint is int:
        # Within a 64-bit integer: Python's ints are unbounded, and a value past that ended in a traceback
        # wherever it became a size or an index (`eval.batch_size=99999999999999999999`).
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        ok = isinstance(value, int) and abs(value) <= INT64_MAX
        return ok, int(value) if ok else value
    if hint is float:
        return _coerce_float(value)
    return isinstance(value, hint) if isinstance(hint, type) else True, value


def _coerce_float(value: Any) -> tuple[bool, Any]:
    """A float field's value; an integer past a float's range is refused (float() raised OverflowError)."""
    if isinstance(value, (int, float)):
        try:
            return True, float(value)
        except OverflowError:
            return False, value
    if isinstance(value, str) and _FLOAT_TEXT.match(value.strip()):
        return True, float(value)
    return False, value


def _coerce_text(value: Any) -> tuple[bool, Any]:
    """A text field's value: a number as it was written (`0123456`, not 123456), never str() of a huge int."""
    if isinstance(value, str):
        return True, str(value)
    text = written_text(value)
    if text is not None:
        return True, text
    if isinstance(value, int) and value.bit_length() > _MAX_STR_BITS:
        return False, value
    if isinstance(value, (int, float)):
        return True, str(value)
    return False, value


def _plain(value: Any) -> Any:
    """`value` as the plain int, float or str it stands for (what a field of any type stores)."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, WrittenInt):
        return int(value)
    return float(value) if isinstance(value, WrittenFloat) else value


def describe_type(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [describe_type(a) for a in typing.get_args(hint) if a is not type(None)]
        nullable = type(None) in typing.get_args(hint)
        return " or ".join(parts) + (" or null" if nullable else "")
    if origin is list:
        plurals = {int: "integers", float: "numbers", str: "strings", bool: "true/false values"}
        item = typing.get_args(hint)[0]
        return f"a list of {plurals.get(item) or describe_type(item)}"
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))
