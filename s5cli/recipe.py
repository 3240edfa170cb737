"""Recipes: YAML file + `key=value` overrides -> one validated `Recipe` that every command reads.

The whole recipe is checked before any work starts. Every problem is reported as one line naming the file,
the key, the value and what is allowed (`UserError`, exit code 2). The schema (sections, defaults, ranges)
is in `s5cli.recipe_schema`. The model section and `train.lsmcl` take their fields from the model config
dataclasses, imported lazily because they pull in torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from s5cli.errors import UserError
from s5cli.hub.paths import SCHEME as HUB_SCHEME
from s5cli.recipe_schema import (
    LSMCL_RULES,
    MODEL_RULES,
    SECTIONS,
    DataSection,
    EvalSection,
    HubSection,
    ModelSection,
    OptimSection,
    Recipe,
    Rule,
    SyntheticSection,
    TrainSection,
    backbone_width,
    bundled_recipes,
    bundled_recipes_dir,
    coerce,
    cross_checks,
    describe_type,
    model_section_class,
)

__all__ = [
    "DataSection", "EvalSection", "HubSection", "ModelSection", "OptimSection", "Recipe", "SyntheticSection",
    "TrainSection", "bundled_recipes", "bundled_recipes_dir", "check_data_paths", "load_recipe", "load_recipe_spec",
    "load_recipe_text", "model_config", "parse_overrides", "recipe_to_dict", "save_recipe", "show_value",
]

class _Problems:
    """Collects validation problems; the first is reported (one line), with a count of the others."""

    def __init__(self, source: str, override_keys: set[str]) -> None:
        self.source, self.override_keys, self.items = source, override_keys, []
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
    return repr(value)


# ----------------------------------------------------------------------------------------------- loading
def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read a recipe YAML, apply `key=value` overrides and validate everything; UserError on any problem."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"recipe {path} not found", hint="`s5 recipes ls` lists the bundled ones")
    if not path.is_file():
        raise UserError(f"recipe {path} is a folder: name a recipe .yaml file in it (`s5 recipes ls` lists the "
                        "bundled ones)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"recipe {path} cannot be read: {error}") from None
    return load_recipe_text(text, str(path), overrides)


def load_recipe_spec(spec: str, overrides: Sequence[str] = ()) -> Recipe:
    """A recipe named the way users name it (path, bundled name or hf:// address), loaded and validated.

    Errors and the saved recipe's header name a Hub recipe by its hf:// address: the path of its copy in
    the Hub cache means nothing to its user, and editing that copy would be the wrong fix.
    """
    path = resolve_recipe_spec(spec)
    if not spec.startswith(HUB_SCHEME):
        return load_recipe(path, overrides)
    return load_recipe_text(Path(path).read_text(encoding="utf-8"), spec, overrides)


def load_recipe_text(text: str, source: str, overrides: Sequence[str] = ()) -> Recipe:
    """Validate recipe YAML held in memory (e.g. downloaded); `source` names it in error messages."""
    raw = _parse_yaml(text, source)
    override_keys = _apply_overrides(raw, parse_overrides(overrides), source)
    problems = _Problems(source, override_keys)
    recipe = _build(raw, problems)
    recipe.source = source  # not a field: reported in later errors, never saved
    if problems.notes:
        from s5cli.cli.console import print_warning

        for note in problems.notes:
            print_warning(note)
    return recipe


class _DuplicateKeyError(yaml.constructor.ConstructorError):
    """A key given twice in one mapping."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key repeated in one mapping.

    PyYAML keeps the last value silently, so `lr: 0.001` followed further down by `lr: 1` trained at 1.
    """

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


def _parse_yaml(text: str, path: str) -> dict[str, Any]:
    try:
        raw = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        line = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        kind = "repeated key" if isinstance(error, _DuplicateKeyError) else "YAML syntax error"
        raise UserError(f"{path}: {kind}{line}: {problem}") from None
    if raw is None:
        raise UserError(f"{path} is empty: a recipe is a mapping of sections (data:, model:, optim:, train:, ...)")
    if not isinstance(raw, dict):
        kind = "a list" if isinstance(raw, list) else f"a {type(raw).__name__}"
        raise UserError(f"{path} holds {kind}, not a recipe: the top level must map section names (data:, model:, ...)")
    return raw


def parse_overrides(overrides: Sequence[str]) -> list[tuple[str, Any]]:
    """`a.b=value` strings -> (dotted key, YAML-parsed value); UserError for malformed ones."""
    parsed = []
    for item in overrides:
        key, sep, text = str(item).partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise UserError(f"override {item!r} is not key=value", hint="e.g. optim.lr=3e-4 model.keep_ratio=0.5")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text  # not YAML: keep the text; the schema decides whether a string is allowed
        parsed.append((key, value))
    return parsed


def _apply_overrides(raw: dict[str, Any], overrides: list[tuple[str, Any]], path: str) -> set[str]:
    keys = set()
    for key, value in overrides:
        parts = key.split(".")
        if len(parts) == 1:
            parts = _expand_bare_key(raw, key, path)
        node = raw
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                if depth == 0:  # the file's own mistake, whatever the override (s5 pretrain adds one itself)
                    raise UserError(f"{path}: {_not_a_section(where, child)}")
                raise UserError(f"override {key}={show_value(value)}: {path} has {where}={show_value(child)}, not a section")
            node = child
        node[parts[-1]] = value
        keys.add(".".join(parts))
    return keys


# Bare keys that would be ambiguous but have one obvious meaning (`s5 finetune R init=PATH` as in the docs).
_BARE_KEYS = {"init": "train.init", "seed": "train.seed"}


def full_override_key(raw: dict[str, Any], key: str) -> str | None:
    """The dotted key an override's `key` sets in a recipe like `raw` (`keep_ratio` -> `model.keep_ratio`);
    None where it names no key or several (the recipe's validation reports those)."""
    if "." in key:
        return key
    try:
        return ".".join(_expand_bare_key(raw, key, "override"))
    except UserError:
        return None


def _expand_bare_key(raw: dict[str, Any], key: str, path: str) -> list[str]:
    """`init=...` -> ['train', 'init']: a bare key names the one section that has such a field."""
    if key in _BARE_KEYS:
        return _BARE_KEYS[key].split(".")
    if key in SECTIONS:
        raise UserError(f"override {key}=...: {key} is a section; set one of its keys, e.g. {key}.<key>=VALUE")
    owners = [name for name, cls in SECTIONS.items() if key in _field_names(cls)]
    model = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    try:
        if key in _field_names(_model_config_class(str(model.get("name", "s5")))):
            owners.append("model")
    except Exception:  # an unknown model name is reported by the validation
        pass
    # The nested sections too: `momentum=` is S5's or LSMCL's, and `clutter=` lives in data.synthetic.
    owners += [name for name, cls in (("data.synthetic", SyntheticSection), ("train.lsmcl", _lsmcl_config_class()))
               if key in _field_names(cls)]
    if len(owners) == 1:
        return [*owners[0].split("."), key]
    if owners:
        raise UserError(f"override {key}=... is ambiguous: use one of {', '.join(f'{o}.{key}' for o in owners)}")
    raise UserError(f"override {key}=... names no recipe key ({path})", hint="use section.key, e.g. optim.lr")


# ------------------------------------------------------------------------------------------ validation
def _model_config_class(name: str) -> type:
    from s5cli.models.registry import model_config_class

    return model_config_class(name)


def _other_model_keys(config_cls: type) -> set[str]:
    """Config keys of the registered models other than `config_cls`."""
    from s5cli.models.registry import MODELS

    return {name for cls, _ in MODELS.values() if cls is not config_cls for name in _field_names(cls)}


def _lsmcl_config_class() -> type:
    from s5cli.models.lsmcl import LSMCLConfig

    return LSMCLConfig


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _build(raw: dict[str, Any], problems: _Problems) -> Recipe:
    for key in raw:
        if key not in SECTIONS:
            problems.add(str(key), f"unknown section {key!r}{_suggest(str(key), list(SECTIONS), listing='sections')}")
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


def _not_a_section(key: str, value: Any) -> str:
    """The problem of a section (`train: 5`) that holds no mapping, with the value's type and its article."""
    kind = type(value).__name__
    return f"{key}={show_value(value)} must be a mapping of keys (a YAML section), not {'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def _section_mapping(value: Any, key: str, problems: _Problems) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.add(key, _not_a_section(key, value))
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


def _build_dataclass(cls: type, values: dict[str, Any], prefix: str, problems: _Problems,
                     extra_rules: dict[str, Rule] | None = None, construct: bool = True,
                     also_known: tuple[str, ...] = ()) -> Any:
    """Typed, range-checked instance of `cls` (or the dict of its checked values when construct=False).

    `also_known` are keys of the section that the caller handles itself (model.name), offered in hints.
    """
    hints = typing.get_type_hints(cls)
    known = _field_names(cls)
    checked: dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{prefix}.{key}"
        if key not in known:
            hint = _suggest(str(key), [*also_known, *known], prefix + ".")
            problems.add(dotted, f"unknown key {dotted}{hint}")
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
            problems.add(dotted, f"{dotted}={show_value(value)} has the wrong type: expected {describe_type(hint)}")
            continue
        if isinstance(converted, float) and not math.isfinite(converted):
            problems.add(dotted, f"{dotted}={show_value(value)} is not a finite number")
            continue
        rule = spec.metadata.get("rule") or (extra_rules or {}).get(key)
        if rule is not None and not rule.allows(converted):
            hint = _suggest(str(value), [str(c) for c in rule.choices], listing=None) if rule.choices else ""
            problems.add(dotted, f"{dotted}={show_value(value)} is not allowed: must be {rule.describe()}{hint}")
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


def _build_lsmcl(values: dict[str, Any], prefix: str, problems: _Problems) -> Any:
    cfg_cls = _lsmcl_config_class()
    checked = _build_dataclass(cfg_cls, values, prefix, problems, LSMCL_RULES, construct=False)
    try:
        return cfg_cls(**checked)
    except (TypeError, ValueError) as error:
        problems.add(prefix, f"{prefix}: {error}")
        return None


def _build_model(values: dict[str, Any], problems: _Problems, backbone: str) -> Any:
    name = values.get("name", ModelSection.name)
    if not isinstance(name, str):
        problems.add("model.name", f"model.name={show_value(name)} has the wrong type: expected a string")
        return ModelSection()
    try:
        config_cls = _model_config_class(name)
    except (ValueError, KeyError) as error:
        problems.add("model.name", f"model.name={name!r}: {str(error).strip(chr(39))}")
        return ModelSection()
    section_cls = model_section_class(config_cls)
    fields = {k: v for k, v in values.items() if k != "name"}
    own, others = set(_field_names(config_cls)), _other_model_keys(config_cls)
    unused = [key for key in fields if key not in own and key in others]
    if unused:
        # `model.name=s4` on an S5 recipe: the S5-only settings simply do not apply to the baseline, so
        # switching the model is one override, not one per key. A typo (no model has it) stays an error.
        keys = ", ".join(f"model.{key}" for key in unused)
        chosen = f"model.name={name}" + (" (command line)" if problems.overridden("model.name") else "")
        problems.note(tuple(f"model.{key}" for key in unused),
                      f"{keys} not used by {chosen} (settings of another model): ignored")
        fields = {k: v for k, v in fields.items() if k not in unused}
    width = backbone_width(backbone)
    if "d_input" not in fields and width is not None and "d_input" in _field_names(config_cls):
        fields["d_input"] = width  # unset: the width of the backbone's tokens
    checked = _build_dataclass(config_cls, fields, "model", problems, MODEL_RULES, construct=False,
                               also_known=("name",))
    try:
        config_cls(**checked)  # the config's own checks (__post_init__)
    except (TypeError, ValueError) as error:
        problems.add("model", f"model ({name}): {error}")
    return section_cls(name=name, **checked)


# --------------------------------------------------------------------------------- data paths + output
_ANNOTATIONS = {
    "lvu": "lvu_1.0 folder of split files",
    "breakfast": "folder holding train.csv and test.csv",
    "coin": "COIN.json file",
}


def check_data_paths(recipe: Recipe) -> None:
    """Fail with one line, before any work, if the recipe's videos or split files are not where it says."""
    data, source = recipe.data, getattr(recipe, "source", "recipe")
    if data.dataset == "synthetic":  # generated on demand, into a folder
        if data.root and Path(data.root).expanduser().exists() and not Path(data.root).expanduser().is_dir():
            raise UserError(f"{source}: data.root={data.root!r} is a file: the synthetic videos are generated into "
                            "a folder (pass data.root=/path/to/a/folder)")
        return
    fix = f"pass data.root=/path/to/{data.dataset}/videos" + (
        "" if str(source).startswith(HUB_SCHEME) else f" or set data.root in {source}")
    if not data.root:
        raise UserError(f"{source}: data.root is not set: the {data.dataset} videos must be there ({fix})")
    root = Path(data.root).expanduser()
    if not root.is_dir():
        raise UserError(f"{source}: data.root={data.root!r} does not exist or is not a folder ({fix})")
    wanted = {"lvu": ("lvu_1.0", None), "breakfast": (".", "train.csv"), "coin": (".", "COIN.json")}[data.dataset]
    base = Path(data.annotations).expanduser() if data.annotations else root / wanted[0]
    names_the_file = bool(data.annotations and wanted[1] and base.suffix.lower() == Path(wanted[1]).suffix)
    if data.dataset == "breakfast" and names_the_file:
        raise UserError(f"{source}: data.annotations={data.annotations!r} names a file: set it to the folder "
                        f"holding train.csv and test.csv (e.g. {base.parent})")
    if data.dataset == "coin" and data.annotations and base.is_file():
        return
    # COIN's annotations are the JSON file itself: a path ending in .json is not a folder to look in.
    target = base / wanted[1] if wanted[1] and not names_the_file else base
    if not target.exists():
        what = _ANNOTATIONS[data.dataset]
        raise UserError(f"{source}: {target} not found: set data.annotations to the {what}")


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """Plain dict of every resolved setting (sections in schema order), safe for YAML and JSON."""
    out = dataclasses.asdict(recipe)
    return {name: _plain(out[name]) for name in SECTIONS}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def resolve_recipe_spec(spec: str) -> str:
    """Local path, a bundled recipe name ('synthetic', 'lvu/genre'), or hf://REPO[@REV]/path."""
    if spec.startswith(HUB_SCHEME):
        from s5cli.hub import resolve_recipe_path

        return str(resolve_recipe_path(spec))
    if Path(spec).exists():
        return spec
    bundled = bundled_recipes()
    name = spec[: -len(".yaml")] if spec.endswith(".yaml") else spec
    name = name[len("recipes/"):] if name.startswith("recipes/") else name
    if name in bundled:
        return str(bundled[name])
    return spec  # load_recipe reports the missing file with a hint


def dump_recipe(recipe: Recipe | dict[str, Any], header: str | None = None) -> str:
    """YAML text of a recipe (or its dict), with an optional comment header."""
    data = recipe if isinstance(recipe, dict) else recipe_to_dict(recipe)
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, allow_unicode=True)
    if header:
        text = "".join(f"# {line}\n" for line in header.splitlines()) + text
    return text


def save_recipe(recipe: Recipe, path: str | Path) -> None:
    """Write the resolved recipe (every default filled in) atomically as YAML."""
    from s5cli.io import atomic_write_text

    source = getattr(recipe, "source", None)
    header = "Resolved s5cli recipe" + (f" (from {source} and overrides)" if source else "")
    atomic_write_text(path, dump_recipe(recipe, header))


def model_config(recipe: Recipe) -> Any:
    """The typed config dataclass of `recipe.model` (e.g. S5Config), ready for `registry.build_model`."""
    model = recipe.model
    config_cls = getattr(model, "config_class", None) or _model_config_class(model.name)
    return config_cls(**{f.name: getattr(model, f.name) for f in dataclasses.fields(config_cls)})
