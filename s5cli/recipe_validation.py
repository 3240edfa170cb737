"""Recipe validation: a parsed YAML mapping -> typed, range-checked sections, every problem in one line.

Problems are collected rather than raised at the first one, so that the message names the recipe, marks the
keys a command-line override set, and counts the other problems. What is allowed is declared in
`s5cli.recipe_schema` (each key) and `s5cli.recipe_cross_checks` (keys together); reading the file and
applying the overrides is `s5cli.recipe`. The model section and
`train.lsmcl` take their fields from the model config dataclasses, imported lazily because they pull in torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import typing
from typing import Any

from s5cli.errors import UserError
from s5cli.recipe_cross_checks import backbone_width, cross_checks
from s5cli.recipe_rules import Rule
from s5cli.recipe_schema import (
    LSMCL_RULES,
    MODEL_RULES,
    PATH_KEYS,
    SECTIONS,
    ModelSection,
    Recipe,
    SyntheticSection,
    TrainSection,
    model_section_class,
)
from s5cli.recipe_values import (
    INT64_MAX,
    KeyMarks,
    OverrideText,
    coerce,
    describe_type,
    too_large,
    written_text,
)

# C0 control characters and DEL: no path holds one on purpose.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# An integer written as text ("10"): the type message says to drop the quotes.
_QUOTED_INT = re.compile(r"^[-+]?[0-9]+$")


class Problems:
    """Collects validation problems; the first is reported (one line), with a count of the others.

    `marks` says where the file's keys are: a problem of one key's own value (`add_for_key`) names its line.
    `empty_overrides` are the keys an override gave no value (`optim.lr=`).
    """

    def __init__(self, source: str, override_keys: set[str], marks: KeyMarks | None = None,
                 empty_overrides: set[str] | None = None) -> None:
        self.source, self.override_keys, self.items = source, override_keys, []
        self.marks, self.empty_overrides = marks or KeyMarks(), empty_overrides or set()
        self.notes: list[str] = []  # not problems: printed as warnings once the recipe is valid

    def note(self, key: str | tuple[str, ...], text: str) -> None:
        self.notes.append(f"{self.where(key)}: {text}")

    def overridden(self, key: str) -> bool:
        """Whether `key` (or a key under it) was set by a command-line override."""
        return any(k == key or k.startswith(key + ".") for k in self.override_keys)

    def where(self, key: str | tuple[str, ...]) -> str:
        """The recipe's name, marked as a command-line override when the problem's key, or any of the
        keys a rule ties together (a tuple), came from one: `model.n_blocks=20` against the file's
        `d_model` is the override's doing, though the rule reports `model.d_model`."""
        keys = (key,) if isinstance(key, str) else key
        return f"{self.source} (command-line override)" if any(map(self.overridden, keys)) else self.source

    def add(self, key: str | tuple[str, ...], text: str) -> None:
        self.items.append(f"{self.where(key)}: {text}")

    def add_for_key(self, key: str, text: str) -> None:
        """A problem of `key`'s own value (unknown, wrong type, out of range), with the key's line when the
        file set it. Why: a CHANGELOG promised YAML line numbers, and only syntax errors had them."""
        line = None if self.overridden(key) else self.marks.lines.get(key)
        self.items.append(f"{self.source} (line {line}): {text}" if line else f"{self.where(key)}: {text}")

    def is_empty(self, key: str) -> bool:
        """Whether `key` was given no value (`epochs:` in the file, `optim.lr=` on the command line)."""
        return key in (self.empty_overrides if self.overridden(key) else self.marks.empty)

    def raise_if_any(self) -> None:
        if self.items:
            more = len(self.items) - 1
            raise UserError(self.items[0] + (f" [and {more} more problem{'s' * (more > 1)}]" if more else ""))


def show_value(value: Any) -> str:
    """A recipe value as YAML would write it (null, true/false), strings quoted: for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = written_text(value)  # a number as written (`0042`), and no repr() of one too long for Python
    if text is not None:
        return text if len(text) <= 200 else text[:196] + " ..."
    if isinstance(value, int) and value.bit_length() > 640:  # repr() of over 4300 digits raises
        return f"(an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits)"
    import reprlib

    # Bounded: a value from a hostile recipe may be nested and huge, and the message is one line.
    shown = reprlib.Repr()
    shown.maxlevel, shown.maxlist, shown.maxdict, shown.maxstring, shown.maxother = 3, 8, 8, 200, 200
    text = shown.repr(value)
    return text if len(text) <= 200 else text[:196] + " ..."


def model_config_class(name: str) -> type:
    """The config dataclass of the registered model `name`, imported when called (models pull in torch)."""
    from s5cli.models import registry

    return registry.model_config_class(name)


def canonical_model_name(name: str) -> str:
    """The registered name of model `name` (`S5` -> s5, `vit` -> transformer); ValueError for unknown ones."""
    from s5cli.models import registry

    return registry.canonical_name(name)


def _other_model_keys(config_cls: type) -> set[str]:
    """Config keys of the registered models other than `config_cls`."""
    from s5cli.models.registry import MODELS

    return {name for cls, _ in MODELS.values() if cls is not config_cls for name in field_names(cls)}


def lsmcl_config_class() -> type:
    """LSMCL's config dataclass, imported when called (it pulls in torch)."""
    from s5cli.models.lsmcl import LSMCLConfig

    return LSMCLConfig


def field_names(cls: type) -> list[str]:
    """The field names of dataclass `cls`, in order."""
    return [f.name for f in dataclasses.fields(cls)]


def build_recipe(raw: dict[str, Any], problems: Problems) -> Recipe:
    """The typed, range-checked `Recipe` of a parsed mapping (overrides applied); UserError on its problems."""
    for key in raw:
        if key not in SECTIONS:
            problems.add_for_key(str(key), f"unknown section {key!r}{_suggest(str(key), list(SECTIONS), listing='sections')}")
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        values = _section_mapping(raw.get(name), name, problems)
        if name == "model":
            sections[name] = _build_model(values, problems, sections["data"].backbone)
        else:
            sections[name] = _build_dataclass(cls, values, name, problems)
    problems.raise_if_any()
    recipe = Recipe(**sections)
    cross_checks(recipe, problems.add)
    problems.raise_if_any()
    return recipe


def yaml_kind(value: Any) -> str:
    """The name of a YAML value's type as a user knows it (`int` for the loader's WrittenInt)."""
    return next((kind.__name__ for kind in (bool, int, float, str) if isinstance(value, kind)), type(value).__name__)


def not_a_section(key: str, value: Any) -> str:
    """The problem of a section (`train: 5`) that holds no mapping, with the value's type and its article."""
    kind = yaml_kind(value)
    return f"{key}={show_value(value)} must be a mapping of keys (a YAML section), not {'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def _section_mapping(value: Any, key: str, problems: Problems) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.add_for_key(key, not_a_section(key, value))
        return {}
    return value


def _suggest(key: str, candidates: list[str], prefix: str = "", listing: str | None = "known keys") -> str:
    """' (did you mean X?)' for the closest candidate, else the list of candidates (when `listing` names it)."""
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    if not close and len(key) >= 3:  # a truncated name: 'vit_larg' -> 'vit_large_patch16_224'
        close = [c for c in candidates if c.startswith(key)][:1] if sum(c.startswith(key) for c in candidates) == 1 else []
    if close:
        return f" (did you mean {prefix}{close[0]}?)"
    if listing is None or not candidates:
        return ""
    return f"; {listing}: {', '.join(prefix + c for c in candidates)}"


def _build_dataclass(cls: type, values: dict[str, Any], prefix: str, problems: Problems,
                     extra_rules: dict[str, Rule] | None = None, construct: bool = True,
                     also_known: tuple[str, ...] = ()) -> Any:
    """Typed, range-checked instance of `cls` (or the dict of its checked values when construct=False).

    `also_known` are keys of the section that the caller handles itself (model.name), offered in hints.
    """
    hints = typing.get_type_hints(cls)
    known = field_names(cls)
    checked: dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{prefix}.{key}"
        if key not in known:
            hint = _suggest(str(key), [*also_known, *known], prefix + ".")
            problems.add_for_key(dotted, f"unknown key {dotted}{hint}")
            continue
        spec = next(f for f in dataclasses.fields(cls) if f.name == key)
        hint = hints[key]
        if key == "synthetic" and hint is SyntheticSection:
            checked[key] = _build_dataclass(SyntheticSection, _section_mapping(value, dotted, problems), dotted, problems)
            continue
        if key == "lsmcl" and cls is TrainSection:
            checked[key] = _build_lsmcl(_section_mapping(value, dotted, problems), dotted, problems)
            continue
        ok, converted = coerce(value, hint)
        if not ok:
            problems.add_for_key(dotted, _type_problem(dotted, value, hint, problems.is_empty(dotted)))
            continue
        if isinstance(converted, float) and not math.isfinite(converted):
            problems.add_for_key(dotted, f"{dotted}={show_value(value)} is not a finite number")
            continue
        control = _CONTROL.search(converted) if dotted in PATH_KEYS and isinstance(converted, str) else None
        if control is not None:
            problems.add_for_key(dotted, f"{dotted}={show_value(converted)} holds the control character "
                                 f"{control.group()!r}, which no path should: remove it")
            continue
        rule = spec.metadata.get("rule") or (extra_rules or {}).get(key)
        if rule is not None and rule.choices and isinstance(converted, str):
            converted = _choice_named(converted, rule.choices)
        if rule is not None and not rule.allows(converted):
            hint = _suggest(str(value).lower(), [str(c) for c in rule.choices], listing=None) if rule.choices else ""
            problems.add_for_key(dotted, f"{dotted}={show_value(value)} is not allowed: must be {rule.describe()}{hint}")
            continue
        checked[key] = converted
    if not construct:
        return checked
    if cls is TrainSection and "lsmcl" not in checked:
        checked["lsmcl"] = _build_lsmcl({}, f"{prefix}.lsmcl", problems)
    try:
        return cls(**checked)
    except (TypeError, ValueError) as error:
        problems.add(prefix, f"{prefix}: {error}")
        return cls()


def _type_problem(dotted: str, value: Any, hint: Any, empty: bool = False) -> str:
    """Why `value` cannot be a `hint`: no value given (`empty`), a number too large for it, a quoted integer,
    a command-line value YAML would have cut (kept as text), or simply another type."""
    shown = f"{dotted}={show_value(value)}"
    takes = {hint, *typing.get_args(hint)}
    if empty and value is None:  # `epochs:` / `optim.lr=` read as null: "=null" was not what was typed
        return f"{dotted} is empty: give {describe_type(hint)}"
    if too_large(value) and takes & {int, float}:
        limit = f"use a value of at most {INT64_MAX}" if int in takes else "use a number below 1.8e308"
        return f"{shown} is too large: {limit}"
    expected = f"has the wrong type: expected {describe_type(hint)}"
    if bool in takes and _reads_as_yes_or_no(value):
        return f"{shown} {expected} (YAML 1.2 reads {str(value)!r} as text: write true or false)"
    if int in takes and isinstance(value, str) and _QUOTED_INT.match(value.strip()):
        # Quoted, so text: unlike '1e-3' (text to YAML 1.1, so recipes quoted it), an integer was never text.
        return f"{shown} {expected} (quoted, so it is text: drop the quotes)"
    if isinstance(value, OverrideText):
        return (f"{shown} {expected} ({value.why}, so the command line kept the value as text: write the value "
                f"alone, or quote it, e.g. {dotted}='...')")
    return f"{shown} {expected}"


# Text meant as a boolean: YAML 1.1 read yes/no/on/off (and y/n) as ones, other cases of true/false are text;
# recipes are read as YAML 1.2, whose booleans are only true/false, True/False and TRUE/FALSE.
_YAML11_BOOL_WORDS = {"yes", "no", "on", "off", "y", "n", "true", "false"}


def _reads_as_yes_or_no(value: Any) -> bool:
    """Whether `value` is text meant as a boolean (`yes`, `off`, `tRUE`): recipes written for YAML 1.1 used
    them, and "expected true or false" alone did not say that the spelling is the problem."""
    return isinstance(value, str) and value.strip().lower() in _YAML11_BOOL_WORDS


def _choice_named(value: str, choices: tuple[Any, ...]) -> str:
    """The choice `value` names in any case (`DPLR` -> dplr): choices are stored in their own spelling."""
    return next((choice for choice in choices if isinstance(choice, str) and choice.lower() == value.lower()), value)


def _build_lsmcl(values: dict[str, Any], prefix: str, problems: Problems) -> Any:
    cfg_cls = lsmcl_config_class()
    checked = _build_dataclass(cfg_cls, values, prefix, problems, LSMCL_RULES, construct=False)
    try:
        return cfg_cls(**checked)
    except (TypeError, ValueError) as error:
        problems.add(prefix, f"{prefix}: {error}")
        return None


def _build_model(values: dict[str, Any], problems: Problems, backbone: str) -> Any:
    name = values.get("name", ModelSection.name)
    if not isinstance(name, str):
        problems.add_for_key("model.name", f"model.name={show_value(name)} has the wrong type: expected a string")
        return ModelSection()
    try:
        # Stored as registered (`S5` -> s5): the run's checkpoints, cards and eval compare it as text.
        name = canonical_model_name(str(name))
        config_cls = model_config_class(name)
    except (ValueError, KeyError) as error:
        problems.add_for_key("model.name", f"model.name={show_value(name)}: {str(error).strip(chr(39))}")
        return ModelSection()
    section_cls = model_section_class(config_cls)
    fields = {k: v for k, v in values.items() if k != "name"}
    own, others = set(field_names(config_cls)), _other_model_keys(config_cls)
    unused = [key for key in fields if key not in own and key in others]
    if unused:
        # `model.name=s4` on an S5 recipe: the S5-only settings simply do not apply to the baseline, so
        # switching the model is one override, not one per key. A typo (no model has it) stays an error.
        keys = ", ".join(f"model.{key}" for key in unused)
        chosen = f"model.name={name}" + (" (command line)" if problems.overridden("model.name") else "")
        problems.note(tuple(f"model.{key}" for key in unused),
                      f"{keys} not used by {chosen}: settings of another model, ignored")
        fields = {k: v for k, v in fields.items() if k not in unused}
    width = backbone_width(backbone)
    if "d_input" not in fields and width is not None and "d_input" in field_names(config_cls):
        fields["d_input"] = width  # unset: the width of the backbone's tokens
    checked = _build_dataclass(config_cls, fields, "model", problems, MODEL_RULES, construct=False,
                               also_known=("name",))
    try:
        config_cls(**checked)  # the config's own checks (__post_init__)
    except (TypeError, ValueError) as error:
        problems.add("model", f"model ({name}): {error}")
    return section_cls(name=name, **checked)
