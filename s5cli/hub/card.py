"""Model cards (README.md with YAML front matter) for pushed checkpoints and recipes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import yaml

from s5cli import __version__
from s5cli.hub.paths import quote_revision

TAGS = ["s5cli", "video-classification", "state-space-model", "s4", "long-form-video"]
_MODEL_TAGS = {"s5": ["s5", "token-selection"], "s4": ["vis4mer"], "transformer": ["video-transformer"]}
# metrics.json key -> (Hub metric type, human name); confusion matrices and counts stay out of the card.
_METRICS = {"top1": ("accuracy", "top-1 accuracy"), "top5": ("top_5_accuracy", "top-5 accuracy"),
            "mse": ("mse", "mean squared error")}
_DATASET_NAMES = {"lvu": "LVU", "breakfast": "Breakfast", "coin": "COIN", "synthetic": "s5cli synthetic"}


def _front_matter(meta: Mapping[str, Any]) -> str:
    return "---\n" + yaml.safe_dump(dict(meta), sort_keys=False, allow_unicode=True) + "---\n"


def _dataset(recipe: Mapping[str, Any]) -> tuple[str, str]:
    """(id, display name) of the recipe's dataset, e.g. ("lvu", "LVU genre")."""
    data = recipe.get("data") or {}
    dataset = str(data.get("dataset") or "synthetic")
    name = _DATASET_NAMES.get(dataset, dataset)
    if data.get("task"):
        name += f" {data['task']}"
    return dataset, name


def _command(recipe: Mapping[str, Any]) -> str:
    objective = (recipe.get("train") or {}).get("objective", "supervised")
    return "pretrain" if objective == "lsmcl" else "finetune"


def _rev(revision: str | None) -> str:
    """`@REV` for an hf:// address (URL-encoded: `refs/pr/1` -> `refs%2Fpr%2F1`), empty for main."""
    return f"@{quote_revision(revision)}" if revision and revision != "main" else ""


def _is_pretraining(metadata: Mapping[str, str], recipe: Mapping[str, Any]) -> bool:
    """An LSMCL pretraining checkpoint: its head was never trained, so `s5 eval` refuses it."""
    return metadata.get("objective") == "lsmcl" or _command(recipe) == "pretrain"


def checkpoint_card(
    repo_id: str, metadata: Mapping[str, str], metrics: Mapping[str, Any] | None, revision: str | None = None,
) -> str:
    """README.md for a pushed checkpoint: front matter, metrics table, reproduce and use commands."""
    recipe = json.loads(metadata.get("recipe") or "{}")
    model_name = metadata.get("model_name") or (recipe.get("model") or {}).get("name", "s5")
    dataset, dataset_name = _dataset(recipe)
    rev = _rev(revision)
    pretraining = _is_pretraining(metadata, recipe)
    scored = {k: float(v) for k, v in (metrics or {}).items() if k in _METRICS and isinstance(v, (int, float))}
    on_test = not pretraining and validated_on_test(recipe)
    split = _split_name(metrics, on_test)
    front: dict[str, Any] = {
        "library_name": "s5cli",
        "tags": TAGS + _MODEL_TAGS.get(str(model_name), [str(model_name)]),
        "datasets": [dataset],
    }
    if scored or not pretraining:  # pretraining scores nothing the Hub lists: no empty `metrics: []`
        front["metrics"] = [_METRICS[k][0] for k in scored]
    if scored:
        front["model-index"] = [{
            "name": repo_id.split("/")[-1],
            "results": [{
                "task": ({"type": "video-classification", "name": "Video classification"} if "mse" not in scored
                         else {"type": "other", "name": "Video regression"}),
                "dataset": {"name": dataset_name, "type": dataset, "split": str(split)},
                "metrics": [{"type": _METRICS[k][0], "value": round(v, 6), "name": f"{split} {_METRICS[k][1]}"}
                            for k, v in scored.items()],
            }],
        }]
    command = _command(recipe)
    lines = [
        _front_matter(front),
        f"# {repo_id.split('/')[-1]}",
        "",
        f"Video model `{model_name}` on {dataset_name}, trained with "
        f"s5cli {__version__} (S5: selective structured state-spaces for "
        "long-form video, CVPR 2023). Weights are safetensors only.",
        "",
        _step_line(metadata, pretraining),
        *_classes_line(metadata),
        *(["", SELECTED_ON_TEST] if on_test else []),
    ]
    if scored:
        lines += ["", f"| metric ({split}) | value |", "|---|---|"]
        lines += [f"| {_METRICS[k][1]} | {v:.4f} |" for k, v in scored.items()]
    lines += [
        "",
        "## Reproduce",
        "",
        "The exact resolved recipe is `recipe.yaml` in this repo:",
        "",
        "```bash",
        f"s5 {command} hf://{repo_id}{rev}/recipe.yaml",
        "```",
        *_init_lines(recipe, command, f"hf://{repo_id}{rev}/recipe.yaml"),
        "",
        "## Use",
        "",
        *_use_lines(f"hf://{repo_id}{rev}", pretraining),
        "",
    ]
    return "\n".join(lines)


SELECTED_ON_TEST = (
    "The training recipe held no val split out of train (data.val_fraction=0), so the dataset's test split "
    "served as val: model selection (best checkpoint, plateau schedule, early stopping) used the test videos, "
    "and test scores of this model are not a clean held-out result. Set data.val_fraction (e.g. 0.1) to hold "
    "val out of train."
)


def validated_on_test(recipe: Mapping[str, Any]) -> bool:
    """Whether the run chose its checkpoint on test videos: a dataset without a val split of its own (Breakfast,
    COIN) and no data.val_fraction, the case the trainer warns about (the dataset's `val_split_warning`)."""
    from s5cli.data.datasets import adapter
    from s5cli.errors import UserError

    data = recipe.get("data") or {}
    try:
        check = getattr(adapter(data.get("dataset") or "synthetic"), "val_split_warning", None)
    except UserError:  # a dataset this version does not know: nothing can be said
        return False
    return check is not None and check(data) is not None


def _split_name(metrics: Mapping[str, Any] | None, on_test: bool) -> str:
    """The split the card's scores are on: the one `s5 eval` recorded, else the trainer's validation pass;
    "test" where that val split is the test split.

    Why: a Breakfast or COIN card said "validation" for scores on the test videos, which the model was
    also selected on.
    """
    split = str((metrics or {}).get("split") or "validation")
    return "test" if on_test and split in ("val", "validation") else split


def _step_line(metadata: Mapping[str, str], pretraining: bool) -> str:
    """`- step: N, outputs: K`; without the outputs for pretraining, whose head is untrained."""
    step = f"- step: {metadata.get('step', '?')}"
    return step if pretraining else f"{step}, outputs: {metadata.get('num_outputs', '?')}"


def _use_lines(address: str, pretraining: bool) -> list[str]:
    """The commands that use the checkpoint: eval it, or for pretraining, finetune from it.

    Why: `s5 eval` refuses an LSMCL checkpoint (its classifier head was never trained), so a card telling
    readers to eval one sent every reader into that refusal.
    """
    if pretraining:
        return [
            "An LSMCL pretraining checkpoint: its classifier head is untrained, so finetune from it on your task "
            "(RECIPE: a recipe file, a bundled name such as `lvu/genre`, or an hf:// address) and use that run:",
            "",
            "```bash",
            f"s5 finetune RECIPE train.init={address}",
            "```",
        ]
    return ["```bash", f"s5 eval --checkpoint {address}", f"s5 eval --checkpoint {address} --video movie.mp4", "```"]


def _init_lines(recipe: Mapping[str, Any], command: str, recipe_url: str) -> list[str]:
    """What the reproduce command needs besides the recipe: the checkpoint `train.init` started from.

    Why: a local `train.init` (a pretraining run folder) is a path on the machine that trained, so the
    command above fails anywhere else with "no such local checkpoint folder"; a Hub one is fetched.
    """
    init = (recipe.get("train") or {}).get("init")
    if not init:
        return []
    init = str(init)
    if init.startswith("hf://"):
        return ["", f"It starts from the weights of `{init}`, which the command fetches from the Hub."]
    return [
        "",
        f"It starts from the weights of `train.init: {init}`. Unless that names a Hub repo, it is a folder on "
        "the machine that trained this model: pretrain it first, or point `train.init` at your copy:",
        "",
        "```bash",
        f"s5 {command} {recipe_url} train.init=PATH/TO/CHECKPOINT",
        "```",
    ]


def _classes_line(metadata: Mapping[str, str], shown: int = 20) -> list[str]:
    """`- classes (N): a, b, …` from the task the checkpoint stores, so readers see what the outputs mean."""
    from s5cli.train.checkpoint_metadata import stored_task

    if metadata.get("objective") == "lsmcl":  # pretraining never trains the head: its outputs mean nothing yet
        return []
    task = stored_task(metadata)
    names = (task or {}).get("class_names")
    if not names:
        return []
    more = f", … and {len(names) - shown} more" if len(names) > shown else ""
    return [f"- classes ({len(names)}): {', '.join(names[:shown])}{more}"]


def recipe_card(repo_id: str, recipe: Mapping[str, Any], filename: str, revision: str | None = None) -> str:
    """README.md for a repo of recipes: front matter and the commands to pull and run one."""
    dataset, dataset_name = _dataset(recipe)
    model_name = (recipe.get("model") or {}).get("name", "s5")
    rev = _rev(revision)
    front = {"library_name": "s5cli", "tags": [*TAGS, "recipe"], "datasets": [dataset]}
    return "\n".join([
        _front_matter(front),
        f"# {repo_id.split('/')[-1]}",
        "",
        f"s5cli recipes (YAML, validated on pull). `{filename}`: `{model_name}` on {dataset_name}.",
        "",
        "```bash",
        f"s5 recipes pull {repo_id} {filename}{' --revision ' + revision if rev else ''}",
        f"s5 {_command(recipe)} hf://{repo_id}{rev}/{filename}",
        "```",
        "",
    ])
