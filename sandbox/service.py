"""The real service against the built-in local Telegram server (demo, tests, benchmarks)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from sandbox.telegram import LocalBotApi, SimChat
from supportbot import app
from supportbot.settings import Settings, load_settings
from tickets.ports import Clock, utcnow


def local_settings(
    server: LocalBotApi,
    group: SimChat,
    database_url: str,
    extra: Mapping[str, str] | None = None,
) -> Settings:
    """Settings that point the bot at `server` with `group` as the agents' group."""
    return load_settings(local_environ(server, group, database_url, extra), env_file=None)


def local_environ(
    server: LocalBotApi,
    group: SimChat,
    database_url: str,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment values of `local_settings` (for a service in another process)."""
    return {
        "DATABASE_URL": database_url,
        "TELEGRAM_TOKEN": server.token,
        "TELEGRAM_API_URL": server.url,
        "AGENT_CHAT_ID": str(group.id),
        **(extra or {}),
    }


@asynccontextmanager
async def serving(
    settings: Settings,
    server: LocalBotApi,
    *,
    startup: float = 10.0,
    shutdown: float = 30.0,
    clock: Clock = utcnow,
) -> AsyncIterator[asyncio.Task[None]]:
    """Run the service for the block: ready once it polls the server; a failed start raises."""
    stop = asyncio.Event()
    service = asyncio.create_task(app.run(settings, stop, clock=clock))
    try:
        await server.wait_for(
            lambda: server.stats.requests.get("getUpdates", 0) > 0 or service.done(), startup
        )
        if service.done():
            service.result()
        yield service
    finally:
        stop.set()
        await asyncio.wait_for(service, shutdown)
