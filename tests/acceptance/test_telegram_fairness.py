"""End to end: one customer cannot slow down or silence the desk for the others.

The real service runs against the local Telegram server (and an SMTP server where codes are
mailed). Assertions are what Telegram received and what the database holds; where the point is
that one chat does not wait for another, the other chat is given a reason to wait that it
cannot escape by speed: a request held at the server for longer than anything else takes, or
answers paced at one a second.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import func, select

from accounts.tables import LinkCode
from bot.customers import COMMANDS_PER_CUSTOMER
from sandbox.service import serving
from tests import helpers
from tests.acceptance.test_accounts_telegram import mails_to, smtp_settings
from tests.acceptance.test_refunds_telegram import account_for
from tests.conftest import Database
from tests.integration.test_accounts_import import imported
from tests.mailservers import (  # noqa: F401 - fixtures are found by name
    SmtpServer,
    eventually,
    smtp_server_fixture,
)
from tests.telegram_harness import running_desk
from tickets.customer_messages import NEW_TICKETS_PER_CUSTOMER
from tickets.tables import Customer, InboxEvent, Message, OutboxRow, Ticket

T = TypeVar("T")
HOLD = 12.0  # seconds a request is held at the server (the bot's read timeout is 15)
START_TEXT = "This is our support desk"
SLOW_DOWN = "You're sending a lot; we've got your messages."


async def customer_tickets(database: Database, telegram_id: int) -> list[Ticket]:
    async with database.sessions() as session:
        found = await session.scalars(
            select(Ticket)
            .join(Customer, Customer.id == Ticket.customer_id)
            .where(Customer.telegram_id == telegram_id)
            .order_by(Ticket.id)
        )
        return list(found.all())


async def texts_from(database: Database, telegram_id: int) -> list[str]:
    async with database.sessions() as session:
        found = await session.scalars(
            select(Message.text)
            .join(Ticket, Ticket.id == Message.ticket_id)
            .join(Customer, Customer.id == Ticket.customer_id)
            .where(Customer.telegram_id == telegram_id, Message.direction == "in")
            .order_by(Message.id)
        )
        return list(found.all())


async def rows_to(database: Database, chat: int, kind: str) -> list[OutboxRow]:
    return list(
        await helpers.outbox(database, OutboxRow.recipient == str(chat), OutboxRow.kind == kind)
    )


@pytest.mark.slow
async def test_a_customer_whose_answer_hangs_holds_back_no_other_chat(database: Database) -> None:
    async with running_desk(database) as desk:
        zoe, ticket = await desk.customer_opens("Zoe", "my invoice is wrong")
        topic = await desk.topic_of(ticket.id)
        xavier = desk.server.add_user("Xavier")
        desk.server.hold_next("sendMessage", seconds=HOLD, chat_id=xavier.id)
        await desk.server.user_sends(xavier, text="/start")
        # Xavier's answer is on its way and stuck at Telegram for HOLD seconds.
        await desk.server.wait_for(lambda: desk.server.stats.held_requests == 1)

        # Meanwhile a new customer gets their receipt and Zoe gets an agent's answer.
        await desk.customer_opens("Yara", "where is my order?")
        await desk.server.user_sends(desk.agent, chat=desk.group, thread_id=topic, text="Fixed!")
        await desk.wait_customer(zoe, "Fixed!")
        assert desk.server.sent_to(xavier.id) == [], "the held answer has not arrived yet"

        await desk.wait_customer(xavier, START_TEXT, within=HOLD + 10)
        assert len(desk.server.sent_to(xavier.id)) == 1


async def test_a_flood_of_commands_gets_its_limit_of_answers_and_loses_no_words(
    database: Database,
) -> None:
    limit = COMMANDS_PER_CUSTOMER.limit
    async with running_desk(database) as desk:
        xavier = desk.server.add_user("Xavier")
        for _ in range(60):
            await desk.server.user_sends(xavier, text="/start")
        await desk.server.user_sends(xavier, sticker="CAAC-sticker")
        await desk.server.user_sends(xavier, text="/new my card was charged twice")
        await desk.server.user_sends(xavier, text="and here is the bank statement")

        # Another customer is served while Xavier's answers go out at one a second: they
        # cannot all have arrived before Yara's receipt.
        await desk.customer_opens("Yara", "where is my order?")
        assert len(desk.server.sent_to(xavier.id)) < limit + 1

        words = ["/new my card was charged twice", "and here is the bank statement"]
        assert await at_least(lambda: texts_from(database, xavier.id), 2) == words
        [ticket] = await customer_tickets(database, xavier.id)
        answers = await rows_to(database, xavier.id, "answer")
        assert len(answers) == limit + 1
        assert all(START_TEXT in a.payload["text"] for a in answers[:limit])
        assert answers[limit].payload["text"].startswith(SLOW_DOWN)
        assert "Commands get answers again from" in answers[limit].payload["text"]
        [receipt] = await rows_to(database, xavier.id, "receipt")
        assert receipt.ticket_id == ticket.id
        await desk.wait_customer(xavier, START_TEXT)


async def test_a_linked_customer_cannot_take_the_head_of_the_queue(database: Database) -> None:
    """Issue 12: 15 /refund messages opened 15 tickets, each first in its tier."""
    async with running_desk(database) as desk:
        eve, first = await desk.customer_opens("Eve", "hello")
        await account_for(desk, eve.id, "eve@example.org")
        for i in range(15):
            await desk.server.user_sends(eve, text=f"/refund please {i}")
        refund_texts = await at_least(lambda: texts_from(database, eve.id), 16)
        assert all("please" in t for t in refund_texts[1:])
        tickets = await customer_tickets(database, eve.id)
        assert [t.subject for t in tickets] == ["", "Refund request"]
        assert len(await helpers.messages(database, tickets[1].id)) == 15
        # Each answer is queued after its message is stored: wait for the last of them.
        reused = await at_least(lambda: rows_to(database, eve.id, "answer"), 14)
        assert len(reused) == 14
        assert all(f"open already as ticket #{tickets[1].id}" in r.payload["text"] for r in reused)

        # New tickets by /new: the limit counts the two she has; over it, messages join.
        allowed = NEW_TICKETS_PER_CUSTOMER.limit - 2
        for i in range(allowed + 2):
            await desk.server.user_sends(eve, text=f"/new issue {i}")
        await at_least(lambda: texts_from(database, eve.id), 16 + allowed + 2)
        tickets = await customer_tickets(database, eve.id)
        assert len(tickets) == NEW_TICKETS_PER_CUSTOMER.limit
        last = await helpers.messages(database, tickets[-1].id)
        assert [m.text for m in last] == [f"issue {i}" for i in range(allowed - 1, allowed + 2)]
        [notice] = await rows_to(database, eve.id, "notice")
        assert notice.payload["text"].startswith(SLOW_DOWN)
        assert f"go to your ticket #{tickets[-1].id}" in notice.payload["text"]

        await desk.server.user_sends(desk.agent, chat=desk.group, text="/queue")
        queue = await desk.wait_group("Queue (most urgent first)")
        lines = (queue.text or "").splitlines()[1:]
        assert sum("Eve" in line for line in lines) == NEW_TICKETS_PER_CUSTOMER.limit
        assert f"#{tickets[1].id}" in lines[0], "the one refund request is first"
        assert first.id != tickets[1].id


async def test_concurrent_link_requests_for_one_address_mail_three_codes(
    database: Database, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    """Issue 12: 15 accounts sending /link for a victim's address at once got 12 codes."""
    await imported(database, tmp_path)
    async with running_desk(database, extra=smtp_settings(smtp_server)) as desk:
        people = [desk.server.add_user(f"Mallory {i}") for i in range(15)]
        for person in people:  # all queued before the bot's next poll takes them together
            await desk.server.user_sends(person, text="/link ann@example.com")
        await desk.server.wait_for(lambda: all(desk.server.sent_to(p.id) for p in people), 20)
        async with database.sessions() as session:
            assert await session.scalar(select(func.count()).select_from(LinkCode)) == 3
        told = [m.text or "" for p in people for m in desk.server.sent_to(p.id)]
        assert sum("If an account exists" in t for t in told) == 3
        assert sum("Too many code requests" in t for t in told) == 12
        mails = await at_least(lambda: mails_to(smtp_server, "ann@example.com"), 3)
        await asyncio.sleep(0.5)  # nothing more is on its way
        assert len(mails) == len(await mails_to(smtp_server, "ann@example.com")) == 3


async def test_an_update_in_hand_at_shutdown_is_handled_at_the_next_start(
    database: Database,
) -> None:
    async with running_desk(database, serve=False) as desk:
        server = desk.server
        async with serving(desk.settings, server):
            # The agents' group is unreachable: the answer to /stats keeps failing.
            server.fail_next("sendMessage", status=502, times=10_000, chat_id=desk.group)
            await server.user_sends(desk.agent, chat=desk.group, text="/stats")
            await server.wait_for(lambda: server.stats.injected_failures >= 1)
            await server.wait_until_confirmed()  # Telegram was told; the update is kept
        async with database.sessions() as session:
            kept = (await session.scalars(select(InboxEvent))).all()
        assert [k.payload["message"]["text"] for k in kept] == ["/stats"]

        server.clear_faults()
        async with serving(desk.settings, server):
            await desk.wait_group("waiting on us")
        # Stopping told Telegram what was handled, and the inbox forgot it.
        assert await _none_kept(database)
        assert sum("waiting on us" in t for t in desk.group_texts()) == 1
        assert server.pending_updates == []


async def at_least(
    read: Callable[[], Awaitable[Sequence[T]]], count: int, within: float = 20
) -> list[T]:
    """What `read` returns once it holds at least `count` items."""

    async def enough() -> list[T]:
        items = list(await read())
        return items if len(items) >= count else []

    return await eventually(enough, within)


async def _none_kept(database: Database) -> bool:
    async with database.sessions() as session:
        return await session.scalar(select(func.count()).select_from(InboxEvent)) == 0
