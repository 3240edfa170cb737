"""Hub client settings read at call time (endpoint, cache, offline, token) and one-line error translation.

huggingface_hub reads HF_ENDPOINT / HF_HUB_CACHE / HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) once, when it is imported. s5cli reads
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
# The variables huggingface_hub reads for offline mode, in its order: the first one set (non-empty) decides.
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


@dataclass(frozen=True)
class HubSettings:
    """Where the Hub is, where its cache lives and whether the network may be used."""

    endpoint: str
    cache_dir: Path
    offline: bool
    offline_setting: str = "HF_HUB_OFFLINE=1"  # the variable that made it offline, as `NAME=value`

    @property
    def offline_reason(self) -> str:
        """`offline (TRANSFORMERS_OFFLINE=1)`: messages name the variable actually set, not always HF_HUB_OFFLINE."""
        return f"offline ({self.offline_setting})"

    @property
    def online_fix(self) -> str:
        """How to go online again: unset every variable that turns offline mode on.

        Why every one: with both set, unsetting HF_HUB_OFFLINE alone lets TRANSFORMERS_OFFLINE decide, so the
        user stayed offline after following the advice.
        """
        names = [name for name in OFFLINE_VARIABLES if (os.environ.get(name) or "").strip().lower() in _TRUE]
        return "unset " + " and ".join(names or [self.offline_setting.split("=")[0]])


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
    offline, setting = _offline_mode(bool(constants.HF_HUB_OFFLINE))
    return HubSettings(endpoint, cache.expanduser(), offline, setting)


def _offline_mode(imported: bool) -> tuple[bool, str]:
    """(offline?, `NAME=value` of the variable deciding it), as huggingface_hub reads them, but at call time.

    Why TRANSFORMERS_OFFLINE: huggingface_hub honours it too, and messages that told the user to unset
    HF_HUB_OFFLINE, which was not set, left them offline. `imported` is huggingface_hub's import-time value,
    used when neither variable is set now.
    """
    for name in OFFLINE_VARIABLES:
        value = os.environ.get(name)
        if value:
            return value.strip().lower() in _TRUE, f"{name}={value.strip()}"
    return imported, "HF_HUB_OFFLINE=1"


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
        settings = hub_settings()
        if settings.offline:
            raise UserError(
                f"{settings.offline_reason} and {what} is not in the Hub cache: "
                f"{settings.online_fix} to download it, or pull it once while online"
            ) from None
        raise RunFailure(f"cannot reach the Hub for {what} and it is not cached: {first_line(error)}") from None
    except hf.HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status in (401, 403):
            raise _refusal(repo_id, status, writing) from None
        raise RunFailure(f"Hub request for {what} failed: {first_line(error)}") from None
    except OSError as error:
        if error.filename is not None:  # a local file (an upload's source), not the network
            raise _local_file_error(error) from None
        raise RunFailure(f"cannot reach the Hub for {what}: {first_line(error)}") from None
    except Exception as error:
        # huggingface_hub's HTTP layer (httpx2 / httpcore) raises its own transport errors.
        if type(error).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore"):
            raise RunFailure(f"cannot reach the Hub for {what}: {first_line(error)}") from None
        raise


def _refusal(repo_id: str, status: int, writing: bool) -> UserError:
    """The fix for a 401/403: log in when there is no token; otherwise say what the token lacks.

    Why: a 403 on push told a user who was logged in to log in; their token was read-only, or the repo is
    in a namespace they cannot write to. The token itself is never printed.
    """
    verb = "write to" if writing else "read"
    if optional_token() is None:
        return UserError(f"not allowed to {verb} Hub repo {repo_id} (HTTP {status}): {TOKEN_FIX}")
    if status == 401:  # a token the Hub does not accept (mistyped, revoked, expired)
        return UserError(f"the Hub did not accept your Hugging Face token for {repo_id} (HTTP 401): {TOKEN_FIX}")
    if not writing:
        return UserError(f"your Hugging Face token has no read access to Hub repo {repo_id} (HTTP 403): ask its "
                         "owner for access, or use a token that has it")
    name = repo_id.split("/")[-1]
    return UserError(f"your Hugging Face token has no write access to Hub repo {repo_id} (HTTP 403): use a token "
                     f"with write access (huggingface.co/settings/tokens), or push to your own namespace "
                     f"(YOUR_NAME/{name})")


def _local_file_error(error: OSError) -> UserError:
    """A local file that failed during a Hub call (it vanished mid-upload, a cache folder not writable): name it.

    Why: every OSError was reported as "cannot reach the Hub", sending the user after their network.
    """
    reason = error.strerror or first_line(error)
    return UserError(f"{error.filename}: {reason} (a file on this machine, not the Hub): check that it exists and "
                     "its permissions (and free disk space), then run the command again")
