"""The operator's HTTP port of the running service: /healthz, /readyz and /metrics.

The service runs as `supportbot run` would, against the local Bot API server, with HTTP_LISTEN
set; the tests ask the port over real HTTP, as a monitor or a load balancer would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sandbox.service import serving
from tests.conftest import Database, postgres_only
from tests.mailservers import (  # noqa: F401 - fixtures are found by name
    Dovecot,
    SmtpServer,
    customer_mail,
    dovecot_fixture,
    free_port,
    mailbox_fixture,
    service_mail_settings,
    smtp_server_fixture,
    tls_files_fixture,
)
from tests.telegram_harness import Desk, running_desk


def _http(port: int) -> Callable[[str], Awaitable[tuple[int, Any]]]:
    async def get(path: str) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as client,
            client.get(f"http://127.0.0.1:{port}{path}") as answer,
        ):
            body = await (answer.json() if path != "/metrics" else answer.text())
            return answer.status, body

    return get


def samples(exposition: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page: (name, sorted labels) → value."""
    found = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


@contextlib.asynccontextmanager
async def operated_desk(
    database: Database, extra: dict[str, str] | None = None
) -> AsyncIterator[tuple[Desk, Callable[[str], Awaitable[tuple[int, Any]]]]]:
    port = free_port()
    environ = {"HTTP_LISTEN": f"127.0.0.1:{port}", **(extra or {})}
    async with running_desk(database, forum=False, extra=environ, serve=False) as desk:
        settings = replace(desk.settings, health_cache_seconds=0.2)
        async with serving(settings, desk.server):
            get = _http(port)
            for _ in range(100):  # the port opens right after the poller's first call
                with contextlib.suppress(aiohttp.ClientConnectionError):
                    await get("/healthz")
                    break
                await asyncio.sleep(0.05)
            yield desk, get


async def test_a_running_service_is_alive_ready_and_leads_its_jobs(database: Database) -> None:
    async with operated_desk(database) as (_desk, get):
        assert await get("/healthz") == (200, {"status": "alive"})
        status, body = await get("/readyz")
        assert status == 200, body
        assert body["ready"] is True
        assert body["checks"] == {"database": "ok", "telegram": "ok"}
        assert body["roles"] == {"jobs": "leader", "telegram": "leader"}


async def test_a_rejected_token_makes_the_service_unready_until_it_works_again(
    database: Database,
) -> None:
    async with operated_desk(database) as (desk, get):
        assert (await get("/readyz"))[0] == 200
        real = desk.server.token
        desk.server.token = "999999:REVOKED-BY-BOTFATHER-abcdefgh"  # the token was revoked
        await asyncio.sleep(0.3)  # past the getMe cache of this test's settings
        status, body = await get("/readyz")
        assert status == 503
        assert body["ready"] is False and body["failed"] == ["telegram"]
        assert body["checks"]["telegram"] == "the Bot API server rejected the token"
        assert body["checks"]["database"] == "ok"
        assert (await get("/healthz"))[0] == 200, "alive, though not ready"
        desk.server.token = real
        await asyncio.sleep(0.3)
        assert (await get("/readyz"))[0] == 200


class _Proxy:
    """A TCP relay between the service and PostgreSQL that the test can cut: the database is
    gone for the service while the test's own connections still reach it."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self.cut = False
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def stop(self) -> None:
        self.sever()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def sever(self) -> None:
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers += [writer, up_writer]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def _through(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}{netloc[1]}{host}"))


# SQLite is a file the process holds open: an overwritten or deleted file is still answered
# from the open handle and its cache for a while, so "gone" has no moment to test there.
@postgres_only
@pytest.mark.timeout(90)
async def test_the_service_is_unready_while_its_database_is_gone(database: Database) -> None:
    parts = urlsplit(database.url)
    proxy = _Proxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    try:
        extra = {"DATABASE_URL": _through(database.url, proxy.port)}
        async with operated_desk(database, extra) as (_desk, get):
            assert (await get("/readyz"))[0] == 200
            proxy.cut = True  # the database is gone for the service (the test still reaches it)
            proxy.sever()
            status, body = await get("/readyz")
            assert status == 503, body
            assert body["failed"] == ["database"]
            assert body["checks"]["database"] != "ok"
            assert body["checks"]["telegram"] == "ok"
            assert (await get("/healthz"))[0] == 200, "alive, though not ready"
            metrics = samples((await get("/metrics"))[1])
            assert metrics["supportbot_database_up", ()] == 0.0
            assert metrics["supportbot_telegram_429_total", ()] == 0.0, "counters still shown"
            proxy.cut = False
            for _ in range(50):
                status, body = await get("/readyz")
                if status == 200:
                    break
                await asyncio.sleep(0.1)
            assert status == 200, body
    finally:
        await proxy.stop()


async def test_metrics_show_a_waiting_ticket_deliveries_and_a_429(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "true")  # RetryAfter.retry_after as a timedelta
    async with operated_desk(database) as (desk, get):
        before = samples((await get("/metrics"))[1])
        assert before["supportbot_telegram_429_total", ()] == 0.0
        assert before["supportbot_leader", (("role", "telegram"),)] == 1.0

        await desk.customer_opens("Ann", "My deposit is missing")
        await desk.wait_group("My deposit is missing")
        desk.server.fail_next("sendMessage", status=429, retry_after=1)
        bob = desk.server.add_user("Bob")
        await desk.server.user_sends(bob, text="Where is my refund?")
        await desk.wait_customer(bob, "ticket number", within=15)
        await desk.wait_group("Where is my refund?", within=15)

        def delivered(found: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> bool:
            return all(
                found.get(("supportbot_deliveries_total", (("route", route),)), 0.0) >= 2.0
                for route in ("telegram", "agents")
            )

        # A delivery is counted when its sender hears back, a moment after Telegram has it.
        for _ in range(100):
            metrics = samples((await get("/metrics"))[1])
            if delivered(metrics):
                break
            await asyncio.sleep(0.05)
        waiting = metrics[
            "supportbot_tickets_waiting", (("plan", "basic"), ("urgency", "on_track"))
        ]
        assert waiting == 2.0
        assert metrics["supportbot_oldest_wait_business_hours", ()] >= 0.0
        assert metrics["supportbot_intake_total", (("channel", "telegram"),)] == 2.0
        assert desk.server.stats.too_many_requests_total == 1
        assert metrics["supportbot_telegram_429_total", ()] == 1.0
        assert metrics["supportbot_deliveries_total", (("route", "telegram"),)] >= 2.0
        assert metrics["supportbot_deliveries_total", (("route", "agents"),)] >= 2.0
        retried = sum(
            value
            for (name, labels), value in metrics.items()
            if name == "supportbot_delivery_failures_total" and ("outcome", "retried") in labels
        )
        assert retried == 1.0, "the 429 made one delivery attempt fail, to be tried again"
        assert metrics["supportbot_sla_breaches_total", ()] == 0.0
        assert metrics["supportbot_database_up", ()] == 1.0


@pytest.mark.timeout(90)
async def test_the_mailbox_reader_shows_in_readiness_and_metrics(
    database: Database, dovecot: Dovecot, mailbox: str, smtp_server: SmtpServer
) -> None:
    async def settled(want: int) -> dict[str, Any]:
        body: dict[str, Any] = {}
        for _ in range(150):
            status, body = await get("/readyz")
            if status == want:
                return body
            await asyncio.sleep(0.1)
        raise AssertionError(f"/readyz never answered {want}: {body}")

    mail = service_mail_settings(dovecot, mailbox, smtp_server)
    async with operated_desk(database, mail) as (desk, get):
        body = await settled(200)
        assert body["checks"]["imap"] == "ok"
        assert body["roles"] == {"jobs": "leader", "telegram": "leader", "imap": "leader"}
        dovecot.append(
            mailbox, customer_mail("Carol <carol@example.org>", "Deposit", "Where is it?")
        )
        await desk.wait_group("Where is it?", within=15)
        metrics = samples((await get("/metrics"))[1])
        assert metrics["supportbot_intake_total", (("channel", "email"),)] == 1.0
        assert metrics["supportbot_imap_connected", ()] == 1.0
        assert 0.0 <= metrics["supportbot_imap_lag_seconds", ()] < 15.0

        dovecot.stop()  # the mail server goes away: the reader loses its connection
        body = await settled(503)
        assert body["failed"] == ["imap"]
        assert body["checks"]["imap"] == "not connected to IMAP"
        assert samples((await get("/metrics"))[1])["supportbot_imap_connected", ()] == 0.0
        dovecot.start()
        body = await settled(200)
        assert body["checks"]["imap"] == "ok"
