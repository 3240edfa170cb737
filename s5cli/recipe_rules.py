"""Field metadata of the recipe schema: `Rule` (the allowed values of one field), the common rules, and
`knob` (a dataclass field with its default and rule).

The section dataclasses that use them are in `s5cli.recipe_schema`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Rule:
    """Allowed values of one field: a numeric interval, a set of choices, a multiple, a list length."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] | None = None
    multiple_of: int | None = None
    length: int | None = None

    def allows(self, value: Any) -> bool:
        """True if `value` (already of the right type) is allowed; lists are checked item by item."""
        if isinstance(value, list):
            if self.length is not None and len(value) != self.length:
                return False
            return all(self.allows(item) for item in value)
        if value is None:
            return True
        if self.choices is not None and value not in self.choices:
            return False
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                return False
            if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
                return False
            if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
                return False
            if self.multiple_of is not None and value % self.multiple_of:
                return False
        return True

    def describe(self) -> str:
        """The allowed values in words, e.g. 'in (0, 1]' or 'one of cosine, plateau, constant'."""
        if self.choices is not None:
            return "one of " + ", ".join(str(c) for c in self.choices)
        parts = []
        if self.length is not None:
            parts.append(f"a list of {self.length} numbers")
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            parts.append(f"in {left}{_num(self.low)}, {_num(self.high)}{right}")
        elif self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {_num(self.low)}")
        elif self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {_num(self.high)}")
        if self.multiple_of is not None:
            parts.append(f"a multiple of {self.multiple_of}")
        return " and ".join(parts) if parts else "any value"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


POSITIVE = Rule(low=0, low_open=True)
AT_LEAST_1 = Rule(low=1)
NON_NEGATIVE = Rule(low=0)
FRACTION = Rule(low=0, high=1)  # [0, 1]
PROPER_FRACTION = Rule(low=0, high=1, high_open=True)  # [0, 1)
SEED = Rule(low=0, high=2**32 - 1)  # s5cli.seeding.MAX_SEED (not imported: this module stays light)


def knob(default: Any = None, rule: Rule | None = None) -> Any:
    """A dataclass field with a default and the rule its values must follow."""
    return field(default=default, metadata={"rule": rule} if rule is not None else {})
