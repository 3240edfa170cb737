"""`s5 recipes ...`: list and copy the bundled recipes; pull and push recipes from/to the Hugging Face Hub."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from s5cli.cli.help_text import PlainFlagCommand, PlainFlagGroup, command_help, flag

app = typer.Typer(cls=PlainFlagGroup, help="List, copy, pull and push recipes.", no_args_is_help=True)


@app.command("ls", cls=PlainFlagCommand)
def list_recipes() -> None:
    """List the recipes that ship with s5cli: name, dataset, model and what each one is for."""
    from rich.table import Table

    from s5cli.cli.console import stdout
    from s5cli.recipe import bundled_recipes

    table = Table(title="bundled recipes (copy one with `s5 recipes cp NAME DEST`)", title_justify="left")
    for column in ("name", "dataset", "model", "description"):
        table.add_column(column, overflow="fold", no_wrap=column != "description")
    for name, path in bundled_recipes().items():
        dataset, model, description = describe_recipe_file(path)
        table.add_row(name, dataset, model, description)
    stdout.print(table)


@app.command("show", cls=PlainFlagCommand, no_args_is_help=True)
def show_recipe(
    recipe: str = typer.Argument(..., help="Recipe: a path, a bundled name like synthetic or lvu/genre, or hf://repo/file."),
    overrides: list[str] | None = typer.Argument(None, help="key=value overrides, as for finetune and pretrain."),
) -> None:
    """Print the resolved recipe a run would use: every default filled in, overrides applied, all validated.

    The same YAML a run saves as RUN/recipe.yaml, so it can be edited and run as it is:

      s5 recipes show synthetic train.accumulate=2
      s5 recipes show lvu/genre > genre.yaml
    """
    from s5cli.cli.console import print_warning
    from s5cli.errors import UserError
    from s5cli.recipe import check_data_paths, dump_recipe, load_recipe_spec, recipe_header

    loaded = load_recipe_spec(recipe, overrides or [])
    typer.echo(dump_recipe(loaded, recipe_header(loaded)), nl=False)
    try:
        check_data_paths(loaded)
    except UserError as error:  # the recipe is valid; its data is just not on this machine (yet)
        print_warning(f"a run would stop here: {error}")


@app.command("cp", cls=PlainFlagCommand)
def copy_recipe(
    name: str = typer.Argument(..., help="Bundled recipe name (see `s5 recipes ls`), e.g. synthetic or lvu/genre."),
    dest: str = typer.Argument(..., help="Destination file, an existing folder to copy into (DIR/ for a folder), or "
                               "- for standard output."),
    force: bool = flag(False, "--force", "-f", help="Overwrite an existing file."),
) -> None:
    """Copy a bundled recipe to DEST so that you can edit it (`-`: print it, comments and all)."""
    from s5cli.cli.console import stderr
    from s5cli.errors import UserError
    from s5cli.io import atomic_write_bytes, refuse_streams_and_devices
    from s5cli.recipe import bundled_recipes

    key = _bundled_recipe_named(name)
    source = bundled_recipes()[key]
    if dest == "-":  # as elsewhere `-` is standard output; once it wrote a file named `-`
        typer.echo(source.read_text(encoding="utf-8"), nl=False)
        return
    if not dest.strip():  # Path("") is the working folder: `cp synthetic ""` wrote ./synthetic.yaml
        raise UserError('DEST "" names no file: give a file, a folder to copy into, or - for standard output')
    folder = Path(dest)
    # A trailing slash means a folder (Path drops it): `cp synthetic new/` once wrote a file named `new`.
    target = folder / f"{Path(key).name}.yaml" if folder.is_dir() or dest.endswith(("/", os.sep)) else folder
    if target.is_dir():
        raise UserError(f"{target} is a folder: name a file, or a folder without a {target.name} in it")
    refuse_streams_and_devices(target, "recipes cp")
    if target.exists() and not force:
        raise UserError(f"{target} already exists: pass --force to overwrite it")
    if target.parent.exists() and not target.parent.is_dir():
        raise UserError(f"{target.parent} is a file, not a folder: choose another destination")
    if not target.parent.is_dir():
        raise UserError(f"folder {target.parent} does not exist: create it first")
    atomic_write_bytes(target, source.read_bytes(), follow_symlinks=True)
    stderr.print(f"copied recipe {key} to {target}")


def _bundled_recipe_named(name: str) -> str:
    """The bundled recipe `name` means, spelled as `show` and `finetune` take it (`recipes/synthetic.yaml`);
    UserError naming the recipes it may have meant (`lvu`: the nine in lvu/, as `recipes show lvu` does)."""
    from s5cli.errors import UserError
    from s5cli.recipe import bundled_name, bundled_recipes, similar_bundled_recipes

    key = bundled_name(name)
    if key in bundled_recipes():
        return key
    similar = similar_bundled_recipes(key)
    if len(similar) > 1:
        raise UserError(f"no bundled recipe named {name!r}; bundled recipes of a similar name: {', '.join(similar)}",
                        hint="`s5 recipes ls` lists them all")
    raise UserError(f"no bundled recipe named {name!r}",
                    hint=f"did you mean {similar[0]!r}?" if similar else "`s5 recipes ls` lists them")


def describe_recipe_file(path: Path) -> tuple[str, str, str]:
    """(dataset, model, first line of the top comment) of a recipe file, without validating it."""
    import yaml

    text = path.read_text(encoding="utf-8")
    description = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("#"):
            break
        if stripped.strip("# "):
            description = stripped.lstrip("#").strip()
            break
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError:
        return "?", "?", description or "(invalid YAML)"
    raw = raw if isinstance(raw, dict) else {}
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    model = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    dataset = str(data.get("dataset", "synthetic"))
    if data.get("task"):
        dataset += f" / {data['task']}"
    objective = (raw.get("train") or {}).get("objective") if isinstance(raw.get("train"), dict) else None
    model_name = str(model.get("name", "s5")) + (" + LSMCL" if objective == "lsmcl" else "")
    return dataset, model_name, description


@app.command("pull", cls=PlainFlagCommand, no_args_is_help=True)
def pull_recipes(
    repo_id: str = typer.Argument(..., help="Hub repo OWNER/NAME (or hf://OWNER/NAME\\[@REV]\\[/file.yaml])."),
    name: str | None = typer.Argument(None, help="One recipe file in the repo, e.g. lvu/genre.yaml (default: all)."),
    revision: str | None = typer.Option(None, "--revision", help="Branch, tag or commit to pull from."),
    dest: Path = typer.Option(Path("recipes"), "--dest", help="Folder to write into (repo sub-folders kept)."),
    force: bool = flag(False, "--force", "-f", help="Overwrite existing local files."),
) -> None:
    """Download recipe YAMLs from a Hub repo; each is validated before anything is written.

    Works offline from the Hub cache with HF_HUB_OFFLINE=1.
    """
    from s5cli.cli.console import stderr
    from s5cli.hub import pull_recipes as pull

    for path in pull(repo_id, name, revision=revision, dest=dest, force=force):
        stderr.print(f"pulled {path}")


@app.command("push", cls=PlainFlagCommand, no_args_is_help=True)
def push_recipe(
    # A str, not a Path: a Path folds `//`, and an hf:// address given by mistake was then printed as hf:/...
    recipe: str = typer.Argument(..., help="Local recipe YAML or a bundled name (validated before upload)."),
    repo_id: str | None = typer.Argument(
        None, help="Hub repo OWNER/NAME, created if it does not exist (default: the recipe's hub.repo_id)."),
    private: bool = flag(False, "--private", help="Create the repo as private; refused if it exists and is public."),
    message: str | None = typer.Option(None, "--message", "-m", help="Commit message."),
    revision: str | None = typer.Option(
        None, "--revision", help="Branch to commit to, created if missing. Default: the recipe's hub.revision "
        "when the push goes to its hub.repo_id (REPO_ID omitted or that repo), otherwise main."),
    path_in_repo: str | None = typer.Option(None, "--path-in-repo", help="File name in the repo (default: RECIPE's)."),
) -> None:
    """Upload a recipe (bytes unchanged) to a Hub repo, with a README card if the repo has none.

    Needs a token: set HF_TOKEN or run `hf auth login`.
    """
    from s5cli.cli.console import stderr, stdout
    from s5cli.hub import push_recipe as push

    result = push(recipe, repo_id, private=private, message=message, revision=revision, path_in_repo=path_in_repo)
    stderr.print(f"pushed {', '.join(result.files)} to {result.repo_id}@{result.revision}")
    stdout.print(result.commit_url, soft_wrap=True)


# Format every subcommand's docstring like the top-level commands' (prose joined, example lines kept).
for _info in app.registered_commands:
    _info.help = command_help(_info.callback.__doc__ if _info.callback else None)
