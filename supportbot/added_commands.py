"""Subcommands that other installed packages add to `supportbot`, found through entry points.

The shell must not import the sandbox, yet `supportbot demo` lives there: the sandbox names its
command in the `supportbot.commands` entry point group (pyproject.toml) and the CLI loads it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import entry_points

GROUP = "supportbot.commands"


@dataclass(frozen=True)
class AddedCommand:
    """A subcommand another package adds: its one-line help and what it runs."""

    help: str
    run: Callable[[], Awaitable[None]]


def added_commands() -> dict[str, AddedCommand]:
    """The installed packages' commands by name (the sandbox's `demo`); loading one is cheap."""
    found: dict[str, AddedCommand] = {}
    for point in entry_points(group=GROUP):
        command = point.load()
        if not isinstance(command, AddedCommand):
            raise TypeError(f"entry point {point.value} is not an AddedCommand")
        found[point.name] = command
    return found
