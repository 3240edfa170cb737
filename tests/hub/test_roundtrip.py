"""Push a recipe and a checkpoint to the fake Hub with the real client, pull them back, compare."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import yaml

from s5cli.hub import pull_recipes, push_checkpoint, push_recipe, resolve_checkpoint_dir, resolve_recipe_path
from tests.hub.fake_hub import FakeHub

# huggingface_hub's LFS upload passes a file object as `data=`, which httpx2 flags as deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_recipe_push_then_pull_gives_the_same_bytes(hub: FakeHub, recipe_file: Path, tmp_path: Path) -> None:
    result = push_recipe(recipe_file, "alice/recipes", message="first recipe")
    assert result.files == ["README.md", "synthetic.yaml"]
    assert hub.files("alice/recipes")["synthetic.yaml"] == recipe_file.read_bytes()
    card = hub.files("alice/recipes")["README.md"].decode()
    assert card.startswith("---\n") and "library_name: s5cli" in card
    assert "s5 finetune hf://alice/recipes/synthetic.yaml" in card

    dest = tmp_path / "pulled"
    written = pull_recipes("alice/recipes", dest=dest)
    assert written == [(dest / "synthetic.yaml").resolve()]
    assert written[0].read_bytes() == recipe_file.read_bytes()
    # hf:// address of one file: the cached download, same bytes
    cached = resolve_recipe_path("hf://alice/recipes/synthetic.yaml")
    assert cached.read_bytes() == recipe_file.read_bytes()
    assert str(cached).startswith(str(tmp_path / "hf-cache"))


def test_second_recipe_push_keeps_the_existing_card(hub: FakeHub, recipe_file: Path) -> None:
    push_recipe(recipe_file, "alice/recipes")
    hub.commit("alice/recipes", {"README.md": b"# my own card\n"})
    push_recipe(recipe_file, "alice/recipes", path_in_repo="lvu/other.yaml")
    files = hub.files("alice/recipes")
    assert files["README.md"] == b"# my own card\n"
    assert files["lvu/other.yaml"] == recipe_file.read_bytes()


def test_pull_one_named_recipe_into_subfolder(hub: FakeHub, recipe_file: Path, tmp_path: Path) -> None:
    hub.commit("bob/r", {"lvu/genre.yaml": recipe_file.read_bytes(), "other.yaml": recipe_file.read_bytes()})
    written = pull_recipes("bob/r", "lvu/genre", dest=tmp_path / "d")
    assert written == [(tmp_path / "d" / "lvu" / "genre.yaml").resolve()]
    assert not (tmp_path / "d" / "other.yaml").exists()


def test_pull_never_overwrites_without_force(hub: FakeHub, recipe_file: Path, tmp_path: Path) -> None:
    from s5cli.errors import UserError

    hub.commit("bob/r", {"synthetic.yaml": recipe_file.read_bytes()})
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "synthetic.yaml").write_text("# mine\n")
    with pytest.raises(UserError, match=r"already exists.*--force"):
        pull_recipes("bob/r", dest=dest)
    assert (dest / "synthetic.yaml").read_text() == "# mine\n"
    pull_recipes("bob/r", dest=dest, force=True)
    assert (dest / "synthetic.yaml").read_bytes() == recipe_file.read_bytes()


def test_revision_pinning(hub: FakeHub, recipe_file: Path, tmp_path: Path) -> None:
    old = recipe_file.read_bytes()
    first = hub.commit("bob/r", {"synthetic.yaml": old})
    new = re.sub(rb"epochs: \d+", b"epochs: 3", old, count=1)
    assert new != old
    hub.commit("bob/r", {"synthetic.yaml": new})
    assert pull_recipes("bob/r", dest=tmp_path / "a")[0].read_bytes() == new
    assert pull_recipes("bob/r", revision=first, dest=tmp_path / "b")[0].read_bytes() == old
    assert resolve_recipe_path(f"hf://bob/r@{first}/synthetic.yaml").read_bytes() == old


def test_checkpoint_push_pull_same_bytes_and_same_outputs(hub: FakeHub, run_dir: Path) -> None:
    import torch

    from s5cli.recipe import load_recipe_text
    from s5cli.train.loading import load_trained_model
    from s5cli.train.metrics import compute_metrics

    result = push_checkpoint(run_dir, "alice/s5-tiny", message="tiny")
    assert result.files == ["README.md", "metrics.json", "model.safetensors", "recipe.yaml"]
    remote = hub.files("alice/s5-tiny")
    assert not any(name.startswith("trainer_state") for name in remote)  # optimizer only with --with-optimizer
    best = run_dir / "best"
    assert remote["model.safetensors"] == (best / "model.safetensors").read_bytes()
    # like on the real Hub, the weights travelled through the LFS batch API, the small files inline
    assert [p for m, p in hub.requests if m == "PUT"] == [f"/lfs-upload/{sha256(remote['model.safetensors'])}"]

    card = remote["README.md"].decode()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["library_name"] == "s5cli" and "s5" in front["tags"] and front["datasets"] == ["synthetic"]
    values = {m["type"]: m["value"] for m in front["model-index"][0]["results"][0]["metrics"]}
    assert values == {"accuracy": 0.375, "top_5_accuracy": 0.875}
    assert "s5 finetune hf://alice/s5-tiny/recipe.yaml" in card
    stored = load_recipe_text(remote["recipe.yaml"].decode(), "recipe.yaml")  # a valid recipe
    assert stored.model.d_model == 16

    local = resolve_checkpoint_dir("hf://alice/s5-tiny")
    for name in ("model.safetensors", "metrics.json"):
        assert (local / name).read_bytes() == (best / name).read_bytes()
    assert json.loads((local / "metrics.json").read_text())["top1"] == 0.375

    original, _, _ = load_trained_model(best)
    pulled, recipe, meta = load_trained_model("hf://alice/s5-tiny")  # through s5cli.train.loading
    assert meta["step"] == "7" and recipe["model"]["d_model"] == 16
    torch.manual_seed(1)
    tokens, labels = torch.randn(6, 4, 37, 96), torch.tensor([0, 1, 2, 3, 4, 5])
    with torch.no_grad():
        expected, got = original(tokens), pulled(tokens)
    assert torch.equal(expected, got)
    assert compute_metrics(got, labels, "classification", 9) == compute_metrics(expected, labels, "classification", 9)


def test_push_with_optimizer_and_bare_repo_id(hub: FakeHub, run_dir: Path) -> None:
    from s5cli.train.resume_point import apply_resume_point, read_resume_point

    step_dir = run_dir / "checkpoints" / "step-0000007"
    push_checkpoint(step_dir, "alice/resumable", with_optimizer=True, revision="exp1")
    assert "trainer_state.safetensors" in hub.files("alice/resumable", "exp1")
    assert "model.safetensors" not in hub.files("alice/resumable", "main")  # pushed to the branch only
    local = resolve_checkpoint_dir("alice/resumable", revision="exp1")
    assert (local / "trainer_state.json").read_bytes() == (step_dir / "trainer_state.json").read_bytes()
    import torch

    from s5cli.models.registry import build_model
    from tests.hub.conftest import TINY_MODEL

    model = build_model("s5", {k: v for k, v in TINY_MODEL.items() if k != "name"}, 9)
    state, _ = apply_resume_point(read_resume_point(local), torch.optim.AdamW(model.parameters(), lr=1e-3))
    assert state.step == 7


def test_run_folder_without_best_pushes_latest(hub: FakeHub, run_dir: Path) -> None:
    import shutil

    shutil.rmtree(run_dir / "best")
    push_checkpoint(run_dir, "alice/latest")
    latest = run_dir / "checkpoints" / "step-0000007" / "model.safetensors"
    assert hub.files("alice/latest")["model.safetensors"] == latest.read_bytes()


def _later_step_checkpoint(run_dir: Path, step: int) -> Path:
    """What a later epoch adds to a run: a step checkpoint with other weights, named by `latest` (best/ stays)."""
    import torch

    from s5cli.models.registry import build_model
    from s5cli.train import checkpoint as ckpt
    from s5cli.train.checkpoint_metadata import read_metadata
    from s5cli.train.checkpoint_paths import set_latest
    from s5cli.train.checkpoint_weights import load_into, load_state
    from tests.hub.conftest import TINY_MODEL

    model = build_model("s5", {k: v for k, v in TINY_MODEL.items() if k != "name"}, 9)
    load_into(model, load_state(run_dir / "best"), "best")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(2, 4, 37, 96)).sum().backward()
    optimizer.step()
    metadata = {**read_metadata(run_dir / "best"), "step": str(step)}
    metadata.pop("format")
    path = ckpt.save_checkpoint(run_dir / "checkpoints" / f"step-{step:07d}", model, metadata, optimizer, {},
                                ckpt.TrainerState(step=step, epoch=2), {"top1": 0.25})
    set_latest(run_dir, path)
    return path


def test_run_folder_with_optimizer_pushes_the_latest_step_checkpoint(hub: FakeHub, run_dir: Path) -> None:
    """best/ never holds a trainer state, so a resumable push of a run is its newest step checkpoint."""
    import torch

    from s5cli.models.registry import build_model
    from s5cli.train.resume_point import apply_resume_point, read_resume_point
    from tests.hub.conftest import TINY_MODEL

    step_dir = _later_step_checkpoint(run_dir, 9)
    result = push_checkpoint(run_dir, "alice/resume-run", with_optimizer=True)
    assert result.source == step_dir
    remote = hub.files("alice/resume-run")
    for name in ("model.safetensors", "trainer_state.safetensors", "trainer_state.json", "metrics.json"):
        assert remote[name] == (step_dir / name).read_bytes(), name
    assert remote["model.safetensors"] != (run_dir / "best" / "model.safetensors").read_bytes()
    local = resolve_checkpoint_dir("alice/resume-run")
    model = build_model("s5", {k: v for k, v in TINY_MODEL.items() if k != "name"}, 9)
    state, _ = apply_resume_point(read_resume_point(local), torch.optim.AdamW(model.parameters(), lr=1e-3))
    assert state.step == 9 and state.epoch == 2

    # Without --with-optimizer a run still means its best weights; without a `latest` file, the newest step.
    assert push_checkpoint(run_dir, "alice/best-run").source == run_dir / "best"
    assert hub.files("alice/best-run")["model.safetensors"] == (run_dir / "best" / "model.safetensors").read_bytes()
    (run_dir / "latest").unlink()
    assert push_checkpoint(run_dir, "alice/no-pointer", with_optimizer=True).source == step_dir


def test_hf_recipe_address_through_the_trainer(hub: FakeHub, recipe_file: Path) -> None:
    from s5cli.train.job import recipe_objects

    first = hub.commit("bob/r", {"synthetic.yaml": recipe_file.read_bytes()})
    hub.commit("bob/r", {"synthetic.yaml": re.sub(rb"epochs: \d+", b"epochs: 3", recipe_file.read_bytes(), count=1)})
    assert recipe_objects("hf://bob/r/synthetic.yaml", ["train.seed=5"], None).train.epochs == 3
    pinned = recipe_objects(f"hf://bob/r@{first}/synthetic.yaml", [], None)
    original = yaml.safe_load(recipe_file.read_text())["train"]["epochs"]
    assert original != 3 and pinned.train.epochs == original
