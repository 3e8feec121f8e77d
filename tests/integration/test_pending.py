"""`/pending` and auto-close (issue 15, point 5), as the database and the outbox see them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from tests import helpers
from tests.conftest import Clock, Database
from tests.helpers import email, telegram
from tickets.agents import add_agent
from tickets.desk import Desk
from tickets.errors import AgentNotFound, InvalidAction, TicketNotFound
from tickets.model import Role
from tickets.outbox import Delivery
from tickets.pending import Swept, business_days_later, day_hours
from tickets.policy import SlaPolicy
from tickets.queue import QueueViews
from tickets.rendering import Templates
from tickets.sla import BusinessCalendar
from tickets.tables import OutboxRow, PendingTicket

AGENT = 9002


async def add_agents(database: Database, clock: Clock) -> None:
    async with database.sessions.begin() as session:
        await add_agent(session, AGENT, Role.AGENT, "Sam", at=clock(), actor="test")


async def answer(desk: Desk, database: Database, clock: Clock, number: int, text: str) -> None:
    """An agent's reply, delivered to the customer."""
    await desk.reply(number, AGENT, text)
    async with database.sessions.begin() as session:
        rows = await helpers.rows(database, OutboxRow, OutboxRow.kind == "reply")
        stored = await session.get(OutboxRow, rows[-1].id)
        assert stored is not None
        await desk.delivered(session, [Delivery(stored, clock.now, f"1:{stored.id}")])


async def notices(database: Database) -> list[tuple[str, str]]:
    """Automatic notices to customers: (recipient, text)."""
    rows = await helpers.outbox(database, OutboxRow.kind == "notice")
    return [(row.recipient, row.payload["text"]) for row in rows]


async def parked_rows(database: Database) -> list[PendingTicket]:
    async with database.sessions() as session:
        return list(await session.scalars(select(PendingTicket).order_by(PendingTicket.ticket_id)))


async def agent_events(database: Database) -> list[str]:
    rows = await helpers.outbox(database, OutboxRow.kind == "agent_notice")
    return [row.payload["event"] for row in rows]


# -- pure --------------------------------------------------------------------------------------


def test_a_business_day_is_the_daily_window() -> None:
    assert day_hours(BusinessCalendar()) == 24
    office = BusinessCalendar.from_strings(hours="09:00-17:00")
    assert day_hours(office) == 8
    friday = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    assert business_days_later(office, friday, 1) == datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    assert business_days_later(BusinessCalendar(), friday, 3) == datetime(
        2026, 12, 2, 10, 0, tzinfo=UTC
    )


# -- /pending ----------------------------------------------------------------------------------


async def test_pending_leaves_the_queue_reminds_then_closes_once(
    desk: Desk, database: Database, policy: SlaPolicy, clock: Clock
) -> None:
    await add_agents(database, clock)
    intake = await desk.receive(telegram(1001, "My key stopped working"))
    number = intake.ticket
    parked = await desk.pending.park(number, AGENT, 2)  # Tuesday 09:00
    assert parked.was_waiting
    assert parked.remind_at == datetime(2026, 11, 26, 9, 0, tzinfo=UTC)  # Thursday
    assert parked.close_at == datetime(2026, 11, 30, 9, 0, tzinfo=UTC)  # Monday
    ticket = await helpers.ticket(database, number)
    assert (ticket.waiting_since, ticket.due_at) == (None, None)
    queue = await QueueViews(database.sessions, policy).top(clock())
    assert queue == [], "it left the SLA queue"

    clock.now = datetime(2026, 11, 26, 8, 59, tzinfo=UTC)
    assert await desk.pending.sweep() == Swept()
    clock.now = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
    assert await desk.pending.sweep() == Swept(reminded=1)
    assert await desk.pending.sweep() == Swept(), "one reminder"
    [(to, text)] = await notices(database)
    assert to == "1001"
    assert f"Ticket #{number}: we are still waiting for your answer" in text
    assert "Mon 30 Nov 2026, 09:00 UTC" in text

    clock.now = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    assert await desk.pending.sweep() == Swept(closed=1)
    assert await desk.pending.sweep() == Swept(), "one close"
    ticket = await helpers.ticket(database, number)
    assert ticket.status == "closed"
    assert ticket.closed_at == clock.now
    texts = [text for _, text in await notices(database)]
    assert len(texts) == 2
    assert texts[1].startswith(f"Ticket #{number} is closed: we did not hear back from you.")
    assert "pending_closed" in await agent_events(database)
    assert await parked_rows(database) == []
    actions = [(e.actor, e.action) for e in await helpers.audit(database) if e.ticket_id]
    assert ("agent:9002", "pending") in actions
    assert ("system", "pending_reminder") in actions
    assert ("system", "close") in actions


async def test_a_customer_reply_ends_pending_and_starts_a_new_wait(
    desk: Desk, database: Database, policy: SlaPolicy, clock: Clock
) -> None:
    await add_agents(database, clock)
    intake = await desk.receive(email("bob@example.com", "Refund please"))
    await answer(desk, database, clock, intake.ticket, "Which payment?")
    await desk.pending.park(intake.ticket, AGENT)  # 3 business days
    clock.advance(days=1)  # Wednesday
    await desk.receive(email("bob@example.com", "The one from Monday", ticket_tag=intake.ticket))
    ticket = await helpers.ticket(database, intake.ticket)
    assert ticket.waiting_since == clock.now, "a new wait started"
    assert ticket.due_at == policy.due_at(clock.now)

    await answer(desk, database, clock, intake.ticket, "Done.")  # not waiting again
    clock.advance(days=10)
    assert await desk.pending.sweep() == Swept(ended=1)
    assert await notices(database) == [], "no reminder, no close: the customer had answered"
    assert (await helpers.ticket(database, intake.ticket)).status == "open"
    assert await parked_rows(database) == []


async def test_closing_a_pending_ticket_drops_its_timers(
    desk: Desk, database: Database, clock: Clock
) -> None:
    await add_agents(database, clock)
    intake = await desk.receive(telegram(1001, "hi"))
    await desk.pending.park(intake.ticket, AGENT, 1)
    await desk.close(intake.ticket, AGENT)
    await desk.reopen(intake.ticket, AGENT)
    clock.advance(days=5)
    assert await desk.pending.sweep() == Swept()
    assert await notices(database) == []
    assert (await helpers.ticket(database, intake.ticket)).status == "open"


async def test_pending_again_restarts_the_timers(
    desk: Desk, database: Database, clock: Clock
) -> None:
    await add_agents(database, clock)
    intake = await desk.receive(telegram(1001, "hi"))
    await desk.pending.park(intake.ticket, AGENT, 1)
    clock.advance(days=1)
    assert await desk.pending.sweep() == Swept(reminded=1)
    again = await desk.pending.park(intake.ticket, AGENT, 5)
    assert not again.was_waiting
    clock.advance(days=6)  # Tuesday: four business days
    assert await desk.pending.sweep() == Swept()
    clock.advance(days=1)  # five
    assert await desk.pending.sweep() == Swept(reminded=1)
    assert [row.days for row in await parked_rows(database)] == [5]


async def test_pending_refuses_what_it_cannot_do(
    desk: Desk, database: Database, clock: Clock
) -> None:
    await add_agents(database, clock)
    intake = await desk.receive(telegram(1001, "hi"))
    with pytest.raises(AgentNotFound):
        await desk.pending.park(intake.ticket, 4242)
    with pytest.raises(TicketNotFound):
        await desk.pending.park(999, AGENT)
    for days in (0, 91):
        with pytest.raises(InvalidAction, match="days must be 1 to 90"):
            await desk.pending.park(intake.ticket, AGENT, days)
    await desk.close(intake.ticket, AGENT)
    with pytest.raises(InvalidAction, match="is closed"):
        await desk.pending.park(intake.ticket, AGENT)
    assert await parked_rows(database) == []


# -- AUTO_CLOSE_DAYS ---------------------------------------------------------------------------


def auto_closing(database: Database, policy: SlaPolicy, clock: Clock, days: int) -> Desk:
    return Desk(database.sessions, policy, Templates(), clock=clock, auto_close_days=days)


async def test_answered_tickets_close_after_auto_close_days(
    database: Database, policy: SlaPolicy, clock: Clock
) -> None:
    desk = auto_closing(database, policy, clock, 2)
    await add_agents(database, clock)
    answered = await desk.receive(telegram(1001, "question"))
    unanswered = await desk.receive(email("bob@example.com", "still waiting"))
    parked = await desk.receive(telegram(1003, "another"))
    await answer(desk, database, clock, answered.ticket, "Here you are.")  # Tuesday 09:00
    await desk.pending.park(parked.ticket, AGENT, 30)

    clock.now = datetime(2026, 11, 26, 8, 59, tzinfo=UTC)  # Thursday, just before 2 days
    assert await desk.pending.sweep() == Swept()
    clock.now = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
    assert await desk.pending.sweep() == Swept(auto_closed=1)
    assert await desk.pending.sweep() == Swept(), "closed once"
    assert (await helpers.ticket(database, answered.ticket)).status == "closed"
    assert (await helpers.ticket(database, unanswered.ticket)).status == "open"
    assert (await helpers.ticket(database, parked.ticket)).status == "open"
    [(to, text)] = await notices(database)
    assert to == "1001"
    assert "we have answered it and heard nothing more for 2 business days" in text
    assert "auto_closed" in await agent_events(database)


async def test_auto_close_counts_business_days_and_is_off_at_zero(
    database: Database, policy: SlaPolicy, clock: Clock
) -> None:
    await add_agents(database, clock)
    clock.now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)  # Friday
    desk = auto_closing(database, policy, clock, 1)
    intake = await desk.receive(telegram(1001, "question"))
    await answer(desk, database, clock, intake.ticket, "Answer.")
    clock.now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)  # Sunday: two calendar days, 12 h
    assert await desk.pending.sweep() == Swept()
    assert await auto_closing(database, policy, clock, 0).pending.sweep() == Swept()
    clock.now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)  # Monday noon: one business day
    assert await auto_closing(database, policy, clock, 0).pending.sweep() == Swept()
    assert await desk.pending.sweep() == Swept(auto_closed=1)


async def test_auto_close_with_office_hours(database: Database, clock: Clock) -> None:
    await add_agents(database, clock)
    office = SlaPolicy(calendar=BusinessCalendar.from_strings(hours="09:00-17:00"))
    desk = auto_closing(database, office, clock, 1)
    clock.now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # Monday 09:00
    intake = await desk.receive(telegram(1001, "question"))
    await answer(desk, database, clock, intake.ticket, "Answer.")
    clock.now = datetime(2026, 11, 23, 16, 59, tzinfo=UTC)
    assert await desk.pending.sweep() == Swept()
    clock.now = datetime(2026, 11, 23, 17, 0, tzinfo=UTC)  # one business day: 8 hours
    assert await desk.pending.sweep() == Swept(auto_closed=1)


async def test_a_customer_reply_keeps_a_ticket_open(
    database: Database, policy: SlaPolicy, clock: Clock
) -> None:
    await add_agents(database, clock)
    desk = auto_closing(database, policy, clock, 1)
    intake = await desk.receive(telegram(1001, "question"))
    await answer(desk, database, clock, intake.ticket, "Answer.")
    clock.advance(hours=12)
    await desk.receive(telegram(1001, "thanks, one more thing"))
    clock.advance(days=5)
    assert await desk.pending.sweep() == Swept(), "waiting on us: never closed by itself"
    assert (await helpers.ticket(database, intake.ticket)).status == "open"
