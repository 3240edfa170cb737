"""Hub client settings read at call time (endpoint, cache, offline, token) and one-line error translation.

huggingface_hub reads HF_ENDPOINT / HF_HUB_CACHE / HF_HUB_OFFLINE once, when it is imported. s5cli reads
them again on every call and passes them explicitly, so a setting changed after import (tests, notebooks)
is honoured the same way as one set before `s5` started.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from s5cli.errors import RunFailure, UserError, first_line

TOKEN_FIX = "set HF_TOKEN or run `hf auth login` (formerly `huggingface-cli login`)"
_TRUE = {"1", "on", "yes", "true"}


@dataclass(frozen=True)
class HubSettings:
    """Where the Hub is, where its cache lives and whether the network may be used."""

    endpoint: str
    cache_dir: Path
    offline: bool


def hub_settings() -> HubSettings:
    """Current settings: environment first, huggingface_hub's import-time constants as the fallback."""
    from huggingface_hub import constants

    endpoint = (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
    if os.environ.get("HF_HUB_CACHE"):
        cache = Path(os.environ["HF_HUB_CACHE"])
    elif os.environ.get("HF_HOME"):
        cache = Path(os.environ["HF_HOME"]) / "hub"
    else:
        cache = Path(constants.HF_HUB_CACHE)
    flag = os.environ.get("HF_HUB_OFFLINE")
    offline = flag.strip().lower() in _TRUE if flag is not None else bool(constants.HF_HUB_OFFLINE)
    return HubSettings(endpoint, cache.expanduser(), offline)


def require_token(action: str) -> str:
    """The user's Hub token (HF_TOKEN or the saved login); UserError naming the fix when there is none."""
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise UserError(f"{action} needs a Hugging Face token: {TOKEN_FIX}")
    return token


def optional_token() -> str | None:
    """The saved token if any (private repos download with it; public ones need none)."""
    from huggingface_hub import get_token

    return get_token() or None


@contextlib.contextmanager
def hub_errors(repo_id: str, revision: str | None, file: str | None = None, *, writing: bool = False) -> Iterator[None]:
    """Turn huggingface_hub / network exceptions into one-line UserError / RunFailure naming repo, revision, file."""
    from huggingface_hub import errors as hf

    rev = revision or "main"
    what = f"{repo_id}@{rev}" + (f" file {file!r}" if file else "")
    try:
        yield
    except (UserError, RunFailure):
        raise
    except hf.GatedRepoError:
        raise UserError(f"Hub repo {repo_id} is gated: accept its conditions on the Hub, then {TOKEN_FIX}") from None
    except hf.RepositoryNotFoundError:
        raise UserError(
            f"Hub repo {repo_id} not found (or private): check the repo id, or for a private repo {TOKEN_FIX}"
        ) from None
    except hf.RevisionNotFoundError:
        raise UserError(
            f"revision {rev!r} not found in Hub repo {repo_id}: pass an existing branch, tag or commit to --revision"
        ) from None
    except hf.RemoteEntryNotFoundError:
        raise UserError(f"{what}: file not found in the Hub repo: check the path (`hf ls` lists the files)") from None
    except (hf.LocalEntryNotFoundError, hf.OfflineModeIsEnabled) as error:
        if hub_settings().offline:
            raise UserError(
                f"offline (HF_HUB_OFFLINE=1) and {what} is not in the Hub cache: "
                "unset HF_HUB_OFFLINE to download it, or pull it once while online"
            ) from None
        raise RunFailure(f"cannot reach the Hub for {what} and it is not cached: {first_line(error)}") from None
    except hf.HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status in (401, 403):
            verb = "write to" if writing else "read"
            raise UserError(f"not allowed to {verb} Hub repo {repo_id} (HTTP {status}): {TOKEN_FIX}") from None
        raise RunFailure(f"Hub request for {what} failed: {first_line(error)}") from None
    except OSError as error:
        raise RunFailure(f"cannot reach the Hub for {what}: {first_line(error)}") from None
    except Exception as error:
        # huggingface_hub's HTTP layer (httpx2 / httpcore) raises its own transport errors.
        if type(error).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore"):
            raise RunFailure(f"cannot reach the Hub for {what}: {first_line(error)}") from None
        raise
