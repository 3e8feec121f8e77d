"""What a black-box mail corpus found (issue 16, part 2): each finding as real mail, appended to
a private Dovecot and read by the real IMAP intake, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest
from sqlalchemy import select

from tests import helpers
from tests.conftest import Clock, Database
from tests.integration.test_cli import cli
from tests.integration.test_mail_imap import bounce, intake
from tests.mailservers import (  # noqa: F401 - fixtures are found by name
    SUPPORT,
    Dovecot,
    customer_mail,
    dovecot_fixture,
    mailbox_fixture,
    tls_files_fixture,
)
from tickets.desk import Desk
from tickets.policy import SlaPolicy
from tickets.queue import ticket_view
from tickets.rendering import Templates
from tickets.tables import CustomerEmail, MailId, Message, OutboxRow, Quarantined

ANN = "Ann Example <ann@example.org>"
TEXT = "My deposit of 30 USDT is missing."


async def notices(database: Database) -> list[dict[str, object]]:
    rows = await helpers.outbox(database, OutboxRow.kind == "agent_notice")
    return [dict(row.payload) for row in rows]


async def addresses(database: Database) -> list[str]:
    return [row.address for row in await helpers.rows(database, CustomerEmail)]


async def test_an_agents_mail_from_our_address_is_a_note_not_the_customers_words(
    dovecot: Dovecot, mailbox: str, desk: Desk, database: Database, clock: Clock
) -> None:
    dovecot.append(mailbox, customer_mail(ANN, "Deposit", TEXT, message_id="<ann-1@example.org>"))
    reader = intake(dovecot, mailbox, desk, database, clock)
    await reader.sync_once()
    [ticket] = await helpers.tickets(database)
    waiting_since = ticket.waiting_since
    # An agent answers from a desktop mail client as the support address, Cc to the mailbox.
    dovecot.append(
        mailbox,
        customer_mail(
            f"Support <{SUPPORT}>",
            "Re: Deposit",
            "Found it, credited now.",
            in_reply_to="<ann-1@example.org>",
            to="ann@example.org",
            headers={"Cc": SUPPORT},
        ),
    )
    await reader.sync_once()

    messages = await helpers.messages(database, ticket.id)
    assert [(m.direction, m.sender_address) for m in messages] == [
        ("in", "ann@example.org"),
        ("note", SUPPORT),
    ]
    assert not messages[1].counts_for_sla
    again = await helpers.ticket(database, ticket.id)
    assert again.waiting_since == waiting_since  # still waiting: the desk sent no answer
    assert SUPPORT not in await addresses(database)
    last = (await notices(database))[-1]
    assert last["event"] == "outside_mail"
    assert "mail from the support address itself" in str(last["text"])
    assert "Found it, credited now." in str(last["text"])
    async with database.sessions() as session:
        view = await ticket_view(session, desk.policy, ticket.id, clock.now)
    assert [m.author for m in view.messages] == [ANN, f"Support <{SUPPORT}>"]


async def test_our_own_acknowledgement_sent_back_never_makes_the_desk_a_customer(
    dovecot: Dovecot, mailbox: str, desk: Desk, database: Database, clock: Clock
) -> None:
    dovecot.append(mailbox, customer_mail(ANN, "Deposit", TEXT, message_id="<ann-2@example.org>"))
    reader = intake(dovecot, mailbox, desk, database, clock)
    await reader.sync_once()
    [ticket] = await helpers.tickets(database)
    receipt_id = next(
        row.message_id
        for row in await helpers.rows(database, MailId)
        if row.message_id.startswith("<receipt-")
    )
    forwarded = customer_mail(
        f"Support <{SUPPORT}>",
        f"[#{ticket.id}] Deposit",
        "We received your message.",
        message_id=receipt_id,
        in_reply_to="<ann-2@example.org>",
        headers={"Auto-Submitted": "auto-generated", "X-Supportbot-Loop": "1"},
    )
    dovecot.append(mailbox, forwarded)
    # A forwarder that rewrote the Message-ID and dropped every thread header: no ticket at all.
    dovecot.append(
        mailbox,
        customer_mail(f"Support <{SUPPORT}>", "Deposit", "We received your message."),
    )
    await reader.sync_once()

    assert len(await helpers.tickets(database)) == 1
    assert await addresses(database) == ["ann@example.org"]
    kept = [(m.direction, m.sender_address) for m in await helpers.messages(database, ticket.id)]
    assert kept == [("in", "ann@example.org"), ("note", SUPPORT)]  # ours, kept as a note
    [aside] = await helpers.rows(database, Quarantined)
    assert "never becomes its own customer" in aside.error
    assert any(n["event"] == "quarantined" for n in await notices(database))


async def test_a_colleague_writing_into_a_ticket_is_shown_under_their_own_name(
    dovecot: Dovecot, mailbox: str, desk: Desk, database: Database, clock: Clock
) -> None:
    dovecot.append(mailbox, customer_mail(ANN, "Deposit", TEXT, message_id="<ann-3@example.org>"))
    reader = intake(dovecot, mailbox, desk, database, clock)
    await reader.sync_once()
    dovecot.append(
        mailbox,
        customer_mail(
            "Carl Colleague <carl@example.org>",
            "Re: Deposit",
            "I am Ann's colleague: the transaction hash is 0xabc.",
            in_reply_to="<ann-3@example.org>",
        ),
    )
    await reader.sync_once()

    [ticket] = await helpers.tickets(database)
    messages = await helpers.messages(database, ticket.id)
    assert [(m.sender_name, m.sender_address) for m in messages] == [
        ("Ann Example", "ann@example.org"),
        ("Carl Colleague", "carl@example.org"),
    ]
    async with database.sessions() as session:
        view = await ticket_view(session, desk.policy, ticket.id, clock.now)
    assert view.customer == "Ann Example"
    assert view.messages[1].author == "Carl Colleague <carl@example.org>"
    last = (await notices(database))[-1]
    assert last["event"] == "message" and str(last["text"]).startswith(
        f"💬 #{ticket.id} · Carl Colleague"
    )


async def test_a_bounce_notice_says_whether_the_acknowledgement_or_the_reply_bounced(
    dovecot: Dovecot, mailbox: str, desk: Desk, database: Database, clock: Clock
) -> None:
    dovecot.append(mailbox, customer_mail("dan@example.org", "Help", TEXT))
    reader = intake(dovecot, mailbox, desk, database, clock)
    await reader.sync_once()
    [ticket] = await helpers.tickets(database)
    receipt_id = next(
        row.message_id
        for row in await helpers.rows(database, MailId)
        if row.message_id.startswith("<receipt-")
    )
    dovecot.append(mailbox, bounce(receipt_id, "dan@example.org"))
    await reader.sync_once()

    notice = (await notices(database))[-1]
    assert notice["event"] == "bounced"
    text = str(notice["text"])
    assert "our acknowledgement to" in text and "no agent's reply was lost" in text
    assert "the agent's reply did not arrive" not in text
    assert [t.id for t in await helpers.tickets(database)] == [ticket.id]


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


BROKEN = {
    "header line without a colon": (
        f"From: {ANN}\r\nTo: {SUPPORT}\r\nSubject: Help\r\nThis header has no colon\r\n"
        "Message-ID: <broken-1@example.org>\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Transfer-Encoding: base64\r\n\r\n{_b64(TEXT)}\r\n"
    ),
    "multipart without a boundary": (
        f"From: {ANN}\r\nTo: {SUPPORT}\r\nSubject: Help\r\nMessage-ID: <broken-2@example.org>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed\r\n\r\n--XYZ\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        f"{_b64(TEXT)}\r\n--XYZ\r\nContent-Type: application/pdf\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--XYZ--\r\n"
    ),
    "truncated MIME": (
        f"From: {ANN}\r\nTo: {SUPPORT}\r\nSubject: Help\r\nMessage-ID: <broken-3@example.org>\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="AB"\r\n\r\n--AB\r\n'
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        f"{_b64(TEXT)}\r\n--AB\r\nContent-Type: text/html; charset=utf-8\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\nPGh0bWw+PGJvZHk+SGVsbG8"
    ),
}


@pytest.mark.parametrize("kind", list(BROKEN))
async def test_broken_mail_shows_decoded_text_and_keeps_the_raw_source(
    kind: str, dovecot: Dovecot, mailbox: str, desk: Desk, database: Database, clock: Clock
) -> None:
    raw = BROKEN[kind].encode()
    dovecot.append(mailbox, raw)
    await intake(dovecot, mailbox, desk, database, clock).sync_once()

    [ticket] = await helpers.tickets(database)
    [message] = await helpers.messages(database, ticket.id)
    assert message.text.strip() == TEXT
    # The message's own notice (a mail's files follow in a notice of their own).
    [notice] = [n for n in await notices(database) if n.get("event") != "mail_files"]
    assert TEXT in str(notice["text"]) and notice["raw_source"] is True
    for raw_mime in ("Content-Transfer-Encoding", "--XYZ", _b64(TEXT)):
        assert raw_mime not in str(notice["text"])
    async with database.sessions() as session:
        kept = await session.scalar(select(Message.raw_source).where(Message.id == message.id))
    assert kept is not None and kept.replace(b"\r\n", b"\n") == raw.replace(b"\r\n", b"\n")


async def test_a_well_formed_mail_keeps_no_raw_source(
    dovecot: Dovecot, mailbox: str, desk: Desk, database: Database, clock: Clock
) -> None:
    dovecot.append(mailbox, customer_mail(ANN, "Deposit", TEXT))
    await intake(dovecot, mailbox, desk, database, clock).sync_once()
    [notice] = await notices(database)
    assert notice["raw_source"] is False
    async with database.sessions() as session:
        assert await session.scalar(select(Message.raw_source)) is None


async def test_ticket_numbers_have_no_gap_when_a_batch_is_retried_after_one_bad_mail(
    dovecot: Dovecot, mailbox: str, desk: Desk, database: Database, clock: Clock
) -> None:
    mails = [customer_mail(f"c{n}@example.org", f"Question {n}", TEXT) for n in range(3)]
    # Refused inside the batch's transaction: mail from our own address that belongs to no
    # ticket. The batch is rolled back and written again without it.
    mails.append(customer_mail(SUPPORT, "Stray", "A mail of ours that threads nowhere."))
    mails += [customer_mail(f"c{n}@example.org", f"Question {n}", TEXT) for n in range(3, 6)]
    dovecot.append_many(mailbox, mails)
    reader = intake(dovecot, mailbox, desk, database, clock, batch_size=10)
    assert await reader.sync_once() == 7

    assert [t.id for t in await helpers.tickets(database)] == [1, 2, 3, 4, 5, 6]
    assert len(await helpers.rows(database, Quarantined)) == 1
    dovecot.append(mailbox, customer_mail("c9@example.org", "Later", TEXT))
    await reader.sync_once()
    assert [t.id for t in await helpers.tickets(database)][-1] == 7


@pytest.mark.timeout(120)
async def test_tickets_show_json_gives_each_messages_sender_verdict_and_automation(
    dovecot: Dovecot,
    mailbox: str,
    desk: Desk,
    database: Database,
    database_url: str,
    clock: Clock,
    tmp_path: Path,
) -> None:
    dovecot.append(
        mailbox,
        customer_mail(
            ANN,
            "Refund",
            TEXT,
            message_id="<ann-5@example.org>",
            headers={
                "Authentication-Results": "mx.example.com; spf=fail smtp.mailfrom=example.org; "
                "dmarc=fail header.from=example.org"
            },
        ),
    )
    dovecot.append(
        mailbox,
        customer_mail(
            "ann@example.org",
            "Out of office",
            "I am away.",
            in_reply_to="<ann-5@example.org>",
            headers={"Auto-Submitted": "auto-replied"},
        ),
    )
    await intake(dovecot, mailbox, desk, database, clock).sync_once()
    [ticket] = await helpers.tickets(database)

    shown = cli(
        "tickets",
        "show",
        str(ticket.id),
        "--json",
        cwd=tmp_path,
        env={"DATABASE_URL": database_url},
    )
    assert shown.returncode == 0, shown.stderr
    view = json.loads(shown.stdout)
    assert view["unverified"] is True
    assert [(m["sender_address"], m["auth"], m["automated"]) for m in view["messages"]] == [
        ("ann@example.org", "fail", False),
        ("ann@example.org", "none", True),
    ]


async def test_concurrent_openers_never_take_the_same_number(
    database: Database, policy: SlaPolicy, clock: Clock
) -> None:
    """Numbers come from the highest so far: writers in parallel transactions (one desk per
    process here) must wait their turn (PostgreSQL: an advisory lock), never share a number."""
    desks = [Desk(database.sessions, policy, Templates(), clock=clock) for _ in range(10)]
    results = await asyncio.gather(
        *(
            desks[n % 10].receive(helpers.email(f"p{n}@example.org", "help", subject=f"Q{n}"))
            for n in range(30)
        ),
        return_exceptions=True,
    )
    assert sorted(r.ticket for r in results if not isinstance(r, BaseException)) == list(
        range(1, 31)
    ), [r for r in results if isinstance(r, BaseException)]
    assert [t.id for t in await helpers.tickets(database)] == list(range(1, 31))
