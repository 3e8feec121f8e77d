"""End to end (issue 16, part 2): mail appended to Dovecot, read by the running service; what the
agents' group on the local Bot API server shows of unverified senders and broken mail."""

from __future__ import annotations

import base64

import pytest

from tests import helpers
from tests.conftest import Database
from tests.mailservers import (  # noqa: F401 - fixtures are found by name
    SUPPORT,
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
from tests.telegram_harness import running_desk
from tickets.tables import AuditEntry, Message

WARNING = "⚠️ sender not verified"
FORGED = {
    # A "pass" that a foreign server wrote, under our own server's failing verdict.
    "Authentication-Results": "mx.example.com; spf=fail smtp.mailfrom=example.org; "
    "dkim=none; dmarc=fail header.from=example.org",
}


async def _tickets(database: Database) -> list[int]:
    return [t.id for t in await helpers.tickets(database)]


@pytest.mark.timeout(90)
@pytest.mark.slow
async def test_an_unverified_sender_is_flagged_on_card_and_title_until_an_agent_vouches(
    database: Database, dovecot: Dovecot, mailbox: str, smtp_server: SmtpServer
) -> None:
    settings = service_mail_settings(dovecot, mailbox, smtp_server)
    async with running_desk(database, extra=settings) as desk:
        dovecot.append(
            mailbox,
            customer_mail(
                "Eve <eve@example.org>",
                "Refund all",
                "Refund my whole balance to this new wallet.",
                headers={
                    **FORGED,
                    "X-Original-Authentication-Results": "evil.example; dmarc=pass",
                },
            ),
        )
        [number] = await eventually(lambda: _tickets(database), within=15)
        card = await desk.card_of(number)
        # No account matches eve@example.org, and still the card says it.
        assert WARNING in (card.text or "") and f"/vouch {number}" in (card.text or "")
        topic = await desk.topic_of(number)
        [title] = [t.name for t in desk.server.topics(desk.group) if t.thread_id == topic]
        assert "⚠️ unverified" in title

        # Only an agent may vouch; a stranger in the group is refused and nothing changes.
        await desk.server.user_sends(desk.stranger, chat=desk.group, text=f"/vouch {number}")
        await desk.server.user_sends(
            desk.agent, chat=desk.group, thread_id=topic, text=f"/vouch {number}"
        )
        await desk.wait_group("you vouched for the sender of 1 unverified message", within=15)
        await desk.wait_group(f"#{number}: Sam vouched for the sender (eve@example.org)")

        async def card_edited() -> bool:
            edits = desk.server.edits_in(desk.group)
            return any(
                e.message_id == card.message_id and WARNING not in (e.text or "") for e in edits
            )

        assert await eventually(card_edited, within=15)

        async def renamed() -> list[str]:
            names = [t.name for t in desk.server.topics(desk.group) if t.thread_id == topic]
            return names if names and "⚠️" not in names[0] else []

        await eventually(renamed, within=15)
        vouches = await helpers.rows(database, AuditEntry, AuditEntry.action == "vouch")
        assert [(v.ticket_id, v.details["senders"]) for v in vouches] == [
            (number, ["eve@example.org"])
        ]
        [message] = await helpers.rows(database, Message, Message.ticket_id == number)
        assert message.vouched_at is not None

        # Vouching twice is refused with a clear answer.
        await desk.server.user_sends(
            desk.agent, chat=desk.group, thread_id=topic, text=f"/vouch {number}"
        )
        await desk.wait_group("has no unverified sender to vouch for", within=15)


@pytest.mark.timeout(90)
@pytest.mark.slow
async def test_broken_mail_reaches_the_agents_decoded_with_its_raw_source_as_eml(
    database: Database, dovecot: Dovecot, mailbox: str, smtp_server: SmtpServer
) -> None:
    text = "Hello, my deposit of 30 USDT is missing."
    encoded = base64.b64encode(text.encode()).decode()
    raw = (
        f"From: Ann <ann@example.org>\r\nTo: {SUPPORT}\r\nSubject: Help\r\n"
        "Message-ID: <broken-9@example.org>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed\r\n\r\n--XYZ\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        f"{encoded}\r\n--XYZ--\r\n"
    ).encode()
    settings = service_mail_settings(dovecot, mailbox, smtp_server)
    async with running_desk(database, extra=settings) as desk:
        dovecot.append(mailbox, raw)
        [number] = await eventually(lambda: _tickets(database), within=15)
        card = await desk.card_of(number)
        assert text in (card.text or "")

        async def eml() -> list[bytes]:
            return [
                m.file_bytes
                for m in desk.server.sent_to(desk.group)
                if m.file_name == f"ticket-{number}-message-1.eml" and m.file_bytes
            ]

        [document] = await eventually(eml, within=15)
        assert document.replace(b"\r\n", b"\n") == raw.replace(b"\r\n", b"\n")
        shown = "\n".join(desk.group_texts())
        assert encoded not in shown and "Content-Transfer-Encoding" not in shown
