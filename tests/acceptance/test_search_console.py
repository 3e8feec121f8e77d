"""End to end: `/history`, `/search` and `/merge` (issue 15, points 1 and 3) through the running
service, on SQLite and PostgreSQL, against the local Bot API server. The assertions are what the
group and the customers received and what the database holds.
"""

from __future__ import annotations

import asyncio

from tests import helpers
from tests.acceptance.test_agents_console import answers_to, says
from tests.acceptance.test_refunds_telegram import press
from tests.conftest import Database
from tests.telegram_harness import Desk, running_desk
from tickets.desk import Desk as CoreDesk
from tickets.model import OutboxKind, TicketStatus
from tickets.policy import SlaPolicy
from tickets.rendering import Templates
from tickets.sla import BusinessCalendar
from tickets.tables import OutboxRow, Ticket


def core(database: Database) -> CoreDesk:
    """The desk's core on the service's database, to write what no channel here carries (mail)."""
    return CoreDesk(database.sessions, SlaPolicy(calendar=BusinessCalendar()), Templates())


def link_of(desk: Desk, text: str, number: int) -> str:
    """The URL the answer's `#N` links to."""
    for m in desk.server.sent_to(desk.group):
        if m.text == text:
            for entity in m.entities:
                start, length = 2 * entity["offset"], 2 * entity["length"]  # UTF-16 units
                shown = text.encode("utf-16-le")[start : start + length].decode("utf-16-le")
                if entity["type"] == "text_link" and shown == f"#{number}":
                    return str(entity["url"])
    raise AssertionError(f"no link to #{number} in {text!r}")


async def test_search_answers_agents_with_a_list_and_buttons(database: Database) -> None:
    async with running_desk(database) as desk:
        _, tron = await desk.customer_opens("Ann", "My Tron withdrawal is stuck")
        _, other = await desk.customer_opens("Bo", "invoice for March")
        topic = await desk.topic_of(tron.id)
        stranger = await desk.server.user_sends(desk.stranger, chat=desk.group, text="/search tron")

        said = await says(desk, desk.agent, "/search tron withdrawal")
        text = said.text or ""
        assert text.startswith("🔎 1 found for tron withdrawal")
        assert f"#{tron.id} · open · telegram" in text and "Ann" in text
        assert f"#{other.id}" not in text
        internal = str(desk.group.id).removeprefix("-100")
        assert link_of(desk, text, tron.id) == f"https://t.me/c/{internal}/{topic}"
        [button] = said.callback_data()

        answer = await press(desk, desk.agent, said, button)
        assert answer == ""
        shown = await desk.server.wait_for(
            lambda: next(
                (m for m in desk.server.sent_to(desk.group) if m.reply_to == said.message_id), None
            ),
            10,
        )
        assert (shown.text or "").startswith(f"#{tron.id} · open")
        forged = button.replace(f":{tron.id}:", f":{other.id}:")
        assert "not valid" in await press(desk, desk.agent, said, forged, tampered=True)
        assert "Only agents" in await press(desk, desk.stranger, said, button)

        said = await says(desk, desk.agent, f"/search #{other.id}")
        assert f"#{other.id} · open" in (said.text or "")
        said = await says(desk, desk.agent, "/search nothing-like-this")
        assert said.text == "🔎 Nothing found for nothing-like-this."
        for bad in ("/search", "/search ?!", "/history", "/merge 3", "/history x"):
            assert ((await says(desk, desk.agent, bad)).text or "").startswith("⚠️ Usage: /"), bad
        # the stranger's lane is handled in order: their /search got nothing
        assert answers_to(desk, {stranger["message_id"]}) == []


async def test_history_in_a_topic_lists_earlier_tickets(database: Database) -> None:
    async with running_desk(database) as desk:
        ann, first = await desk.customer_opens("Ann", "first question")
        await says(desk, desk.agent, f"/close {first.id}")
        await desk.server.user_sends(ann, text="/new")
        await desk.server.user_sends(ann, text="second question")
        second = await _newest(database)
        assert second.id != first.id
        topic = await desk.topic_of(second.id)

        said = await says(desk, desk.agent, "/history", thread_id=topic)
        text = said.text or ""
        assert text.startswith("🗂 Ann's other tickets")
        assert f"#{first.id} · closed · telegram" in text
        assert f"#{second.id} ·" not in text
        said = await says(desk, desk.agent, f"/history {first.id}")
        assert f"#{second.id} · open" in (said.text or "")


async def test_merge_from_the_surviving_topic_tells_the_customer(database: Database) -> None:
    async with running_desk(database) as desk:
        bob, chat = await desk.customer_opens("Bob", "any news about my payment?")
        mail = await core(database).receive(
            helpers.email("bob@example.org", "card declined", name="Bob", subject="Payment")
        )
        topic = await desk.topic_of(chat.id)

        said = await says(desk, desk.agent, f"/merge {chat.id}", thread_id=topic)
        assert said.text == f"⚠️ #{chat.id} cannot be merged into itself"
        said = await says(desk, desk.agent, f"/merge {mail.ticket}", thread_id=topic)
        assert said.text == (
            f"🔗 #{mail.ticket} is merged into #{chat.id}: 1 message moved; #{mail.ticket} is "
            f"closed and points here. #{mail.ticket} was another customer record's (for example "
            "the same person by email and by Telegram): merged as asked. The customer was told "
            "by email (bob@example.org) and Telegram."
        )
        notice = await desk.wait_customer(bob, "has been joined")
        assert notice.text == (
            f"Your ticket #{mail.ticket} has been joined with ticket #{chat.id}: we continue "
            "there, and nothing you wrote is lost."
        )
        [mailed] = await helpers.outbox(
            database, OutboxRow.kind == OutboxKind.NOTICE.value, OutboxRow.route == "email"
        )
        assert mailed.recipient == "bob@example.org" and mailed.ticket_id == chat.id
        texts = [m.text for m in await helpers.messages(database, chat.id)]
        assert texts == ["any news about my payment?", "card declined"]
        merged = await helpers.ticket(database, mail.ticket)
        assert merged.status == TicketStatus.CLOSED.value
        said = await says(desk, desk.agent, f"/merge {mail.ticket}", thread_id=topic)
        assert said.text == f"⚠️ #{mail.ticket} was already merged into #{chat.id}"
        trail = (await says(desk, desk.agent, f"/audit {chat.id}")).text or ""
        assert "merge" in trail and f"merged={mail.ticket}" in trail


async def _newest(database: Database) -> Ticket:
    for _ in range(200):
        found = await helpers.tickets(database)
        if len(found) > 1:
            return found[-1]
        await asyncio.sleep(0.05)
    raise AssertionError("no second ticket")
