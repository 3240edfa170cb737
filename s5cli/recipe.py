"""Recipes: YAML file + `key=value` overrides -> one validated `Recipe` that every command reads.

The whole recipe is checked before any work starts. Every problem is reported as one line naming the file,
the key, the value and what is allowed (`UserError`, exit code 2). The schema (sections, defaults, ranges)
is in `s5cli.recipe_schema`, the checks against it in `s5cli.recipe_validation`, the YAML reading in
`s5cli.recipe_yaml`; this module reads the
recipe (file, bundled name or hf:// address), applies the overrides and writes the resolved recipe back out.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from s5cli.bundled_recipes import bundled_recipes, bundled_recipes_dir
from s5cli.errors import UserError
from s5cli.hub.paths import SCHEME as HUB_SCHEME
from s5cli.hub.paths import is_repo_id
from s5cli.recipe_schema import (
    NESTED_SECTIONS,
    SECTIONS,
    DataSection,
    EvalSection,
    HubSection,
    ModelSection,
    OptimSection,
    Recipe,
    SyntheticSection,
    TrainSection,
)
from s5cli.recipe_validation import (
    Problems,
    build_recipe,
    field_names,
    lsmcl_config_class,
    model_config_class,
    not_a_section,
    show_value,
)
from s5cli.recipe_values import OverrideText
from s5cli.recipe_yaml import KeyMarks, StrictLoader, YamlTooDeepError, parse_recipe_yaml, read_recipe_file

__all__ = [
    "DataSection", "EvalSection", "HubSection", "ModelSection", "OptimSection", "Recipe", "SyntheticSection",
    "TrainSection", "bundled_recipes", "bundled_recipes_dir", "check_data_paths", "load_recipe", "load_recipe_spec",
    "load_recipe_text", "model_config", "parse_overrides", "recipe_to_dict", "save_recipe", "show_value",
]


# ----------------------------------------------------------------------------------------------- loading
def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read a recipe YAML, apply `key=value` overrides and validate everything; UserError on any problem."""
    path = Path(path)
    if not path.exists():
        similar = similar_bundled_recipes(str(path))
        if similar:
            raise UserError(f"recipe {path} not found; bundled recipes of a similar name: {', '.join(similar)}",
                            hint="`s5 recipes ls` lists them all")
        raise UserError(f"recipe {path} not found", hint=_not_found_hint(str(path)))
    return load_recipe_text(read_recipe_file(path), str(path), overrides)


def _not_found_hint(spec: str) -> str:
    """The hint for a recipe that is not there: its hf:// address when it reads as a Hub repo id (`alice/recipes`,
    as checkpoints are named), else where the bundled recipes are listed."""
    if is_repo_id(spec) and not spec.endswith((".yaml", ".yml")):
        return f"for the Hub repo of that name: hf://{spec} (its recipe.yaml) or hf://{spec}/FILE.yaml"
    return "`s5 recipes ls` lists the bundled ones"


def load_recipe_spec(spec: str, overrides: Sequence[str] = ()) -> Recipe:
    """A recipe named the way users name it (path, bundled name or hf:// address), loaded and validated.

    Errors and the saved recipe's header name a Hub recipe by its hf:// address: the path of its copy in
    the Hub cache means nothing to its user, and editing that copy would be the wrong fix. The address is
    pinned to the commit fetched (`hf://OWNER/NAME@COMMIT/file.yaml`): a branch moves, and a run's header
    should still name the recipe it was trained with.
    """
    path = resolve_recipe_spec(spec)
    if not spec.startswith(HUB_SCHEME):
        return load_recipe(path, overrides)
    from s5cli.hub.download import pinned_recipe_address

    address = pinned_recipe_address(spec)
    return load_recipe_text(read_recipe_file(Path(path), address), address, overrides)


def load_recipe_text(text: str, source: str, overrides: Sequence[str] = (), line_numbers: bool = True) -> Recipe:
    """Validate recipe YAML held in memory (e.g. downloaded); `source` names it in error messages.

    `line_numbers=False` for YAML s5cli wrote itself from stored JSON (a checkpoint's recipe): its lines
    are of no file the user has, so errors name the key alone."""
    marks = KeyMarks()
    raw = parse_recipe_yaml(text, source, marks)
    override_keys, empty_overrides = _apply_overrides(raw, overrides, source)
    problems = Problems(source, override_keys, marks if line_numbers else KeyMarks(), empty_overrides)
    recipe = build_recipe(raw, problems)
    recipe.source = source  # not a field: reported in later errors, never saved
    recipe.overrides = tuple(overrides)  # not a field either: listed in a saved recipe's header
    if problems.notes:
        from s5cli.cli.console import print_warning

        for note in problems.notes:
            print_warning(note)
    return recipe


def parse_overrides(overrides: Sequence[str]) -> list[tuple[str, Any]]:
    """`a.b=value` strings -> (dotted key, YAML-parsed value); UserError for malformed ones."""
    parsed = []
    for item in overrides:
        key, sep, text = str(item).partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise UserError(f"override {item!r} is not key=value", hint=_override_hint(str(item)))
        try:
            parsed.append((key, _override_value(text)))
        except YamlTooDeepError as error:  # the recursion it stops raised a RecursionError traceback
            raise UserError(f"override {key}=...: {error.problem}") from None
    return parsed


# What YAML does to a command-line value that it would not keep as typed: `data.root=/data/Breakfast #2`
# was '/data/Breakfast', `data.root=#x` null and `data.root=&a b` 'b'. A quoted value is YAML's to read.
_REREAD_BY_YAML = (
    (re.compile(r"(^|\s)#"), "YAML reads '#' after a space as the start of a comment"),
    (re.compile(r"^[&*!]"), "YAML reads a leading '&', '*' or '!' as an anchor, alias or tag"),
    (re.compile(r"^[|>]"), "YAML reads a leading '|' or '>' as a block of text"),
    (re.compile(r"^(---|\.\.\.)(\s|$)"), "YAML reads '---' and '...' as document markers"),
    (re.compile(r"[\r\n]"), "YAML joins lines"),
    # `data.root=/data/run: final` became {'/data/run': 'final'}, `data.root=C:` {'C': None}, `- a` ['a'].
    # Flow values (`[0.9, 0.95]`, `{...}`) stay YAML's: optim.betas takes a list.
    (re.compile(r"^[^\[{].*:(\s|$)"), "YAML reads 'KEY: VALUE' (a colon and a space) as a mapping"),
    (re.compile(r"^[-?](\s|$)"), "YAML reads a leading '- ' as a list and '? ' as a mapping key"),
)


def _override_value(text: str) -> Any:
    """An override's value as YAML reads it, or as typed (`OverrideText`) where YAML would cut or reread it."""
    text = text.strip()
    if not text:
        return None
    if text[0] not in "'\"":
        for pattern, why in _REREAD_BY_YAML:
            if pattern.search(text):
                return OverrideText(text, why)
    try:
        return yaml.load(text, Loader=StrictLoader)  # a SafeLoader subclass, numbers as in recipe files
    except YamlTooDeepError:
        raise
    except yaml.YAMLError:
        return text  # not YAML: keep the text; the schema decides whether a string is allowed


def _override_hint(item: str) -> str:
    """What a non-key=value argument most likely is, and the fix: a recipe given after its overrides, or a
    file meant for --json. Worded for every command: `s5 eval --json FILE` writes a file, while `s5 extract
    --json` is a flag that prints the JSON."""
    suffix = Path(item).suffix.lower()
    if suffix in (".yaml", ".yml"):
        return "the recipe comes first: s5 COMMAND RECIPE key=value ..."
    if suffix == ".json":
        return ("if it was meant for --json: `--json FILE` where the command writes a file, `--json > FILE` where "
                "it prints the JSON; its --help says which")
    return "e.g. optim.lr=3e-4 model.keep_ratio=0.5"


def _apply_overrides(raw: dict[str, Any], overrides: Sequence[str], path: str) -> tuple[set[str], set[str]]:
    """Set each override's key in `raw`; the full keys set, and those given no value (`optim.lr=`). A whole
    nested section, or a key given twice with two values, is refused: a file's repeated key is too, and the
    last one won without a word."""
    given: dict[str, tuple[str, Any]] = {}
    parsed = parse_overrides(overrides)
    named = _with_model_named(raw, parsed)
    empty: set[str] = set()
    for item, (key, value) in zip(overrides, parsed, strict=True):
        parts = key.split(".")
        if len(parts) == 1:
            parts = _expand_bare_key(named, key, path)
        full = ".".join(parts)
        if full in NESTED_SECTIONS:
            raise UserError(f"override {key}={show_value(value)}: {full} is a section; set one of its keys, e.g. "
                            f"{NESTED_SECTIONS[full]}")
        if full in given and given[full][1] != value:  # the same value twice: a command's own `train.seed=`
            first = "=".join((given[full][0], show_value(given[full][1])))
            raise UserError(f"override {full} is given twice ({first}, then {key}={show_value(value)}): keep one")
        given[full] = (key, value)
        _set_key(raw, parts, key, value, path)
        (empty.add if not str(item).partition("=")[2].strip() else empty.discard)(full)
    return set(given), empty


def _with_model_named(raw: dict[str, Any], overrides: list[tuple[str, Any]]) -> dict[str, Any]:
    """`raw` as bare keys read it: with the model an override names (the last `model.name=`), wherever on the
    command line. Why: `heads=4 model.name=transformer` named no key, while the other order set model.heads."""
    names = [value for key, value in overrides if key in ("model.name", "name")]  # `name=` is model.name
    if not names:
        return raw
    model = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    return {**raw, "model": {**model, "name": names[-1]}}


def _set_key(raw: dict[str, Any], parts: list[str], key: str, value: Any, path: str) -> None:
    """raw[a][b]... = value for parts [a, b, ...], making the sections on the way; UserError where a value
    stands in the way of a section."""
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            if depth == 0:  # the file's own mistake, whatever the override (s5 pretrain adds one itself)
                raise UserError(f"{path}: {not_a_section(where, child)}")
            raise UserError(f"override {key}={show_value(value)}: {path} has {where}={show_value(child)}, not a section")
        node = child
    node[parts[-1]] = value


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
    owners = [name for name, cls in SECTIONS.items() if key in field_names(cls)]
    model = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    try:
        if key in field_names(model_config_class(str(model.get("name", "s5")))):
            owners.append("model")
    except Exception:  # an unknown model name is reported by the validation
        pass
    # The nested sections too: `momentum=` is S5's or LSMCL's, and `clutter=` lives in data.synthetic.
    owners += [name for name, cls in (("data.synthetic", SyntheticSection), ("train.lsmcl", lsmcl_config_class()))
               if key in field_names(cls)]
    if len(owners) == 1:
        return [*owners[0].split("."), key]
    if owners:
        raise UserError(f"override {key}=... is ambiguous: use one of {', '.join(f'{o}.{key}' for o in owners)}")
    raise UserError(f"override {key}=... names no recipe key ({path})", hint="use section.key, e.g. optim.lr")


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
    fix = f"pass data.root=/path/to/{data.dataset}/videos" + _where_to_set("data.root", source)
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


def _where_to_set(key: str, source: Any) -> str:
    """' or set KEY in FILE' for a recipe the user may edit; for a bundled one, how to get such a copy.

    Why: a bundled recipe lies in the installed package (site-packages), whose files are replaced by the
    next install; the hint sent users to edit it there. A Hub recipe is edited by pushing a new one.
    """
    if str(source).startswith(HUB_SCHEME):
        return ""
    try:
        name = Path(source).resolve().relative_to(bundled_recipes_dir().resolve()).with_suffix("").as_posix()
    except (ValueError, OSError):
        return f" or set {key} in {source}"
    return f" or set {key} in a copy of the bundled recipe: s5 recipes cp {name} my.yaml"


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
    bundled = bundled_recipes()
    name = bundled_name(spec)
    # A folder is never a recipe: `mkdir breakfast` in the working folder hid the bundled `breakfast`.
    if Path(spec).exists() and not (Path(spec).is_dir() and name in bundled):
        return spec
    if name in bundled:
        return str(bundled[name])
    return spec  # load_recipe reports the missing file with a hint


def bundled_name(spec: str) -> str:
    """The bundled recipe name `spec` would be (`recipes/lvu/genre.yaml` -> lvu/genre), as the README spells
    recipes both ways."""
    name = spec[: -len(".yaml")] if spec.endswith(".yaml") else spec
    return name[len("recipes/"):] if name.startswith("recipes/") else name


def similar_bundled_recipes(spec: str, most: int = 5) -> list[str]:
    """Bundled recipe names a mistyped recipe may have meant: those in a folder of its name
    (`lvu`, `recipes/lvu.yaml` -> `lvu/genre`, ...), else close spellings (`lvu/genr` -> `lvu/genre`).

    Why: the README's `s5 finetune recipes/breakfast.yaml` invites `recipes/lvu.yaml`, but LVU's nine
    tasks are nine recipes in a folder."""
    import difflib

    names = list(bundled_recipes())
    path = Path(spec[: -len(".yaml")] if spec.endswith(".yaml") else spec)
    in_folder = [name for name in names if name.startswith(f"{path.name}/")]
    if in_folder:
        return in_folder[:most] + (["..."] if len(in_folder) > most else [])
    key = "/".join(path.parts[-2:]) if path.parent.name in {name.split("/")[0] for name in names} else path.name
    scored = sorted(((difflib.SequenceMatcher(None, key, name).ratio(), name) for name in names), reverse=True)
    # Only the close runners-up: `lvu/genr` means lvu/genre, not also lvu/year (0.94 against 0.75).
    return [name for ratio, name in scored[:3] if ratio >= max(0.6, scored[0][0] - 0.1)] if scored else []


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

    atomic_write_text(path, dump_recipe(recipe, recipe_header(recipe)))


def recipe_header(recipe: Recipe) -> str:
    """Where a resolved recipe came from: its file and, one per line, the overrides given with it.

    Why listed: the header said "and overrides" whether or not there were any, and not which.
    """
    source = getattr(recipe, "source", None)
    header = "Resolved s5cli recipe" + (f" (from {source})" if source else "")
    overrides = getattr(recipe, "overrides", ())
    if overrides:
        header += "\nwith overrides:" + "".join(f"\n  {item}" for item in overrides)
    return header


def model_config(recipe: Recipe) -> Any:
    """The typed config dataclass of `recipe.model` (e.g. S5Config), ready for `registry.build_model`."""
    model = recipe.model
    config_cls = getattr(model, "config_class", None) or model_config_class(model.name)
    return config_cls(**{f.name: getattr(model, f.name) for f in dataclasses.fields(config_cls)})
