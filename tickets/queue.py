"""The queue and the other read views agents and the CLI use.

The queue's order is the design's: tickets past due or inside the risk window first, then Pro,
then everyone else, each by due time. Because business time is monotone, "inside the risk window"
is `due_at <= policy.risk_cutoff(now)`, so each band is one range scan of an index on
`(due_at)` or `(plan, due_at)`: the top of a queue of any length costs three short index reads.
Pro priority cannot push a Basic ticket into a breach: a Basic ticket that nears its due time
enters the first band, ahead of every Pro ticket that is not also at risk.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from tickets.errors import TicketNotFound
from tickets.model import (
    AgentView,
    Attachment,
    Channel,
    DeliveryState,
    Direction,
    MessageView,
    Plan,
    QueueEntry,
    QueueStats,
    Role,
    TicketStatus,
    TicketView,
)
from tickets.policy import SlaPolicy
from tickets.reports.query import median_between
from tickets.tables import Agent, Customer, Message, Ticket

Assignee = aliased(Agent)


def _queue_select() -> Select[Ticket, str, str | None]:
    return (
        select(Ticket, Customer.name, Assignee.name)
        .join(Customer, Customer.id == Ticket.customer_id)
        .outerjoin(Assignee, Assignee.id == Ticket.assignee_id)
    )


async def top(
    session: AsyncSession, policy: SlaPolicy, now: datetime, limit: int = 20
) -> list[QueueEntry]:
    """The first `limit` tickets waiting on us, in queue order."""
    cutoff = policy.risk_cutoff(now)
    waiting = Ticket.due_at.is_not(None)
    bands = [
        _queue_select().where(waiting, Ticket.due_at <= cutoff),
        _queue_select().where(waiting, Ticket.due_at > cutoff, Ticket.plan == Plan.PRO.value),
        _queue_select().where(waiting, Ticket.due_at > cutoff, Ticket.plan != Plan.PRO.value),
    ]
    entries: list[QueueEntry] = []
    for band in bands:
        if len(entries) >= limit:
            break
        rows = await session.execute(
            band.order_by(Ticket.due_at, Ticket.id).limit(limit - len(entries))
        )
        entries.extend(
            _entry(policy, now, ticket, customer, assignee) for ticket, customer, assignee in rows
        )
    return entries


def _entry(
    policy: SlaPolicy, now: datetime, ticket: Ticket, customer: str, assignee: str | None
) -> QueueEntry:
    return QueueEntry(
        ticket=ticket.id,
        customer=customer,
        plan=Plan(ticket.plan),
        channel=Channel(ticket.channel),
        subject=ticket.subject,
        assignee=assignee,
        waiting_since=ticket.waiting_since,
        due_at=ticket.due_at,
        urgency=policy.urgency(ticket.due_at, now),
        hours_left=policy.hours_left(ticket.due_at, now),
    )


async def ticket_view(
    session: AsyncSession, policy: SlaPolicy, number: int, now: datetime
) -> TicketView:
    """One ticket with its whole history."""
    row = (await session.execute(_queue_select().where(Ticket.id == number))).first()
    if row is None:
        raise TicketNotFound(number)
    ticket, customer, assignee = row
    Author = aliased(Agent)
    messages = await session.execute(
        select(Message, Author.name)
        .outerjoin(Author, Author.id == Message.author_agent_id)
        .where(Message.ticket_id == number)
        .order_by(Message.id)
    )
    return TicketView(
        number=ticket.id,
        status=TicketStatus(ticket.status),
        channel=Channel(ticket.channel),
        plan=Plan(ticket.plan),
        subject=ticket.subject,
        customer=customer,
        customer_id=ticket.customer_id,
        assignee=assignee,
        opened_at=ticket.opened_at,
        closed_at=ticket.closed_at,
        waiting_since=ticket.waiting_since,
        due_at=ticket.due_at,
        urgency=policy.urgency(ticket.due_at, now),
        messages=tuple(
            MessageView(
                id=message.id,
                direction=Direction(message.direction),
                channel=Channel(message.channel) if message.channel else None,
                author=author or (customer if message.direction == Direction.IN.value else "agent"),
                text=message.text,
                attachments=tuple(Attachment.from_json(a) for a in message.attachments or []),
                created_at=message.created_at,
                delivery=DeliveryState(message.delivery) if message.delivery else None,
                external_id=message.external_id,
            )
            for message, author in messages
        ),
    )


async def ticket_list(
    session: AsyncSession,
    policy: SlaPolicy,
    now: datetime,
    *,
    status: str = "open",
    limit: int = 100,
) -> list[QueueEntry]:
    """Tickets by status: `open`, `closed` or `all` newest first; `waiting` in queue order."""
    if status == "waiting":
        return await top(session, policy, now, limit)
    query = _queue_select().order_by(Ticket.id.desc()).limit(limit)
    if status in (TicketStatus.OPEN.value, TicketStatus.CLOSED.value):
        query = query.where(Ticket.status == status)
    elif status != "all":
        raise ValueError(f"unknown status {status!r}: use open, waiting, closed or all")
    rows = await session.execute(query)
    return [_entry(policy, now, ticket, customer, assignee) for ticket, customer, assignee in rows]


async def stats(session: AsyncSession, policy: SlaPolicy, now: datetime) -> QueueStats:
    """Open, waiting, at-risk and breached counts, from the same indexes as the queue, and
    today's median response (nearest rank, business hours) from the responses' index."""
    waiting = Ticket.due_at.is_not(None)
    open_count = await session.scalar(
        select(func.count()).select_from(Ticket).where(Ticket.status == TicketStatus.OPEN.value)
    )
    row = (
        await session.execute(
            select(
                func.count(),
                func.count().filter(Ticket.due_at <= policy.risk_cutoff(now)),
                func.count().filter(Ticket.due_at <= now),
                func.min(Ticket.waiting_since),
            ).where(waiting)
        )
    ).one()
    waiting_count, risky, breached, oldest = row
    local = now.astimezone(policy.calendar.tz)
    midnight = datetime(local.year, local.month, local.day, tzinfo=policy.calendar.tz)
    answered_today, median_today = await median_between(session, midnight, now)
    return QueueStats(
        open=int(open_count or 0),
        waiting=int(waiting_count),
        at_risk=int(risky) - int(breached),
        breached=int(breached),
        oldest_wait=oldest,
        answered_today=answered_today,
        median_today=median_today,
    )


async def customer_tickets(
    session: AsyncSession, policy: SlaPolicy, telegram_id: int, now: datetime
) -> list[QueueEntry]:
    """A Telegram customer's open tickets, newest first (what `/status` shows them)."""
    rows = await session.execute(
        _queue_select()
        .where(Customer.telegram_id == telegram_id, Ticket.status == TicketStatus.OPEN.value)
        .order_by(Ticket.id.desc())
        .limit(20)
    )
    return [_entry(policy, now, ticket, customer, assignee) for ticket, customer, assignee in rows]


async def agent_list(session: AsyncSession) -> list[AgentView]:
    """Agents on the allowlist, admins first."""
    agents = await session.scalars(
        select(Agent).where(Agent.removed_at.is_(None)).order_by(Agent.role, Agent.telegram_id)
    )
    return [
        AgentView(telegram_id=a.telegram_id, name=a.name, role=Role(a.role), added_at=a.added_at)
        for a in agents
    ]
