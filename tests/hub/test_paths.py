"""Hub addresses: what `parse_hub_spec` reads back from what `HubSpec` writes, and '@' inside file names."""

from __future__ import annotations

import pytest

from s5cli.errors import UserError
from s5cli.hub.paths import HubSpec, parse_hub_spec


@pytest.mark.parametrize("revision", ["refs/pr/1", "feature/x", "v2", "a@b", "50%", None])
@pytest.mark.parametrize("path", ["", "recipe.yaml", "lvu/genre.yaml"])
def test_an_address_reads_back_as_written(revision: str | None, path: str) -> None:
    """Branch names with '/' were written raw (`@refs/pr/1`), which reads back as revision `refs`."""
    spec = HubSpec("bob/r", revision, path)
    assert parse_hub_spec(str(spec)) == spec


def test_a_slash_in_a_revision_is_url_encoded() -> None:
    assert str(HubSpec("bob/r", "refs/pr/1", "x.yaml")) == "hf://bob/r@refs%2Fpr%2F1/x.yaml"
    assert str(HubSpec("bob/r", "v1")) == "hf://bob/r@v1"


def test_an_at_sign_in_a_file_name_is_not_a_revision() -> None:
    assert parse_hub_spec("hf://bob/r/genre@v2.yaml") == HubSpec("bob/r", None, "genre@v2.yaml")
    assert parse_hub_spec("hf://bob/r@v1/lvu/genre@v2.yaml") == HubSpec("bob/r", "v1", "lvu/genre@v2.yaml")
    with pytest.raises(UserError, match="empty revision after '@'"):
        parse_hub_spec("hf://bob/r@/genre@v2.yaml")
