"""torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) read in one place, without torch.

Why: each reader did `int(os.environ[...])` itself, so a garbage value (`WORLD_SIZE=abc`) or a partial
set (WORLD_SIZE without RANK, or without MASTER_ADDR) ended in a ValueError, a KeyError or torch's own
"MASTER_ADDR expected" traceback. Kept free of torch so that `s5 --help` (the CLI's root callback reads
WORLD_SIZE) stays instant.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from s5cli.errors import UserError

# What a process that joins a group needs besides WORLD_SIZE: torchrun sets all of them.
GROUP_VARIABLES = ("RANK", "MASTER_ADDR", "MASTER_PORT")


def env_int(name: str, default: int, env: Mapping[str, str] | None = None) -> int:
    """The variable `name` as a whole number >= 0 (`default` when unset or blank); UserError naming it otherwise."""
    text = (os.environ if env is None else env).get(name, "")
    if not text.strip():
        return default
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise UserError(f"{name}={text!r} is not a whole number: unset it, or start the command with torchrun")
    return value


def world_size(env: Mapping[str, str] | None = None) -> int:
    """WORLD_SIZE, 1 when unset: how many processes torchrun started."""
    return env_int("WORLD_SIZE", 1, env)


def rank(env: Mapping[str, str] | None = None) -> int:
    """RANK, 0 when unset: this process's place among them."""
    return env_int("RANK", 0, env)


def local_rank(env: Mapping[str, str] | None = None) -> int:
    """LOCAL_RANK, 0 when unset: this process's place on its machine (its GPU)."""
    return env_int("LOCAL_RANK", 0, env)


def require_group_variables(env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """(rank, world size) of a process about to join a group; UserError naming every variable that is missing.

    Why before `init_process_group`: torch reports a missing one as a traceback ("MASTER_ADDR expected,
    but not set"), one variable at a time, and a RANK past WORLD_SIZE waits for a rendezvous that never comes.
    """
    env = os.environ if env is None else env
    world = world_size(env)
    missing = [name for name in GROUP_VARIABLES if not env.get(name, "").strip()]
    if missing:
        raise UserError(f"WORLD_SIZE={world} but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not "
                        "set: start the command with torchrun, or unset WORLD_SIZE to run one process")
    return rank_and_world(env)


def rank_and_world(env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """(RANK, WORLD_SIZE), (0, 1) when unset; UserError naming both when RANK is not below WORLD_SIZE.

    Also for processes that join no group (`s5 extract` with WORLD_SIZE and RANK set by hand takes that share):
    a RANK past WORLD_SIZE is a mistake in those variables, and the message names them.
    """
    env = os.environ if env is None else env
    world, this_rank = world_size(env), rank(env)
    if this_rank >= world:
        raise UserError(f"RANK={this_rank} is not below WORLD_SIZE={world}: start the command with torchrun, "
                        "or give each process a RANK from 0 to WORLD_SIZE-1")
    return this_rank, world


def launched_by_torchrun(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process is one of several that torchrun started: WORLD_SIZE above 1 with the rendezvous
    address set (WORLD_SIZE set by hand, say for `s5 extract`'s share of one machine, has none). A
    WORLD_SIZE that is no number is not torchrun's (the commands that use it say so)."""
    env = os.environ if env is None else env
    try:
        world = world_size(env)
    except UserError:
        return False
    return world > 1 and all(env.get(name, "").strip() for name in ("MASTER_ADDR", "MASTER_PORT"))

