"""End to end: `/pending` and auto-close (issue 15, point 5) through the running service.

The sweep runs every second here (`SLA_WATCH_INTERVAL_SECONDS=1`); the tests move the stored
timers into the past rather than waiting business days. Assertions are what the customer and the
group received over the local Bot API server, and what the database holds.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from tests import helpers
from tests.acceptance.test_agents_console import answers_to, says
from tests.conftest import Database
from tests.mailservers import eventually
from tests.telegram_harness import running_desk
from tickets.ports import utcnow
from tickets.tables import Message, PendingTicket, Ticket

FAST_SWEEP = {"SLA_WATCH_INTERVAL_SECONDS": "1"}


async def test_pending_reminds_the_customer_then_closes_with_a_notice(database: Database) -> None:
    async with running_desk(database, extra=FAST_SWEEP) as desk:
        ann, ticket = await desk.customer_opens("Ann", "My key stopped working")
        n = ticket.id
        thread = await desk.topic_of(n)
        ignored = await desk.server.user_sends(desk.stranger, chat=desk.group, text=f"/pending {n}")
        for bad in (
            "/pending",
            f"/pending {n} 0",
            f"/pending {n} 91",
            f"/pending {n} x",
            "/pending x",
        ):
            said = await says(desk, desk.agent, bad)
            assert (said.text or "").startswith("⚠️ Usage: /pending N [days]"), bad
        said = await says(desk, desk.agent, "/pending 2", thread_id=thread)
        assert (said.text or "").startswith(f"⏸ #{n} waits on the customer. It left the SLA queue.")
        assert answers_to(desk, {ignored["message_id"]}) == [], "strangers get nothing"
        stored = await helpers.ticket(database, n)
        assert (stored.waiting_since, stored.due_at) == (None, None)
        queue = (await says(desk, desk.agent, "/queue")).text or ""
        assert f"#{n}" not in queue, queue

        past = utcnow() - timedelta(minutes=1)
        async with database.sessions.begin() as session:
            await session.execute(
                update(PendingTicket).where(PendingTicket.ticket_id == n).values(remind_at=past)
            )
        reminder = await desk.wait_customer(ann, "we are still waiting for your answer")
        assert (reminder.text or "").startswith(f"Ticket #{n}:")
        async with database.sessions.begin() as session:
            await session.execute(
                update(PendingTicket).where(PendingTicket.ticket_id == n).values(close_at=past)
            )
        await desk.wait_customer(ann, f"Ticket #{n} is closed: we did not hear back from you.")
        told = await desk.wait_group(f"🔒 #{n} closed: no answer from the customer")
        assert told.thread_id == thread
        assert (await helpers.ticket(database, n)).status == "closed"
        texts = [m.text or "" for m in desk.server.sent_to(ann)]
        assert sum("still waiting for your answer" in t for t in texts) == 1, "reminded once"
        assert sum("is closed" in t for t in texts) == 1, "closed once"


async def test_a_customer_message_ends_pending(database: Database) -> None:
    async with running_desk(database, extra=FAST_SWEEP) as desk:
        ann, ticket = await desk.customer_opens("Ann", "Refund?")
        n = ticket.id
        said = await says(desk, desk.agent, f"/pending #{n} 1")
        assert (said.text or "").startswith(f"⏸ #{n} waits on the customer.")
        await desk.server.user_sends(ann, text="Here is the payment id")
        await desk.wait_group("Here is the payment id")
        stored = await helpers.ticket(database, n)
        assert stored.waiting_since is not None and stored.due_at is not None, "a new wait"
        past = utcnow() - timedelta(minutes=1)
        async with database.sessions.begin() as session:
            await session.execute(
                update(PendingTicket)
                .where(PendingTicket.ticket_id == n)
                .values(remind_at=past, close_at=past)
            )

        async def dropped() -> bool:
            return await _parked(database) == []

        await eventually(dropped, 10)  # the sweep saw the customer's message and let go
        assert await _parked(database) == []
        assert (await helpers.ticket(database, n)).status == "open"
        texts = [m.text or "" for m in desk.server.sent_to(ann)]
        assert not any("still waiting" in t or "is closed" in t for t in texts)


async def test_answered_tickets_close_after_auto_close_days(database: Database) -> None:
    extra = {**FAST_SWEEP, "AUTO_CLOSE_DAYS": "2"}
    async with running_desk(database, extra=extra) as desk:
        ann, ticket = await desk.customer_opens("Ann", "How do I top up?")
        n = ticket.id
        thread = await desk.topic_of(n)
        await desk.server.user_sends(
            desk.agent, chat=desk.group, text="Use /topup.", thread_id=thread
        )
        await desk.wait_customer(ann, "Use /topup.")
        await desk.wait_group(f"✅ #{n}: reply sent on Telegram")
        long_ago = utcnow() - timedelta(days=10)
        async with database.sessions.begin() as session:
            await session.execute(
                update(Message)
                .where(Message.ticket_id == n, Message.delivered_at.is_not(None))
                .values(delivered_at=long_ago)
            )
            await session.execute(update(Ticket).where(Ticket.id == n).values(updated_at=long_ago))
        closed = await desk.wait_customer(ann, f"Ticket #{n} is closed, as we have answered it")
        assert "2 business days" in (closed.text or "")
        await desk.wait_group(f"🔒 #{n} closed by itself")
        assert (await helpers.ticket(database, n)).status == "closed"


async def _parked(database: Database) -> list[int]:
    async with database.sessions() as session:
        return list(await session.scalars(select(PendingTicket.ticket_id)))
