"""The rows a monthly report is built from, read from the database (SQL kept here, math in
`tickets/reports/figures.py`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tickets.reports.figures import ResponseRow, ResponseTime, WaitRow, nearest_rank
from tickets.tables import Agent, Response, SatisfactionAsk, Ticket, TicketTag

# Responses are streamed from the database in chunks of this many rows.
CHUNK = 10_000
# Slow responses are read back by id in batches of this many (under every driver's limit).
ID_BATCH = 5_000

# What a report reads of each response.
_RESPONSE_COLUMNS = (
    Response.ticket_id,
    Response.plan,
    Response.channel,
    Response.agent_id,
    Response.waiting_since,
    Response.answered_at,
    Response.business_hours,
)


async def agent_names(session: AsyncSession) -> dict[int, str]:
    """Agents by id, named as the group knows them (their name, else their Telegram id)."""
    rows = await session.execute(select(Agent.id, Agent.name, Agent.telegram_id))
    return {row.id: row.name or str(row.telegram_id) for row in rows}


async def responses(session: AsyncSession, start: datetime, end: datetime) -> list[ResponseRow]:
    """Every response answered in [start, end), in the order they were answered."""
    return [row async for row in _responses(session, start, end)]


async def _responses(
    session: AsyncSession, start: datetime, end: datetime
) -> AsyncIterator[ResponseRow]:
    names = await agent_names(session)
    connection = await session.connection()
    result = await connection.stream(
        select(*_RESPONSE_COLUMNS)
        .where(Response.answered_at >= start, Response.answered_at < end)
        .order_by(Response.answered_at, Response.id)
        .execution_options(yield_per=CHUNK)
    )
    async for partition in result.partitions():
        for ticket, plan, channel, agent, since, answered, hours in partition:
            yield ResponseRow(
                ticket=ticket,
                plan=plan,
                channel=channel,
                agent=names.get(agent) if agent is not None else None,
                waiting_since=since,
                answered_at=answered,
                business_hours=hours,
            )


async def response_times(
    session: AsyncSession, start: datetime, end: datetime, over: float
) -> tuple[list[ResponseTime], list[ResponseRow]]:
    """Every response answered in [start, end) as plan, channel, agent and business hours, and
    the whole rows of those that took more than `over` hours.

    One pass over the month reads four plain columns, plus the id of the slow few (a CASE
    leaves the others NULL); their whole rows are read by id afterwards. Converting 300,000
    timestamps and building ORM rows was most of the cost of a busy month.
    """
    names = await agent_names(session)
    connection = await session.connection()
    result = await connection.execute(
        select(
            Response.plan,
            Response.channel,
            Response.agent_id,
            Response.business_hours,
            case((Response.business_hours > over, Response.id)),
        )
        .where(Response.answered_at >= start, Response.answered_at < end)
        .order_by(Response.business_hours)  # sorted in C; the report's sorts become merges
    )
    times: list[ResponseTime] = []
    slow: list[int] = []
    for plan, channel, agent_id, hours, slow_id in result.all():
        times.append((plan, channel, names.get(agent_id) if agent_id else None, hours))
        if slow_id is not None:
            slow.append(slow_id)
    late: list[ResponseRow] = []
    for first in range(0, len(slow), ID_BATCH):
        rows = await connection.execute(
            select(*_RESPONSE_COLUMNS).where(Response.id.in_(slow[first : first + ID_BATCH]))
        )
        late.extend(
            ResponseRow(t, plan, channel, names.get(a) if a is not None else None, since, at, h)
            for t, plan, channel, a, since, at, h in rows.all()
        )
    return times, late


async def tagged_times(
    session: AsyncSession, start: datetime, end: datetime
) -> list[tuple[str, float]]:
    """(tag, business hours) of every response answered in [start, end), once per tag of its
    ticket; responses of untagged tickets are not in it."""
    rows = await session.execute(
        select(TicketTag.tag, Response.business_hours)
        .join(TicketTag, TicketTag.ticket_id == Response.ticket_id)
        .where(Response.answered_at >= start, Response.answered_at < end)
    )
    return [(str(tag), float(hours)) for tag, hours in rows.all()]


async def open_waits(session: AsyncSession, end: datetime) -> list[WaitRow]:
    """Waits unanswered at `end` that may be past due by then: still waiting, or answered later.

    The due-time filter of still-waiting tickets uses the queue's index on `due_at`; the report
    applies the exact rule (`tickets.reports.figures`).
    """
    waiting = await session.execute(
        select(Ticket.id, Ticket.plan, Ticket.channel, Ticket.waiting_since).where(
            Ticket.due_at.is_not(None), Ticket.due_at <= end, Ticket.waiting_since < end
        )
    )
    rows = [
        WaitRow(t, plan, channel, since, None)
        for t, plan, channel, since in waiting
        if since is not None
    ]
    later = await session.execute(
        select(
            Response.ticket_id,
            Response.plan,
            Response.channel,
            Response.waiting_since,
            Response.answered_at,
        ).where(Response.answered_at >= end, Response.waiting_since < end)
    )
    rows.extend(WaitRow(t, plan, channel, since, at) for t, plan, channel, since, at in later)
    return rows


async def median_between(
    session: AsyncSession, start: datetime, end: datetime
) -> tuple[int, float | None]:
    """How many responses were answered in [start, end), and their nearest-rank median."""
    hours = sorted(
        (
            await session.scalars(
                select(Response.business_hours).where(
                    Response.answered_at >= start, Response.answered_at < end
                )
            )
        ).all()
    )
    return len(hours), nearest_rank(hours, 50)


async def agent_scores(
    session: AsyncSession, start: datetime, end: datetime
) -> list[tuple[str, int, float]]:
    """(agent, number of scores, average score) of satisfaction scores given in [start, end),
    the most scored agent first."""
    names = await agent_names(session)
    count = func.count(SatisfactionAsk.score)
    rows = await session.execute(
        select(SatisfactionAsk.agent_id, count, func.avg(SatisfactionAsk.score))
        .where(SatisfactionAsk.answered_at >= start, SatisfactionAsk.answered_at < end)
        .group_by(SatisfactionAsk.agent_id)
    )
    found = [
        (names.get(agent, "(no agent)") if agent is not None else "(no agent)", int(n), float(avg))
        for agent, n, avg in rows.all()
    ]
    return sorted(found, key=lambda row: (-row[1], row[0]))
