"""The IMAP intake against a private Dovecot: tickets, threading, machine mail, crashes, outages."""

from __future__ import annotations

import asyncio
import email.policy
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from mail.imap import ImapError, ImapIntake, StorageUnavailable, health_notices
from mail.settings import Tls
from mail.store import MailCursor
from supportbot import db
from tests import helpers
from tests.conftest import Clock, Database
from tests.mailservers import (  # noqa: F401 - fixtures are found by name
    OTHER_LOOPBACK,
    SUPPORT,
    Dovecot,
    TlsFiles,
    customer_mail,
    dovecot_fixture,
    eventually,
    mailbox_fixture,
    tls_files_fixture,
)
from tickets.agents import add_agent
from tickets.desk import Desk
from tickets.model import Role
from tickets.policy import SlaPolicy
from tickets.rendering import Templates
from tickets.sla import BusinessCalendar
from tickets.tables import Customer, InboundKey, Message, OutboxRow, Quarantined

AGENT = 9001
DATA = Path(__file__).parents[1] / "data" / "mail"


def intake(
    dovecot: Dovecot,
    mailbox: str,
    desk: Desk,
    database: Database,
    clock: Clock,
    **options: Any,
) -> ImapIntake:
    options.setdefault("reconnect_min", 0.05)
    options.setdefault("reconnect_max", 0.3)
    options.setdefault("timeout", 5.0)
    settings = dovecot.settings(mailbox, tls=options.pop("tls", Tls.NONE))
    return ImapIntake(settings, desk, database.sessions, SUPPORT, clock=clock, **options)


@asynccontextmanager
async def running(reader: ImapIntake) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(reader.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def count(database: Database, model: type[Any], *where: Any) -> int:
    async with database.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def inbound(database: Database) -> list[Message]:
    return list(await helpers.rows(database, Message, Message.direction == "in"))


async def receipts(database: Database) -> list[OutboxRow]:
    return list(await helpers.outbox(database, OutboxRow.kind == "receipt"))


async def cursor(database: Database, mailbox: str) -> tuple[int, int] | None:
    async with database.sessions() as session:
        row = await session.get(MailCursor, mailbox)
        return (row.uidvalidity, row.last_uid) if row else None


def bounce(original_id: str, recipient: str) -> bytes:
    """A Postfix-style delivery status notification for one of our mails."""
    return (
        "Return-Path: <>\r\n"
        "From: MAILER-DAEMON@mx.example.org (Mail Delivery System)\r\n"
        f"To: {SUPPORT}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Message-ID: <bounce-1@mx.example.org>\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
        "\r\n--B\r\nContent-Type: text/plain\r\n\r\n"
        f"<{recipient}>: host mx.example.org said: 550 5.1.1 User unknown\r\n"
        "\r\n--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.org\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "\r\n--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: Support <{SUPPORT}>\r\nTo: {recipient}\r\nMessage-ID: {original_id}\r\n"
        "\r\n--B--\r\n"
    ).encode()


async def test_mail_becomes_a_ticket_with_text_customer_and_reply_address(
    dovecot: Dovecot, mailbox: str, desk: Desk, database: Database, clock: Clock
) -> None:
    body = (
        "My top-up of 50 USDT is not on my balance.\n\n"
        "On Mon, 23 Nov 2026 at 10:00, Support <support@example.com> wrote:\n"
        "> Earlier answer\n> quoted here\n"
    )
    arrived = clock.now - timedelta(hours=2)
    dovecot.append(
        mailbox,
        customer_mail(
            "Ann Example <Ann@Example.org>",
            "Top-up missing",
            body,
            message_id="<ann-1@example.org>",
            headers={"Reply-To": "billing@example.org"},
        ),
        when=arrived,
    )
    dovecot.append(mailbox, customer_mail("bob@example.net", "Refund?", "Can I get a refund?"))

    assert await intake(dovecot, mailbox, desk, database, clock).sync_once() == 2

    first, second = await helpers.tickets(database)
    assert (first.subject, first.channel, second.subject) == ("Top-up missing", "email", "Refund?")
    [ann] = await helpers.messages(database, first.id)
    assert ann.text == "My top-up of 50 USDT is not on my balance."
    assert (ann.external_id, ann.reply_address, ann.auth) == (
        "<ann-1@example.org>",
        "billing@example.org",
        "none",
    )
    assert ann.created_at == arrived, "the server's arrival time starts the SLA wait"
    assert first.waiting_since == arrived
    customers = await helpers.rows(database, Customer)
    assert [c.name for c in customers] == ["Ann Example", "bob@example.net"]
    assert [r.recipient for r in await receipts(database)] == [
        "billing@example.org",
        "bob@example.net",
    ]
    assert all(r"\Seen" in flags for flags in dovecot.flags(mailbox).values())
    assert (await cursor(database, mailbox)) == (dovecot.uidvalidity(mailbox), 2)


async def test_attachments_are_kept_as_metadata(
    dovecot: Dovecot, mailbox: str, desk: Desk, database: Database, clock: Clock
) -> None:
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = "ann@example.org"
    msg["Subject"] = "Screenshot"
    msg["Message-ID"] = "<att-1@example.org>"
    msg.set_content("See the attached file.")
    msg.add_attachment(b"%PDF-1.4 test", maintype="application", subtype="pdf", filename="tx.pdf")
    uid = dovecot.append(mailbox, msg.as_bytes())
    await intake(dovecot, mailbox, desk, database, clock).sync_once()
    [message] = await inbound(database)
    uidvalidity = dovecot.uidvalidity(mailbox)
    assert message.text == "See the attached file."
    assert message.attachments == [
        {
            "kind": "document",
            "ref": f"imap:{uidvalidity}:{uid}:0",
            "filename": "tx.pdf",
            "mime_type": "application/pdf",
            "size": 13,
        }
    ]


async def test_replies_thread_by_message_id_and_by_tag_never_by_subject(
    dovecot: Dovecot, mailbox: str, desk: Desk, database: Database, clock: Clock
) -> None:
    reader = intake(dovecot, mailbox, desk, database, clock)
    dovecot.append(mailbox, customer_mail("ann@example.org", "Top-up missing", "First."))
    await reader.sync_once()
    [receipt] = await receipts(database)
    [ticket] = await helpers.tickets(database)
    our_id = receipt.payload["message_id"]
    assert receipt.payload["subject_line"] == f"[#{ticket.id}] Top-up missing"

    dovecot.append(
        mailbox,
        customer_mail(
            "ann@example.org",
            "Re: something else entirely",
            "Answer to your receipt.",
            in_reply_to=our_id,
            references=[our_id],
        ),
    )
    dovecot.append(
        mailbox, customer_mail("ann@example.org", f"More on [#{ticket.id}]", "A tagged mail.")
    )
    dovecot.append(mailbox, customer_mail("eve@example.net", "Top-up missing", "Same subject."))
    dovecot.append(mailbox, customer_mail("eve@example.net", f"[#{ticket.id}]", "Not her ticket."))
    assert await reader.sync_once() == 4

    texts = [m.text for m in await helpers.messages(database, ticket.id)]
    assert texts == ["First.", "Answer to your receipt.", "A tagged mail."]
    assert len(await helpers.tickets(database)) == 3, "Eve's mails open tickets of her own"
    assert len(await receipts(database)) == 3, "follow-ups get no second receipt"


async def test_vacation_reply_is_stored_without_receipt_or_sla_wait(
    dovecot: Dovecot, mailbox: str, desk: Desk, database: Database, clock: Clock
) -> None:
    raw = (DATA / "vacation_autoreply.eml").read_bytes()
    dovecot.append(mailbox, raw)
    await intake(dovecot, mailbox, desk, database, clock).sync_once()

    [ticket] = await helpers.tickets(database)
    [message] = await helpers.messages(database, ticket.id)
    assert "out of the office" in message.text
    assert message.counts_for_sla is False
    assert (ticket.waiting_since, ticket.due_at) == (None, None)
    assert await receipts(database) == []
    notices = await helpers.outbox(database, OutboxRow.route == "agents")
    assert [n.payload["automated"] for n in notices] == [True], "agents still see it"


async def test_bounce_of_our_reply_lands_on_its_ticket(
    dovecot: Dovecot, mailbox: str, desk: Desk, database: Database, clock: Clock
) -> None:
    async with database.sessions.begin() as session:
        await add_agent(session, AGENT, Role.AGENT, "Sam", at=clock.now, actor="test")
    reader = intake(dovecot, mailbox, desk, database, clock)
    dovecot.append(mailbox, customer_mail("Ann <ann@example.org>", "Help", "Please help."))
    await reader.sync_once()
    [ticket] = await helpers.tickets(database)
    reply_id = await desk.reply(ticket.id, AGENT, "Here is how.")
    [reply] = [m for m in await helpers.messages(database, ticket.id) if m.id == reply_id]
    assert reply.external_id

    dovecot.append(mailbox, bounce(reply.external_id, "ann@example.org"))
    await reader.sync_once()

    assert len(await helpers.tickets(database)) == 1
    messages = await helpers.messages(database, ticket.id)
    assert [m.direction for m in messages] == ["in", "out", "in"]
    reply_after, bounced = messages[1], messages[2]
    assert reply_after.delivery == "bounced"
    assert bounced.counts_for_sla is False and "User unknown" in bounced.text
    assert bounced.reply_address == "ann@example.org", "answers still go to the customer"
    assert [c.name for c in await helpers.rows(database, Customer)] == ["Ann"]
    events = [
        n.payload["event"] for n in await helpers.outbox(database, OutboxRow.route == "agents")
    ]
    assert events[-1] == "bounced"
    assert len(await receipts(database)) == 1


async def test_bounce_of_a_receipt_finds_its_ticket_too(
    dovecot: Dovecot, mailbox: str, desk: Desk, database: Database, clock: Clock
) -> None:
    reader = intake(dovecot, mailbox, desk, database, clock)
    dovecot.append(mailbox, customer_mail("Ann <ann@exmaple.org>", "Typo in my address", "Hi"))
    await reader.sync_once()
    [receipt] = await receipts(database)
    dovecot.append(mailbox, bounce(receipt.payload["message_id"], "ann@exmaple.org"))
    await reader.sync_once()

    [ticket] = await helpers.tickets(database)
    messages = await helpers.messages(database, ticket.id)
    assert [m.counts_for_sla for m in messages] == [True, False]
    assert "User unknown" in messages[1].text
    assert [c.name for c in await helpers.rows(database, Customer)] == ["Ann"]


async def test_unusable_mail_is_quarantined_once_and_the_rest_goes_on(
    dovecot: Dovecot, mailbox: str, desk: Desk, database: Database, clock: Clock
) -> None:
    dovecot.append(mailbox, customer_mail("ann@example.org", "One", "first"))
    garbage_uid = dovecot.append(mailbox, b"this is not a mail at all\r\n")
    dovecot.append(mailbox, b"Subject: no sender\r\n\r\nwho wrote this?\r\n")
    dovecot.append(mailbox, customer_mail("bob@example.org", "Two", "second"))
    reader = intake(dovecot, mailbox, desk, database, clock)
    assert await reader.sync_once() == 4

    assert [t.subject for t in await helpers.tickets(database)] == ["One", "Two"]
    quarantined = await helpers.rows(database, Quarantined)
    uidvalidity = dovecot.uidvalidity(mailbox)
    assert [q.reference for q in quarantined] == [
        f"{uidvalidity}:{garbage_uid}",
        f"{uidvalidity}:{garbage_uid + 1}",
    ]
    assert quarantined[0].raw == b"this is not a mail at all\r\n"
    assert "MailParseError" in quarantined[0].error
    assert "no sender" in quarantined[1].error
    notices = await helpers.outbox(database, OutboxRow.route == "agents")
    assert sum(n.payload["event"] == "quarantined" for n in notices) == 2
    assert all(r"\Seen" in flags for flags in dovecot.flags(mailbox).values())

    async with database.sessions.begin() as session:  # a crash before the cursor moved
        await session.execute(delete(MailCursor))
    with dovecot.client() as imap:
        imap.select(mailbox)
        imap.uid("STORE", "1:*", "-FLAGS.SILENT", r"(\Seen)")
    await reader.sync_once()
    assert len(await helpers.rows(database, Quarantined)) == 2, "set aside once"
    assert len(await inbound(database)) == 2


async def test_an_unreachable_database_skips_nothing(
    dovecot: Dovecot, mailbox: str, desk: Desk, database: Database, clock: Clock
) -> None:
    await intake(dovecot, mailbox, desk, database, clock).sync_once()  # the cursor exists
    dovecot.append_many(
        mailbox, [customer_mail(f"c{n}@example.org", f"Q{n}", f"waits {n}") for n in range(2)]
    )
    unreachable = db.create_engine("postgresql://postgres@127.0.0.1:1/nowhere")
    try:
        offline = Desk(
            async_sessionmaker(unreachable), SlaPolicy(calendar=BusinessCalendar()), Templates()
        )
        stalled = intake(dovecot, mailbox, offline, database, clock)
        with pytest.raises(StorageUnavailable, match="database unavailable"):
            await stalled.sync_once()
    finally:
        await unreachable.dispose()
    assert (await cursor(database, mailbox)) == (dovecot.uidvalidity(mailbox), 0)
    assert not any(r"\Seen" in flags for flags in dovecot.flags(mailbox).values())
    assert await helpers.rows(database, Quarantined) == []

    assert await intake(dovecot, mailbox, desk, database, clock).sync_once() == 2
    assert sorted(m.text for m in await inbound(database)) == ["waits 0", "waits 1"]


async def test_a_restarted_intake_stores_nothing_twice(
    dovecot: Dovecot, mailbox: str, desk: Desk, database: Database, clock: Clock
) -> None:
    for n in range(5):
        dovecot.append(mailbox, customer_mail(f"c{n}@example.org", f"Question {n}", f"text {n}"))
    await intake(dovecot, mailbox, desk, database, clock).sync_once()
    assert len(await inbound(database)) == 5

    # A crash after the commit but before \Seen and the cursor: everything is read again.
    async with database.sessions.begin() as session:
        await session.execute(delete(MailCursor))
    with dovecot.client() as imap:
        imap.select(mailbox)
        imap.uid("STORE", "1:*", "-FLAGS.SILENT", r"(\Seen)")
    dovecot.append(mailbox, customer_mail("late@example.org", "Late", "arrived meanwhile"))
    restarted = intake(dovecot, mailbox, desk, database, clock)
    assert await restarted.sync_once() == 6
    assert len(await inbound(database)) == 6
    assert len(await receipts(database)) == 6
    assert await count(database, InboundKey) == 6
    assert await restarted.sync_once() == 0


async def test_first_start_leaves_already_read_history_alone(
    dovecot: Dovecot, mailbox: str, desk: Desk, database: Database, clock: Clock
) -> None:
    dovecot.append(mailbox, customer_mail("old@example.org", "Old", "read long ago"), seen=True)
    dovecot.append(mailbox, customer_mail("new@example.org", "New", "unread"))
    dovecot.append(mailbox, customer_mail("old2@example.org", "Old 2", "read too"), seen=True)
    reader = intake(dovecot, mailbox, desk, database, clock)
    assert await reader.sync_once() == 1
    assert [t.subject for t in await helpers.tickets(database)] == ["New"]
    assert (await cursor(database, mailbox)) == (dovecot.uidvalidity(mailbox), 3)
    dovecot.append(mailbox, customer_mail("next@example.org", "Next", "new mail"), seen=True)
    assert await reader.sync_once() == 1, "after the first start every new mail counts"


async def test_uidvalidity_change_resyncs_without_duplicates(
    dovecot: Dovecot, mailbox: str, desk: Desk, database: Database, clock: Clock
) -> None:
    mails = [customer_mail(f"c{n}@example.org", f"Q{n}", f"text {n}") for n in range(3)]
    no_id = b"From: anon@example.org\r\nSubject: no id\r\n\r\nno Message-ID here\r\n"
    dovecot.append_many(mailbox, [*mails, no_id])
    await intake(dovecot, mailbox, desk, database, clock).sync_once()
    before = dovecot.uidvalidity(mailbox)

    dovecot.delete(mailbox)
    dovecot.create(mailbox)
    dovecot.append_many(mailbox, [no_id, *reversed(mails)])
    dovecot.append(mailbox, customer_mail("new@example.org", "Q new", "only this one is new"))
    after = dovecot.uidvalidity(mailbox)
    assert after != before

    assert await intake(dovecot, mailbox, desk, database, clock).sync_once() == 5
    assert sorted(m.text for m in await inbound(database)) == [
        "no Message-ID here",
        "only this one is new",
        "text 0",
        "text 1",
        "text 2",
    ]
    assert (await cursor(database, mailbox)) == (after, 5)


async def test_idle_picks_up_new_mail_within_two_seconds(
    dovecot: Dovecot, mailbox: str, desk: Desk, database: Database, clock: Clock
) -> None:
    reader = intake(dovecot, mailbox, desk, database, clock, poll_interval=600, idle_renew=0.3)
    async with running(reader):
        await eventually(lambda: cursor(database, mailbox))
        await asyncio.sleep(1.0)  # IDLE is renewed a few times meanwhile
        started = time.monotonic()
        dovecot.append(mailbox, customer_mail("ann@example.org", "Quick", "Are you there?"))
        await eventually(lambda: inbound(database), within=3)
        elapsed = time.monotonic() - started
    assert elapsed < 2.0, f"took {elapsed:.2f}s"


async def test_polling_fallback_without_idle(
    dovecot: Dovecot, mailbox: str, desk: Desk, database: Database, clock: Clock
) -> None:
    reader = intake(dovecot, mailbox, desk, database, clock, use_idle=False, poll_interval=0.2)
    async with running(reader):
        await eventually(lambda: cursor(database, mailbox))
        dovecot.append(mailbox, customer_mail("ann@example.org", "Polled", "found by polling"))
        [message] = await eventually(lambda: inbound(database), within=3)
    assert message.text == "found by polling"


async def test_dovecot_restart_is_survived_and_agents_hear_about_the_outage(
    dovecot: Dovecot, mailbox: str, desk: Desk, database: Database, clock: Clock
) -> None:
    told: list[tuple[bool, str]] = []
    to_agents = health_notices(database.sessions, Templates(), clock=clock)

    async def on_health(ok: bool, detail: str) -> None:
        told.append((ok, detail))
        await to_agents(ok, detail)

    reader = intake(dovecot, mailbox, desk, database, clock, on_health=on_health)
    async with running(reader):
        await eventually(lambda: cursor(database, mailbox))
        dovecot.stop()
        try:
            await asyncio.sleep(0.3)
            assert told == [], "a short outage is nobody's business"
            clock.advance(minutes=11)

            async def alerted() -> list[tuple[bool, str]]:
                return told

            await eventually(alerted, within=3)
            assert [ok for ok, _ in told] == [False]
            assert "no mail could be fetched for 11 minutes" in told[0][1]
        finally:
            dovecot.start()
        dovecot.append(mailbox, customer_mail("ann@example.org", "After", "after the restart"))
        [message] = await eventually(lambda: inbound(database), within=5)
        assert message.text == "after the restart"
        await eventually(lambda: _told_twice(told), within=3)
    assert [ok for ok, _ in told] == [False, True]
    notices = await helpers.outbox(database, OutboxRow.route == "agents")
    health = [n.payload["text"] for n in notices if n.payload["event"] == "mail_health"]
    assert len(health) == 2
    assert health[0].startswith("📭 Email intake: no mail could be fetched for 11 minutes")
    assert health[1].startswith("📬 Email intake works again")


async def _told_twice(told: list[tuple[bool, str]]) -> bool:
    return len(told) == 2


@pytest.mark.parametrize("tls", [Tls.STARTTLS, Tls.TLS])
async def test_starttls_and_implicit_tls(
    dovecot: Dovecot,
    mailbox: str,
    desk: Desk,
    database: Database,
    clock: Clock,
    tls_files: TlsFiles,
    tls: Tls,
) -> None:
    dovecot.append(mailbox, customer_mail("ann@example.org", "Secure", "over TLS"))
    reader = intake(
        dovecot, mailbox, desk, database, clock, tls=tls, ssl_context=tls_files.client_context()
    )
    assert await reader.sync_once() == 1
    untrusting = intake(dovecot, mailbox, desk, database, clock, tls=tls)
    with pytest.raises(ImapError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        await untrusting.sync_once()


async def test_wrong_password_is_an_imap_error(dovecot: Dovecot, mailbox: str) -> None:
    # Once per session, without a database: Dovecot makes each later failure wait longer.
    sessions = async_sessionmaker(create_async_engine("sqlite+aiosqlite://"))
    desk = Desk(sessions, SlaPolicy(calendar=BusinessCalendar()), Templates())
    settings = dovecot.settings(mailbox, password="wrong", host=OTHER_LOOPBACK)
    reader = ImapIntake(settings, desk, sessions, SUPPORT, timeout=10)
    with pytest.raises(ImapError, match="login as support refused"):
        await reader.sync_once()
