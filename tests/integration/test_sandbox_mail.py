"""The built-in mail servers (sandbox/mail.py) under the real IMAP intake and SMTP sender.

The intake and the sender are the ones `supportbot run` uses; only the servers are local. The
last tests speak IMAP on the wire, for what the intake never sends (literals, errors, EXAMINE).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest

from mail.imap import ImapError, ImapIntake
from mail.imap_client import ConnectionLost, ImapSession
from mail.settings import ImapSettings
from mail.smtp import SmtpSender
from mail.store import MailCursor
from sandbox.mail import LocalMailServer
from tests import helpers
from tests.conftest import Clock, Database
from tests.mailservers import customer_mail, eventually
from tickets.desk import Desk
from tickets.model import Route
from tickets.outbox_worker import OutboxWorker

SUPPORT = "support@demo.example"


@pytest.fixture
async def mail() -> AsyncIterator[LocalMailServer]:
    async with LocalMailServer() as servers:
        yield servers


def intake(
    mail: LocalMailServer, desk: Desk, database: Database, clock: Clock, **options: Any
) -> ImapIntake:
    options.setdefault("reconnect_min", 0.05)
    options.setdefault("reconnect_max", 0.3)
    options.setdefault("timeout", 5.0)
    return ImapIntake(
        mail.imap_settings(), desk, database.sessions, SUPPORT, clock=clock, **options
    )


@asynccontextmanager
async def running(reader: ImapIntake) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(reader.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_an_appended_mail_becomes_a_ticket_and_is_flagged_seen(
    mail: LocalMailServer, desk: Desk, database: Database, clock: Clock
) -> None:
    arrived = clock.now - timedelta(hours=1)
    uid = mail.append(
        customer_mail(
            "Carol Example <carol@example.com>",
            "Invoice shows the wrong VAT number",
            "Could you reissue invoice INV-1142 with our new VAT number?",
            message_id="<carol-1@example.com>",
            to=SUPPORT,
        ),
        when=arrived,
    )
    read_before = mail.append(customer_mail(subject="Read long ago"), flags=[r"\Seen"])

    assert await intake(mail, desk, database, clock).sync_once() == 1

    [ticket] = await helpers.tickets(database)
    assert (ticket.subject, ticket.channel) == ("Invoice shows the wrong VAT number", "email")
    [message] = await helpers.messages(database, ticket.id)
    assert message.text == "Could you reissue invoice INV-1142 with our new VAT number?"
    assert (message.external_id, message.reply_address) == (
        "<carol-1@example.com>",
        "carol@example.com",
    )
    assert message.created_at == arrived, "INTERNALDATE is the arrival time"
    assert r"\Seen" in mail.imap.flags(uid)
    assert mail.imap.flags(read_before) == frozenset({r"\Seen"}), "read history is left alone"
    async with database.sessions() as session:
        cursor = await session.get(MailCursor, "INBOX")
        assert cursor is not None
        assert (cursor.uidvalidity, cursor.last_uid) == (mail.imap.uidvalidity, read_before)

    mail.append(customer_mail("dave@example.net", "Second", "Another one", to=SUPPORT))
    assert await intake(mail, desk, database, clock).sync_once() == 1, "only what is new"
    assert len(await helpers.tickets(database)) == 2


async def test_idle_wakes_the_running_intake_at_once(
    mail: LocalMailServer, desk: Desk, database: Database, clock: Clock
) -> None:
    reader = intake(mail, desk, database, clock, poll_interval=600, idle_renew=600)
    async with running(reader):
        await eventually(lambda: _true(mail.imap.idling == 1))
        started = time.monotonic()
        mail.append(customer_mail("erin@example.org", "Login loop", "I cannot log in.", to=SUPPORT))
        [ticket] = await eventually(lambda: helpers.tickets(database), within=3)
        assert time.monotonic() - started < 2, "IDLE, not a poll, brought the mail in"
        assert ticket.subject == "Login loop"
        await eventually(lambda: _true(mail.imap.idling == 1))  # idling again, on one connection
        assert mail.imap.connections == 1

        mail.append(customer_mail("frank@example.org", "Refund", "Refund, please.", to=SUPPORT))
        await eventually(lambda: _count(database, 2), within=3)
    assert mail.imap.connections == 0, "the intake logged out at stop"


async def test_receipt_reply_and_customer_answer_thread_through_both_servers(
    mail: LocalMailServer, desk: Desk, database: Database, clock: Clock
) -> None:
    sender = SmtpSender(mail.smtp_settings(), SUPPORT, clock=clock, timeout=5)
    delivering = OutboxWorker(database.sessions, {Route.EMAIL: sender}, desk, clock=clock)
    reader = intake(mail, desk, database, clock)
    try:
        first = customer_mail(
            "carol@example.com",
            "VAT number",
            "Wrong VAT.",
            to=SUPPORT,
            message_id="<c1@example.com>",
        )
        mail.append(first)
        await reader.sync_once()
        [ticket] = await helpers.tickets(database)
        assert await delivering.run_once() == 1
        [receipt] = mail.received()
        assert receipt["To"] == "carol@example.com"
        assert receipt["Subject"] == f"[#{ticket.id}] VAT number"
        assert receipt["In-Reply-To"] == "<c1@example.com>"
        mail.append(
            customer_mail(
                "carol@example.com",
                f"Re: {receipt['Subject']}",
                "Also: please send it to accounting@example.com.",
                to=SUPPORT,
                in_reply_to=receipt["Message-ID"],
                references=["<c1@example.com>", receipt["Message-ID"]],
            )
        )
        await reader.sync_once()
        assert len(await helpers.tickets(database)) == 1, "the answer joined the ticket"
        assert len(await helpers.messages(database, ticket.id)) == 2
    finally:
        await sender.close()


async def test_a_wrong_password_is_refused(mail: LocalMailServer) -> None:
    good = mail.imap_settings()
    wrong = ImapSettings(good.host, good.port, good.user, "not-it", good.tls, good.mailbox)
    with pytest.raises(ImapError, match="AUTHENTICATIONFAILED"):
        await ImapSession.open(wrong, command_timeout=5)
    missing = ImapSettings(good.host, good.port, good.user, good.password, good.tls, "Archive")
    with pytest.raises(ImapError, match="NONEXISTENT"):
        await ImapSession.open(missing, command_timeout=5)


async def test_stopping_the_server_ends_an_idling_session() -> None:
    mail = LocalMailServer()
    await mail.start()
    session = await ImapSession.open(mail.imap_settings(), command_timeout=5)
    try:
        waiting = asyncio.create_task(session.wait_for_mail(asyncio.Event(), 300))
        await eventually(lambda: _true(mail.imap.idling == 1))
        await asyncio.wait_for(mail.stop(), 3)
        with pytest.raises(ConnectionLost):
            await asyncio.wait_for(waiting, 5)
        assert mail.imap.connections == 0
    finally:
        await session.close()
        await mail.stop()


# -- on the wire ---------------------------------------------------------------------------------


class Wire:
    """A bare IMAP connection: send lines, read the server's lines up to a tagged answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def line(self) -> bytes:
        return (await asyncio.wait_for(self.reader.readline(), 5)).rstrip(b"\r\n")

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def command(self, data: bytes, tag: bytes = b"a") -> list[bytes]:
        await self.send(data)
        lines = []
        while True:
            line = await self.line()
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines


@asynccontextmanager
async def wire(mail: LocalMailServer) -> AsyncIterator[Wire]:
    reader, writer = await asyncio.open_connection(mail.host, mail.imap.port)
    try:
        connection = Wire(reader, writer)
        assert (await connection.line()).startswith(b"* OK [CAPABILITY IMAP4rev1")
        yield connection
    finally:
        writer.close()


async def test_literals_synchronizing_and_not(mail: LocalMailServer) -> None:
    async with wire(mail) as imap:
        password = mail.imap.password.encode()
        await imap.send(b"a LOGIN {7}\r\n")
        assert (await imap.line()).startswith(b"+ ")
        answer = await imap.command(b"support {%d+}\r\n%s\r\n" % (len(password), password))
        assert answer == [b"a OK LOGIN completed"]
        assert (await imap.command(b'b SELECT "INBOX"\r\n', b"b"))[-1] == (
            b"b OK [READ-WRITE] SELECT completed"
        )


async def test_errors_states_and_examine(mail: LocalMailServer) -> None:
    mail.append(b"From: a@example.org\r\nSubject: one\r\n\r\nbody\r\n")
    async with wire(mail) as imap:
        assert (await imap.command(b"a SELECT INBOX\r\n"))[-1].startswith(b"a BAD")
        assert (await imap.command(b"a FROB\r\n"))[-1] == b"a BAD unknown command FROB"
        assert (await imap.command(b"a LOGIN support nope\r\n"))[-1].startswith(
            b"a NO [AUTHENTICATIONFAILED]"
        )
        await imap.command(b'a LOGIN support "%s"\r\n' % mail.imap.password.encode())
        examined = await imap.command(b"a EXAMINE inbox\r\n")
        assert b"* 1 EXISTS" in examined and b"* 1 RECENT" in examined
        assert examined[-1] == b"a OK [READ-ONLY] EXAMINE completed"
        fetched = await imap.command(b"a FETCH 1 (FLAGS BODY[TEXT])\r\n")
        assert fetched[0] == b"* 1 FETCH (FLAGS (\\Recent) BODY[TEXT] {6}"
        assert (await imap.command(b"a STORE 1 +FLAGS (\\Seen)\r\n"))[-1].startswith(b"a NO")
        assert (await imap.command(b"a FETCH 2 FLAGS\r\n"))[-1].startswith(b"a BAD")
        assert mail.imap.flags(1) == frozenset(), "EXAMINE is read-only"


async def test_idle_reports_new_mail_and_ends_with_done(mail: LocalMailServer) -> None:
    async with wire(mail) as imap:
        await imap.command(b'a LOGIN support "%s"\r\n' % mail.imap.password.encode())
        await imap.command(b"a SELECT INBOX\r\n")
        await imap.send(b"b IDLE\r\n")
        assert await imap.line() == b"+ idling"
        await eventually(lambda: _true(mail.imap.idling == 1))
        mail.append(b"From: a@example.org\r\nSubject: new\r\n\r\nbody\r\n")
        assert [await imap.line(), await imap.line()] == [b"* 1 EXISTS", b"* 1 RECENT"]
        assert await imap.command(b"DONE\r\n", b"b") == [b"b OK IDLE terminated"]
        assert await imap.command(b"c UID SEARCH UNSEEN\r\n", b"c") == [
            b"* SEARCH 1",
            b"c OK UID SEARCH completed",
        ]


async def _true(value: bool) -> bool:
    return value


async def _count(database: Database, tickets: int) -> bool:
    return len(await helpers.tickets(database)) == tickets
