"""The report's rows as both databases hold them, and `/stats`'s median of today."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.conftest import Clock, Database
from tests.helpers import telegram
from tests.report_fixtures import seed_october
from tickets import queue
from tickets.desk import Desk
from tickets.policy import SlaPolicy
from tickets.rendering import Templates
from tickets.reports import monthly
from tickets.reports.figures import Month, Summary
from tickets.sla import BusinessCalendar
from tickets.tables import Customer, Message, Response, Ticket

OCTOBER = Month(2026, 10)
LATER = datetime(2026, 11, 20, 12, tzinfo=UTC)


def oct_(day: int, hour: int = 0, month: int = 10) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


async def answered_in_november(database: Database) -> int:
    """A wait from Thu 29 Oct answered on 3 Nov: overdue at October's end (due Fri 30 Oct)."""
    async with database.sessions.begin() as session:
        customer = Customer(name="Nina", plan="pro", created_at=oct_(1))
        session.add(customer)
        await session.flush()
        ticket = Ticket(
            customer_id=customer.id,
            channel="email",
            status="open",
            plan="pro",
            opened_at=oct_(29),
            updated_at=oct_(3, 9, 11),
        )
        session.add(ticket)
        await session.flush()
        reply = Message(
            ticket_id=ticket.id, direction="out", channel="email", created_at=oct_(3, 9, 11)
        )
        session.add(reply)
        await session.flush()
        session.add(
            Response(
                ticket_id=ticket.id,
                message_id=reply.id,
                plan="pro",
                channel="email",
                waiting_since=oct_(29),
                answered_at=oct_(3, 9, 11),
                business_hours=57.0,  # Thu, Fri, Mon 2 Nov and 9 h of Tue 3 Nov
            )
        )
        return ticket.id


async def test_october_from_the_database(database: Database, policy: SlaPolicy) -> None:
    tickets = await seed_october(database)
    late_answer = await answered_in_november(database)
    desk = Desk(database.sessions, policy, Templates(), clock=Clock(oct_(28, 12)))
    waiting = await desk.receive(telegram(41, "Still nothing?", name="Wes"))  # Wed 28 Oct 12:00
    desk_friday = Desk(database.sessions, policy, Templates(), clock=Clock(oct_(30, 6)))
    await desk_friday.receive(telegram(42, "Hello?", name="Fay"))  # 18 h by the month's end

    report, late = await monthly.load(database.sessions, policy, LATER, OCTOBER)
    whole, rows = await monthly.load(database.sessions, policy, LATER, OCTOBER, rows=True)
    assert report == whole, "the fast path and the whole rows give the same report"
    assert [r.ticket for r in rows] == tickets and [r.ticket for r in late] == [tickets[3]]

    assert report.period.complete and report.period.end == oct_(1, 0, 11)
    assert report.overall == Summary(6, 4.0, 30.0, within_target=4, within_sla=5)
    assert [(b.name, b.summary.responses) for b in report.by_agent] == [
        ("Report Ada", 3),
        ("Report Sam", 3),
    ]
    assert [(w.ticket, w.due_at, w.hours_waited, w.answered_at) for w in report.overdue] == [
        (waiting.ticket, oct_(29, 12), 60.0, None),  # Wed 12 h + Thu + Fri
        (late_answer, oct_(30), 48.0, oct_(3, 9, 11)),
    ]
    assert report.breaches == 3

    november, _ = await monthly.load(database.sessions, policy, LATER)
    assert not november.period.complete and november.period.end == LATER
    assert [(r.ticket, r.business_hours) for r in november.late] == [(late_answer, 57.0)]


async def test_stats_median_of_today(database: Database, policy: SlaPolicy) -> None:
    await seed_october(database)  # answered at 12:00 on 2-7 Oct: 2, 1, 4, 30, 5, 8 hours
    async with database.sessions() as session:
        fifth = await queue.stats(session, policy, oct_(5, 13))
        before_noon = await queue.stats(session, policy, oct_(3, 11))
        berlin = SlaPolicy(calendar=BusinessCalendar(tz="Europe/Berlin"))
        # 23:30 UTC on the 5th is already the 6th in Berlin: today's answer is still to come.
        late_evening = await queue.stats(session, berlin, datetime(2026, 10, 5, 23, 30, tzinfo=UTC))
    assert (fifth.answered_today, fifth.median_today) == (1, 30.0)
    assert (before_noon.answered_today, before_noon.median_today) == (0, None)
    assert (late_evening.answered_today, late_evening.median_today) == (0, None)
