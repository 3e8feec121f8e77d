"""The operator's HTTP port (HTTP_LISTEN): `/healthz`, `/readyz` and Prometheus `/metrics`.

* `/healthz` answers 200 as long as the process's event loop runs: a liveness probe (the
  Dockerfile's HEALTHCHECK, a systemd watchdog, Kubernetes' livenessProbe).
* `/readyz` answers 200 when every check passes and 503 otherwise, with a JSON body naming
  each check and what failed: the database answers, the Telegram token works (getMe, cached),
  the IMAP reader is connected (when this replica reads the mailbox), and this replica's roles
  (leader or follower of each elected job).
* `/metrics` is the Prometheus text format of `supportbot/metrics.py`.

The handlers hold no SQL: they call the named reads of `tickets/vitals.py` through `Probes`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from supportbot.metrics import CONTENT_TYPE, PrometheusEvents
from tickets.vitals import Vitals

log = logging.getLogger("supportbot.http")

Roles = Callable[[], Mapping[str, str]]
"""This replica's role per elected job ("telegram", "imap", "jobs"): "leader" or "follower".

A single process leads everything; with replicas, the leadership module (issue 14, point 1)
hands in its own function."""

LEADER = "leader"
FOLLOWER = "follower"
CHECK_SECONDS = 5.0  # a check that takes longer than this has failed


@dataclass
class Probes:
    """What the HTTP port asks the running service."""

    database: Callable[[], Awaitable[None]]  # raises unless the database answers
    vitals: Callable[[], Awaitable[Vitals]]
    roles: Roles
    telegram: Callable[[], Awaitable[str | None]] | None = None  # None: the token works
    imap_connected: Callable[[], bool] | None = None
    # How long a getMe answer is trusted before asking again (the Bot API limits getMe too).
    telegram_cache_seconds: float = 30.0


class _Cached:
    """The last answer of a slow check, reused for `seconds`."""

    def __init__(self, check: Callable[[], Awaitable[str | None]], seconds: float) -> None:
        self._check = check
        self._seconds = seconds
        self._at = float("-inf")
        self._value: str | None = None
        self._lock = asyncio.Lock()

    async def __call__(self) -> str | None:
        async with self._lock:
            if time.monotonic() - self._at >= self._seconds:
                self._value = await self._check()
                self._at = time.monotonic()
            return self._value


def make_app(probes: Probes, events: PrometheusEvents) -> web.Application:
    """The aiohttp application of the operator's port."""
    telegram = (
        _Cached(probes.telegram, probes.telegram_cache_seconds)
        if probes.telegram is not None
        else None
    )
    scrape_lock = asyncio.Lock()

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(_: web.Request) -> web.Response:
        roles = dict(probes.roles())
        checks: dict[str, str] = {"database": await _checked(probes.database)}
        if telegram is not None:
            checks["telegram"] = await _checked(telegram)
        if probes.imap_connected is not None:
            if roles.get("imap") == FOLLOWER:
                checks["imap"] = "ok (another replica reads the mailbox)"
            else:
                checks["imap"] = "ok" if probes.imap_connected() else "not connected to IMAP"
        ready = all(value.startswith("ok") for value in checks.values())
        body: dict[str, Any] = {"ready": ready, "checks": checks, "roles": roles}
        if not ready:
            body["failed"] = sorted(k for k, v in checks.items() if not v.startswith("ok"))
        return web.json_response(body, status=200 if ready else 503)

    async def metrics(_: web.Request) -> web.Response:
        async with scrape_lock:
            figures = events.figures
            figures.roles = dict(probes.roles())
            try:
                figures.vitals = await asyncio.wait_for(probes.vitals(), CHECK_SECONDS)
                figures.database_up = True
            except Exception as error:
                log.warning("metrics: the desk's figures could not be read: %s", error)
                figures.vitals = None
                figures.database_up = False
            body = events.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def _checked(check: Callable[[], Awaitable[str | None]]) -> str:
    """ "ok", or what went wrong (a check answers None when fine, or raises, or takes too long)."""
    try:
        problem = await asyncio.wait_for(check(), CHECK_SECONDS)
    except TimeoutError:
        return f"no answer within {CHECK_SECONDS:g} s"
    except Exception as error:
        return f"{type(error).__name__}: {error}".splitlines()[0][:300]
    return "ok" if problem is None else problem


async def serve(app: web.Application, host: str, port: int, stop: asyncio.Event) -> None:
    """Serve `app` on host:port until `stop` is set."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        log.info("health and metrics on http://%s:%d (/healthz, /readyz, /metrics)", host, port)
        await stop.wait()
    finally:
        await runner.cleanup()
