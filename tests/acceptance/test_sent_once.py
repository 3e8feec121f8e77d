"""Nothing is sent twice, except where the README says it can be: the running service after faults.

* SIGKILL of the service (`supportbot run` in a process of its own) while a row that takes several
  messages is half sent: after a restart the rest goes out, and what went out does not again.
  SQLite takes a dead process's leases back at start; PostgreSQL when the short lease runs out.
* A dropped database connection while a delivery is being recorded (PostgreSQL): the outcome is
  kept and saved again, so the row is delivered once.
* Telegram delivered but its answer was lost (held past the read timeout, or a 502): the
  message is sent again, once. This is the case the README names.
* A mail the SMTP server took but did not confirm is sent again with the same Message-ID.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import text

from sandbox.telegram import LocalBotApi, SentMessage, SimChat, SimUser
from tests import helpers
from tests.acceptance.test_long_texts import long_text
from tests.conftest import Database, postgres_only
from tests.mailservers import (  # noqa: F401 - fixtures are found by name
    Dovecot,
    SmtpServer,
    customer_mail,
    dovecot_fixture,
    eventually,
    mailbox_fixture,
    service_mail_settings,
    smtp_server_fixture,
    tls_files_fixture,
)
from tests.telegram_harness import TOKEN, running_desk
from tickets.agents import add_agent
from tickets.model import Role
from tickets.outbox_worker import LEASE
from tickets.ports import utcnow
from tickets.tables import OutboxRow

ROOT = Path(__file__).resolve().parents[2]


class Service:
    """`supportbot run` in a process of its own, as an operator starts it; killed like a crash."""

    def __init__(self, server: LocalBotApi, environ: dict[str, str], log: Path) -> None:
        self._server = server
        self._environ = environ
        self._log = log
        self._process: subprocess.Popen[bytes] | None = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        inherited = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("TELEGRAM_", "IMAP_", "SMTP_", "DATABASE_"))
        }
        with self._log.open("ab") as errors:
            return subprocess.Popen(
                [sys.executable, "-m", "supportbot", "run"],
                cwd=self._log.parent,
                env={**inherited, "PYTHONPATH": str(ROOT), **self._environ},
                stdout=subprocess.DEVNULL,
                stderr=errors,
            )

    async def start(self) -> None:
        polls = self._server.stats.requests.get("getUpdates", 0)
        process = self._process = self._spawn()
        try:
            await self._server.wait_for(
                lambda: (
                    self._server.stats.requests.get("getUpdates", 0) > polls
                    or process.poll() is not None
                ),
                60,
            )
        except TimeoutError:
            raise AssertionError(f"the service did not start: {self.logged()}") from None
        assert process.poll() is None, f"the service stopped: {self.logged()}"

    async def kill(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGKILL)
        await self._exited(10)

    async def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            await self._exited(30)

    async def _exited(self, seconds: float) -> None:
        # Wait without blocking the loop: the local Bot API server runs in it, and a stopping
        # service may still be finishing a request to it.
        assert self._process is not None
        deadline = time.monotonic() + seconds
        while self._process.poll() is None:
            if time.monotonic() > deadline:
                self._process.kill()
                self._process.wait(10)
                raise AssertionError(f"the service did not exit in {seconds} s: {self.logged()}")
            await asyncio.sleep(0.05)

    def logged(self) -> str:
        return self._log.read_text(errors="replace")[-3000:]


@asynccontextmanager
async def service_process(
    database: Database, tmp_path: Path
) -> AsyncIterator[tuple[LocalBotApi, SimChat, SimUser, Service]]:
    """The local Bot API server, an agents' group with one agent, and the service beside it."""
    server = LocalBotApi(TOKEN, bot_username="supportbot_test")
    await server.start()
    group = server.add_group("Support agents", forum=False)
    agent = server.add_user("Sam", username="sam")
    await server.add_member(group, agent)
    async with database.sessions.begin() as session:
        await add_agent(session, agent.id, Role.AGENT, "Sam", at=utcnow(), actor="test")
    environ = {
        "DATABASE_URL": database.url,
        "TELEGRAM_TOKEN": TOKEN,
        "TELEGRAM_API_URL": server.url,
        "AGENT_CHAT_ID": str(group.id),
    }
    service = Service(server, environ, tmp_path / "service.log")
    try:
        await service.start()
        yield server, group, agent, service
    finally:
        await service.stop()
        await server.stop()


async def sent_to(server: LocalBotApi, chat: SimChat | SimUser, needle: str) -> SentMessage:
    def found() -> SentMessage | None:
        return next((m for m in server.sent_to(chat) if needle in (m.text or "")), None)

    return await server.wait_for(found, 30)


async def leased_with_progress(database: Database, route: str) -> OutboxRow:
    """The row of `route` that is half sent: leased, with its progress saved."""

    async def found() -> OutboxRow | None:
        rows = await helpers.outbox(database, OutboxRow.route == route)
        return next((r for r in rows if r.progress and r.lease_owner is not None), None)

    row = await eventually(found, within=30)
    assert (
        row is not None
        and row.lease_until is not None
        and row.lease_until <= utcnow() + LEASE + timedelta(seconds=1)
    )
    return row


async def killed_mid_row(
    database: Database, server: LocalBotApi, service: Service, route: str
) -> OutboxRow:
    """SIGKILL the service once a row's first part is out, its progress saved and the request
    of its next part under way (held by an injected failure); start it again."""
    row = await leased_with_progress(database, route)
    await server.wait_for(lambda: server.stats.injected_failures == 1, 30)
    await service.kill()
    await service.start()
    return row


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_killed_service_sends_the_rest_of_a_notice_and_nothing_twice(
    database: Database, tmp_path: Path
) -> None:
    async with service_process(database, tmp_path) as (server, group, _agent, service):
        ann = server.add_user("Ann")
        await server.user_sends(ann, text="My deposit is missing")
        await sent_to(server, ann, "ticket number")
        await sent_to(server, group, "My deposit is missing")
        # The follow-up's notice goes out; its whole text's file hangs, and the service dies.
        server.fail_next("sendDocument", status=500, delay=60, chat_id=group)
        story = long_text(14_000, "story")
        await server.user_sends(ann, text=story)
        await sent_to(server, group, "story line 00001")
        row = await killed_mid_row(database, server, service, "agents")
        assert row.progress is not None and row.progress["notice_sent"] is True
        document = await server.wait_for(
            lambda: next((m for m in server.sent_to(group) if m.file_name), None), 60
        )
        assert document.file_bytes is not None and story in document.file_bytes.decode()
        await eventually(lambda: _status(database, row.id, "delivered"), within=30)
        notices = [m for m in server.sent_to(group) if "story line 00001" in (m.text or "")]
        assert len(notices) == 1, [m.text for m in server.sent_to(group)]


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_killed_service_sends_the_rest_of_a_long_reply_and_nothing_twice(
    database: Database, tmp_path: Path
) -> None:
    async with service_process(database, tmp_path) as (server, group, agent, service):
        ann = server.add_user("Ann")
        await server.user_sends(ann, text="Please explain the fees")
        await sent_to(server, ann, "ticket number")
        [ticket] = await helpers.tickets(database)
        # Part one goes out; part two hangs, and the service dies before it is answered.
        server.fail_next("sendMessage", status=500, delay=60, chat_id=ann, skip=1)
        answer = long_text(9_000, "fees")
        await server.user_sends(agent, chat=group, text=f"/reply {ticket.id} {answer}")
        await sent_to(server, ann, "fees line 00001")
        row = await killed_mid_row(database, server, service, "telegram")
        assert row.progress is not None and row.progress["sent"] == 1
        await sent_to(server, group, "reply sent on Telegram")
        parts = [m.text or "" for m in server.sent_to(ann)][1:]  # after the receipt
        assert "\n".join(parts) == answer, "every part once, in order"
        await eventually(lambda: _status(database, row.id, "delivered"), within=30)


async def _status(database: Database, row_id: int, status: str) -> bool:
    [row] = await helpers.outbox(database, OutboxRow.id == row_id)
    return row.status == status


@postgres_only  # SQLite is a file the process opens itself: there is no connection to drop
async def test_a_dropped_database_connection_does_not_send_a_reply_twice(
    database: Database,
) -> None:
    name = "supportbot-test-service"
    url = database.url + quote(f" -capplication_name={name}", safe="-")
    async with running_desk(database, forum=False, extra={"DATABASE_URL": url}) as desk:
        ann, ticket = await desk.customer_opens("Ann", "Where is my refund?")
        desk.server.hold_answer_next("sendMessage", seconds=2, chat_id=ann.id)
        await desk.server.user_sends(
            desk.agent, chat=desk.group, text=f"/reply {ticket.id} It went out this morning."
        )
        await desk.wait_customer(ann, "It went out this morning.")
        async with database.engine.connect() as blocker:
            # Telegram has the reply; its outcome is about to be recorded. Hold the reply's row
            # so the recording waits, then drop the service's connection under it.
            await blocker.execute(
                text(
                    "SELECT id FROM messages WHERE ticket_id = :t AND direction = 'out' FOR UPDATE"
                ),
                {"t": ticket.id},
            )

            async def recording_waits() -> int:
                async with database.engine.connect() as probe:
                    found = await probe.scalar(
                        text(
                            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE application_name = :name AND wait_event_type = 'Lock'"
                        ),
                        {"name": name},
                    )
                return int(found or 0)

            assert await eventually(recording_waits, within=30) == 1
            await asyncio.sleep(0.5)  # the outcome is saved again on a new connection
            await blocker.rollback()
        await desk.wait_group("reply sent on Telegram")
        rows = await helpers.outbox(database, OutboxRow.kind == "reply")
        assert [(r.status, r.attempts) for r in rows] == [("delivered", 0)]
    texts = [m.text for m in desk.server.sent_to(ann)]
    assert texts.count("It went out this morning.") == 1


@pytest.mark.parametrize("fault", ["held", "502"])
@pytest.mark.slow
async def test_a_reply_telegram_delivered_without_answering_is_sent_again_once(
    database: Database, fault: str
) -> None:
    """The one case the README names: Telegram took the message, its answer never came."""
    async with running_desk(database, forum=False, extra={"TELEGRAM_TIMEOUT_SECONDS": "1"}) as desk:
        ann, ticket = await desk.customer_opens("Ann", "Where is my refund?")
        if fault == "held":
            desk.server.hold_answer_next("sendMessage", seconds=3, chat_id=ann.id)
        else:
            desk.server.fail_next("sendMessage", status=502, executed=True, chat_id=ann.id)
        await desk.server.user_sends(
            desk.agent, chat=desk.group, text=f"/reply {ticket.id} It went out this morning."
        )
        await desk.wait_group("reply sent on Telegram", within=30)
        [row] = await helpers.outbox(database, OutboxRow.kind == "reply")
        assert row.status == "delivered" and row.attempts == 1
    texts = [m.text for m in desk.server.sent_to(ann)]
    assert texts.count("It went out this morning.") == 2
    assert sum("ticket number" in (t or "") for t in texts) == 1
    assert sum("reply sent on Telegram" in t for t in desk.group_texts()) == 1


async def test_a_mail_sent_again_keeps_its_message_id(
    database: Database, dovecot: Dovecot, mailbox: str, smtp_server: SmtpServer
) -> None:
    """The SMTP server took the receipt but dropped the line before saying so."""
    smtp_server.handler.silent_after_data = 1
    settings = service_mail_settings(dovecot, mailbox, smtp_server)
    async with running_desk(database, extra=settings):
        dovecot.append(mailbox, customer_mail("Carol <carol@example.org>", "Hello", "A question"))

        async def two() -> bool:
            return len(smtp_server.received) >= 2

        await eventually(two, within=30)
        await asyncio.sleep(0.5)  # a third copy would show up now
    first, second = smtp_server.received
    assert len(smtp_server.received) == 2
    assert first.message["Message-ID"] == second.message["Message-ID"]
    assert first.message["Subject"] == second.message["Subject"]
    [row] = await helpers.outbox(database, OutboxRow.route == "email")
    assert row.status == "delivered" and row.external_id == first.message["Message-ID"]
