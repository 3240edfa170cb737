"""Placeholder behaviour for commands whose issue has not landed yet."""

from __future__ import annotations

from s5cli.errors import RunFailure


def not_available(command: str, issue: int) -> RunFailure:
    """The error a not-yet-built command raises: says so plainly, exit code 1."""
    return RunFailure(f"`s5 {command}` is not available in this build yet (tracked in issue #{issue})")
