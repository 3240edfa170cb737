"""Offline mode named by the variable that set it (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE)."""

from __future__ import annotations

from pathlib import Path

import pytest

from s5cli.errors import UserError
from s5cli.hub import pull_recipes, push_recipe, resolve_checkpoint_dir, resolve_recipe_path
from s5cli.hub.client import hub_settings
from tests.hub.fake_hub import FakeHub


def _transformers_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """TRANSFORMERS_OFFLINE=1 set before `s5` started: huggingface_hub is offline, HF_HUB_OFFLINE is unset."""
    from huggingface_hub import constants

    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_offline_errors_name_transformers_offline_when_it_is_the_one_set(
    hub: FakeHub, recipe_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
) -> None:
    hub.commit("bob/r", {"synthetic.yaml": recipe_file.read_bytes()})
    pull_recipes("bob/r", dest=tmp_path / "online")  # cached: offline, the listing comes from the cache
    seen = len(hub.requests)
    _transformers_offline(monkeypatch)
    for call in (lambda: resolve_recipe_path("hf://bob/r/other.yaml"),  # not cached
                 lambda: resolve_checkpoint_dir("bob/r"),
                 lambda: push_recipe(recipe_file, "bob/r")):
        with pytest.raises(UserError) as error:
            call()
        message = str(error.value)
        assert "offline (TRANSFORMERS_OFFLINE=1)" in message and "unset TRANSFORMERS_OFFLINE" in message, message
        assert "HF_HUB_OFFLINE" not in message
    pull_recipes("bob/r", dest=tmp_path / "offline")
    assert "offline (TRANSFORMERS_OFFLINE=1): bob/r@main listed from the Hub cache" in capsys.readouterr().err
    assert len(hub.requests) == seen


def test_offline_mode_follows_huggingface_hubs_order_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "yes")  # set after import: still offline
    settings = hub_settings()
    assert settings.offline and settings.offline_reason == "offline (TRANSFORMERS_OFFLINE=yes)"
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # the first variable set decides, as in huggingface_hub
    assert not hub_settings().offline
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    settings = hub_settings()
    assert settings.offline_reason == "offline (HF_HUB_OFFLINE=1)"
    assert settings.online_fix == "unset HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE"  # unsetting one is not enough


def test_the_hub_cache_is_where_huggingface_hub_puts_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """HUGGINGFACE_HUB_CACHE (the legacy name) was ignored when HF_HOME was set, and `$VAR` in HF_HUB_CACHE
    was not expanded: s5cli then looked for (and wrote) the cache elsewhere than huggingface_hub."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SCRATCHROOT", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", "$SCRATCHROOT/xdg")
    assert hub_settings().cache_dir == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", "$SCRATCHROOT/home")
    assert hub_settings().cache_dir == tmp_path / "home" / "hub"
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(tmp_path / "legacy"))
    assert hub_settings().cache_dir == tmp_path / "legacy"  # huggingface_hub's order: before HF_HOME
    monkeypatch.setenv("HF_HUB_CACHE", "$SCRATCHROOT/hub")
    assert hub_settings().cache_dir == tmp_path / "hub"
    monkeypatch.setenv("HOME", str(tmp_path / "me"))
    monkeypatch.setenv("HF_HUB_CACHE", "~/hub")
    assert hub_settings().cache_dir == tmp_path / "me" / "hub"


def test_the_time_limit_of_hub_requests_is_read_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    from s5cli.hub.client import request_timeout

    monkeypatch.delenv("HF_HUB_ETAG_TIMEOUT", raising=False)
    assert request_timeout() == constants.HF_HUB_ETAG_TIMEOUT
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "45")
    assert request_timeout() == 45
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "0")  # huggingface_hub's default, as it reads 0
    assert request_timeout() == constants.DEFAULT_ETAG_TIMEOUT
    for bad in ("soon", "-3", "inf"):
        monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", bad)
        with pytest.raises(UserError, match=r"HF_HUB_ETAG_TIMEOUT=.* is not a number of seconds"):
            request_timeout()
