"""Hub client settings read at call time (endpoint, cache, offline, token, time limit) and one-line error translation.

huggingface_hub reads HF_ENDPOINT / HF_HUB_CACHE / HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) /
HF_HUB_ETAG_TIMEOUT once, when it is imported. s5cli reads them again on every call and passes them
explicitly, so a setting changed after import (tests, notebooks) is honoured the same way as one set
before `s5` started.
"""

from __future__ import annotations

import contextlib
import math
import os
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from s5cli.errors import RunFailure, UserError, first_line

TOKEN_FIX = "set HF_TOKEN or run `hf auth login` (formerly `huggingface-cli login`)"
_TRUE = {"1", "on", "yes", "true"}
# The variables huggingface_hub reads for offline mode, in its order: the first one set (non-empty) decides.
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
# huggingface_hub's limit, in seconds, for metadata requests (file metadata, repo info); s5cli uses it for every
# request that is not a file's bytes.
TIMEOUT_VARIABLE = "HF_HUB_ETAG_TIMEOUT"
DOWNLOAD_TIMEOUT_VARIABLE = "HF_HUB_DOWNLOAD_TIMEOUT"  # huggingface_hub's limit on a file's bytes


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
    offline, setting = _offline_mode(bool(constants.HF_HUB_OFFLINE))
    return HubSettings(endpoint, _cache_dir(constants.HF_HUB_CACHE), offline, setting)


def _cache_dir(imported: str) -> Path:
    """The Hub cache folder as huggingface_hub finds it, but at call time: HF_HUB_CACHE, then the legacy
    HUGGINGFACE_HUB_CACHE, then HF_HOME/hub, then XDG_CACHE_HOME/huggingface/hub, each with `~` and `$VAR`
    expanded; `imported` (huggingface_hub's own value) when none is set.

    Why its order: with HUGGINGFACE_HUB_CACHE and HF_HOME both set, or `$SCRATCH/hub` in HF_HUB_CACHE,
    s5cli used another folder than huggingface_hub (and `hf cache`), so offline use found nothing.
    """
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return _expand(os.environ[name])
    if os.environ.get("HF_HOME"):
        return _expand(os.environ["HF_HOME"]) / "hub"
    if os.environ.get("XDG_CACHE_HOME"):
        return _expand(os.environ["XDG_CACHE_HOME"]) / "huggingface" / "hub"
    return Path(imported).expanduser()


def _expand(path: str) -> Path:
    """`~` and `$VAR` expanded, in huggingface_hub's order (the user first, then variables)."""
    return Path(os.path.expandvars(os.path.expanduser(path)))


def request_timeout() -> float:
    """Seconds to wait for the Hub's answer to a request that is not a file's bytes (HF_HUB_ETAG_TIMEOUT,
    huggingface_hub's own limit for metadata, default 10), read at call time.

    Why s5cli passes it to every such request: huggingface_hub's HTTP client waits forever by default, and
    only its file downloads are bounded, so behind a proxy that accepted the connection and never answered
    `s5 eval -c hf://...`, `s5 recipes pull` and `s5 push` hung with no end and no message.
    """
    from huggingface_hub import constants

    text = (os.environ.get(TIMEOUT_VARIABLE) or "").strip()
    if not text:
        return float(constants.HF_HUB_ETAG_TIMEOUT)
    if text == "0":  # huggingface_hub reads 0 as its default
        return float(constants.DEFAULT_ETAG_TIMEOUT)
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise UserError(f"{TIMEOUT_VARIABLE}={text!r} is not a number of seconds: set it to one such as 30, or "
                        f"unset it ({constants.DEFAULT_ETAG_TIMEOUT} s)")
    return seconds


@contextlib.contextmanager
def bounded_requests(*, answer: bool = True) -> Iterator[None]:
    """Within: huggingface_hub's requests that send no timeout of their own (create_repo, create_branch,
    create_commit's) give up after `request_timeout()` seconds without an answer.

    `answer` False bounds connecting only, for a commit: it uploads the files (maybe gigabytes) and the Hub
    may take long to answer it, so no wait for bytes may cut it short. A request that sends a timeout keeps
    it, even None (no limit): `model_info` and the like need `timeout=` passed as well. Set on
    huggingface_hub's shared client, and restored on the way out.
    """
    from huggingface_hub import get_session

    seconds = request_timeout()
    session = get_session()
    before = session.timeout
    # The client's own Timeout class (httpx's, or huggingface_hub's fork of it), so s5cli names neither.
    session.timeout = type(before)(seconds if answer else None, connect=seconds)
    try:
        yield
    finally:
        session.timeout = before


def is_transport_error(error: BaseException) -> bool:
    """An error of huggingface_hub's HTTP layer (httpx2 / httpcore): no connection, no answer, a broken one."""
    return type(error).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore")


def is_timeout(error: BaseException | None) -> bool:
    """Whether `error` (or the error that caused it: huggingface_hub wraps them) is a request that got no
    answer in time."""
    for _ in range(4):
        if error is None:
            return False
        if isinstance(error, TimeoutError) or (is_transport_error(error) and type(error).__name__.endswith("Timeout")):
            return True
        error = error.__cause__
    return False


def unreachable_reason(error: BaseException) -> str:
    """Why the Hub could not be used, for one-line messages: for a timeout, the limit and how to raise it."""
    if is_timeout(error):
        # A file's bytes are bounded by huggingface_hub's HF_HUB_DOWNLOAD_TIMEOUT, not by ours: name both.
        return (f"no answer within {request_timeout():g} s (set {TIMEOUT_VARIABLE} to wait longer; a file's "
                f"bytes: {DOWNLOAD_TIMEOUT_VARIABLE})")
    return first_line(error)


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
    """The user's Hub token (HF_TOKEN or the saved login); UserError naming the fix when there is none or it
    cannot be sent."""
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise UserError(f"{action} needs a Hugging Face token: {TOKEN_FIX}")
    return _sendable(token)


def optional_token() -> str | None:
    """The saved token if any (private repos download with it; public ones need none); UserError when it
    cannot be sent. Offline it is never sent, so it is not checked then: a cached pull still works."""
    from huggingface_hub import get_token

    token = get_token() or None
    return token if token is None or hub_settings().offline else _sendable(token)


def _sendable(token: str) -> str:
    """`token` when it can go in an HTTP header as a Hub token (printable ASCII: no spaces or control
    characters); else UserError naming where it came from and how to set it again. The token itself is
    never printed.

    Why: a token with a non-ASCII character (a stray `é` pasted along) failed inside the HTTP client with an
    87-line UnicodeEncodeError traceback, which also printed the token.
    """
    if all(33 <= ord(char) <= 126 for char in token):
        return token
    source, fix = _token_source()
    raise UserError(f"{source} holds characters a Hub token cannot have (non-ASCII characters, spaces or "
                    f"control characters): {fix}")


def _token_source() -> tuple[str, str]:
    """(where huggingface_hub took the token from, how to set it again), in `get_token`'s order."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        if (os.environ.get(name) or "").strip():
            return name, "set it again (copy it from huggingface.co/settings/tokens)"
    return "the saved Hugging Face token", "run `hf auth login` again (or set HF_TOKEN)"


@contextlib.contextmanager
def hub_errors(
    repo_id: str, revision: str | None, file: str | None = None, *, writing: bool = False,
    revision_option: bool = False,
) -> Iterator[None]:
    """Turn huggingface_hub / network exceptions into one-line UserError / RunFailure naming repo, revision, file.

    `revision_option`: the revision was given with --revision (the fix for a missing one goes there), not
    after @ in an hf:// address.
    """
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
        raise UserError(f"revision {rev!r} not found in Hub repo {repo_id}: {_revision_fix(repo_id, revision_option)}"
                        ) from None
    except hf.RemoteEntryNotFoundError:
        listing = f"hf models ls {repo_id} -R" + (f" --revision {shlex.quote(revision)}" if revision else "")
        raise UserError(f"{what}: file not found in the Hub repo: check the path (`{listing}` lists the files)"
                        ) from None
    except (hf.LocalEntryNotFoundError, hf.OfflineModeIsEnabled) as error:
        settings = hub_settings()
        if settings.offline:
            raise UserError(
                f"{settings.offline_reason} and {what} is not in the Hub cache: "
                f"{settings.online_fix} to download it, or pull it once while online"
            ) from None
        raise RunFailure(f"cannot reach the Hub for {what} and it is not cached: {unreachable_reason(error)}"
                         ) from None
    except hf.HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status in (401, 403):
            raise _refusal(repo_id, status, writing) from None
        if status == 412 and writing:  # the commit's parent is no longer the branch's head
            raise UserError(f"{what} changed while pushing (another push landed): push again") from None
        raise RunFailure(f"Hub request for {what} failed: {first_line(error)}") from None
    except OSError as error:
        if error.filename is not None:  # a local file (an upload's source), not the network
            raise _local_file_error(error) from None
        raise RunFailure(f"cannot reach the Hub for {what}: {unreachable_reason(error)}") from None
    except Exception as error:
        if is_transport_error(error):  # huggingface_hub's HTTP layer raises its own errors
            raise RunFailure(f"cannot reach the Hub for {what}: {unreachable_reason(error)}") from None
        raise


def _revision_fix(repo_id: str, revision_option: bool) -> str:
    """Where to name another revision: the option it was given with, else the address it was written in.

    Why: `s5 finetune hf://alice/recipes@nope/recipe.yaml` was told to pass a revision to --revision, an
    option finetune does not have.
    """
    if revision_option:
        return "pass an existing branch, tag or commit to --revision"
    return f"name an existing branch, tag or commit after @ in the address (hf://{repo_id}@REVISION/...)"


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
