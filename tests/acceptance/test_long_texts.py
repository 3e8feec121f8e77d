"""Agents see everything the customer wrote, however long: through the running service.

A text longer than one notice shows its start in the notice (or card) and arrives whole as a
`.txt` file right under it; `/transcript` gives a ticket's every message in full. The tests
read what the local Bot API server received.
"""

from __future__ import annotations

import pytest

from sandbox.telegram import SentMessage
from tests import helpers
from tests.conftest import Database
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
from tests.telegram_harness import Desk, running_desk
from tickets.tables import OutboxRow


def long_text(characters: int, tag: str) -> str:
    """Numbered lines, so a missing or repeated piece anywhere would show."""
    lines: list[str] = []
    number = 0
    while sum(len(line) + 1 for line in lines) < characters:
        number += 1
        lines.append(f"{tag} line {number:05d}: my deposit of 50 USDT & <b>still</b> not there")
    return "\n".join(lines)[:characters]


async def file_in_group(desk: Desk, name_start: str, within: float = 30) -> SentMessage:
    def found() -> SentMessage | None:
        for message in desk.server.sent_to(desk.group):
            if message.file_name and message.file_name.startswith(name_start):
                return message
        return None

    return await desk.server.wait_for(found, within)


@pytest.mark.parametrize("forum", [True, False], ids=["topics", "cards"])
async def test_a_14000_character_follow_up_reaches_the_agents_whole(
    database: Database, forum: bool
) -> None:
    async with running_desk(database, forum=forum) as desk:
        ann, ticket = await desk.customer_opens("Ann", "My deposit is missing")
        card = await desk.card_of(ticket.id)
        text = long_text(14_000, "follow-up")
        await desk.server.user_sends(ann, text=text)

        document = await file_in_group(desk, f"ticket-{ticket.id}-message-")
        assert document.file_bytes is not None
        assert document.file_bytes.decode() == f"#{ticket.id} · Ann\n\n{text}\n"
        assert document.mime_type == "text/plain"
        assert "the whole message, 14,000 characters" in (document.text or "")
        notice = next(
            m for m in desk.server.sent_to(desk.group) if "follow-up line" in (m.text or "")
        )
        shown = notice.text or ""
        assert text[:3000] in shown and text not in shown
        assert "cut here: the whole text follows as a file" in shown
        if forum:
            topic = await desk.topic_of(ticket.id)
            assert notice.thread_id == topic and document.thread_id == topic
        else:
            assert notice.reply_to == card.message_id and document.reply_to == card.message_id
        assert document.message_id > notice.message_id

        async def all_delivered() -> bool:
            rows = await helpers.outbox(database, OutboxRow.route == "agents")
            return {row.status for row in rows} == {"delivered"}

        await eventually(all_delivered, within=10)


async def test_a_huge_first_message_reaches_the_agents_whole(database: Database) -> None:
    async with running_desk(database, forum=True) as desk:
        bob = desk.server.add_user("Bob")
        text = long_text(40_000, "first")
        await desk.server.user_sends(bob, text=text)
        await desk.wait_customer(bob, "ticket number")
        [ticket] = await helpers.tickets(database)
        card = await desk.card_of(ticket.id)
        assert (card.text or "").count("first line") > 30, "the card shows as much as fits"
        document = await file_in_group(desk, f"ticket-{ticket.id}-message-")
        assert document.file_bytes == f"#{ticket.id} · Bob\n\n{text}\n".encode()
        assert document.thread_id == await desk.topic_of(ticket.id)


async def test_a_huge_mail_reaches_the_agents_whole(
    database: Database, dovecot: Dovecot, mailbox: str, smtp_server: SmtpServer
) -> None:
    settings = service_mail_settings(dovecot, mailbox, smtp_server)
    text = long_text(60_000, "mail")
    async with running_desk(database, extra=settings) as desk:
        dovecot.append(mailbox, customer_mail("Carol <carol@example.org>", "A long story", text))
        [ticket] = await eventually(lambda: helpers.tickets(database), within=15)
        document = await file_in_group(desk, f"ticket-{ticket.id}-message-")
        assert document.file_bytes is not None
        assert document.file_bytes.decode().strip().endswith(text.strip())
        assert document.thread_id == await desk.topic_of(ticket.id)


async def test_transcript_gives_every_message_of_a_ticket_in_full(database: Database) -> None:
    async with running_desk(database, forum=True) as desk:
        ann, ticket = await desk.customer_opens("Ann", "My deposit is missing")
        topic = await desk.topic_of(ticket.id)
        text = long_text(14_000, "story")
        await desk.server.user_sends(ann, text=text)
        await file_in_group(desk, f"ticket-{ticket.id}-message-")
        await desk.server.user_sends(
            desk.agent, chat=desk.group, thread_id=topic, text="Found it, crediting now."
        )
        await desk.wait_group("sent on Telegram")

        await desk.server.user_sends(
            desk.agent, chat=desk.group, thread_id=topic, text="/transcript"
        )
        answer = await file_in_group(desk, f"ticket-{ticket.id}.txt")
        assert answer.thread_id == topic
        assert answer.file_bytes is not None
        transcript = answer.file_bytes.decode()
        assert transcript.startswith(f"#{ticket.id} · open · basic · telegram · Ann\n")
        assert "· customer · Ann\nMy deposit is missing\n" in transcript
        assert f"· customer · Ann\n{text}\n" in transcript
        assert "· agent · Sam [delivered]\nFound it, crediting now." in transcript
        assert answer.text == f"📄 #{ticket.id}: 3 messages"

        await desk.server.user_sends(desk.agent, chat=desk.group, text=f"/transcript {ticket.id}")
        await desk.server.wait_for(
            lambda: (
                len(
                    [
                        m
                        for m in desk.server.sent_to(desk.group)
                        if m.file_name == f"ticket-{ticket.id}.txt"
                    ]
                )
                == 2
            ),
            15,
        )
        await desk.server.user_sends(desk.agent, chat=desk.group, text="/transcript 99999999999")
        await desk.wait_group("there is no ticket #99999999999")
        await desk.server.user_sends(desk.agent, chat=desk.group, text="/transcript 4242")
        await desk.wait_group("4242")
