"""The `demo` subcommand the sandbox adds to `supportbot` (see pyproject's entry points).

The CLI loads this module on every run to list the command, so it stays light: the demo and the
local servers are imported only when `supportbot demo` is what was asked for.
"""

from __future__ import annotations

from supportbot.added_commands import AddedCommand


async def _demo() -> None:
    from sandbox.demo import run_demo  # noqa: PLC0415 - heavy, and needed only by `demo`

    await run_demo()


DEMO = AddedCommand(
    help="run the real service against a built-in local Telegram server, scripted", run=_demo
)
