"""The queue and the other read views agents and the CLI use.

The queue's order is the design's: tickets past due or inside the risk window first, then Pro,
then everyone else, each by due time. Because business time is monotone, "inside the risk window"
is `due_at <= policy.risk_cutoff(now)`, so each band is one range scan of an index on
`(due_at)` or `(plan, due_at)`: the top of a queue of any length costs three short index reads.
Pro priority cannot push a Basic ticket into a breach: a Basic ticket that nears its due time
enters the first band, ahead of every Pro ticket that is not also at risk.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
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
    rows = (
        await session.execute(
            select(Message, Author.name)
            .outerjoin(Author, Author.id == Message.author_agent_id)
            .where(Message.ticket_id == number)
            .order_by(Message.id)
        )
    ).all()
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
                author=author or _sender(message, customer),
                text=message.text,
                attachments=tuple(Attachment.from_json(a) for a in message.attachments or []),
                created_at=message.created_at,
                delivery=DeliveryState(message.delivery) if message.delivery else None,
                external_id=message.external_id,
                sender_address=message.sender_address,
                auth=message.auth,
                automated=message.direction == Direction.IN.value and not message.counts_for_sla,
                vouched=message.vouched_at is not None,
            )
            for message, author in rows
        ),
        unverified=any(_unverified(message) for message, _author in rows),
    )


def _sender(message: Message, customer: str) -> str:
    """Who wrote a message no agent wrote: its own sender (a colleague writing into a ticket is
    not its owner), else the ticket's customer for messages stored before senders were kept."""
    name, address = (message.sender_name or "").strip(), message.sender_address or ""
    if name and address and name.lower() != address.lower():
        return f"{name} <{address}>"
    if name or address:
        return name or address
    return customer if message.direction == Direction.IN.value else "agent"


def _unverified(message: Message) -> bool:
    """A customer message whose sender failed SPF/DKIM/DMARC and nobody vouched for."""
    return (
        message.direction == Direction.IN.value
        and message.auth == "fail"
        and message.vouched_at is None
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


async def admins(sessions: async_sessionmaker[AsyncSession]) -> list[int]:
    """The Telegram ids of the admins on the allowlist (whom an outage alert goes to)."""
    async with sessions() as session:
        return [a.telegram_id for a in await agent_list(session) if a.role is Role.ADMIN]


async def open_ticket_about(
    sessions: async_sessionmaker[AsyncSession], customer_id: int, subject: str
) -> int | None:
    """The customer's newest open ticket with this subject (e.g. a refund request), if any."""
    async with sessions() as session:
        return await session.scalar(
            select(Ticket.id)
            .where(
                Ticket.customer_id == customer_id,
                Ticket.status == TicketStatus.OPEN.value,
                Ticket.subject == subject,
            )
            .order_by(Ticket.id.desc())
            .limit(1)
        )


async def first_in_tier(
    sessions: async_sessionmaker[AsyncSession], policy: SlaPolicy, number: int, now: datetime
) -> datetime | None:
    """Move a refund request to the top of its tier without entering the risk band.

    Its due time becomes one second before the earliest due time in its plan's tier outside the
    risk window (never later than its own SLA due time, never inside the window): it goes first
    among tickets that are not at risk, while every ticket at risk or breached still goes before
    it, as the queue policy says. Returns the new due time, or None when it stays as it was.
    """
    async with sessions.begin() as session:
        ticket = await session.get(Ticket, number, with_for_update=True)
        if ticket is None or ticket.due_at is None:
            return None
        cutoff = policy.risk_cutoff(now)
        earliest = await session.scalar(
            select(Ticket.due_at)
            .where(
                Ticket.due_at.is_not(None),
                Ticket.due_at > cutoff,
                Ticket.plan == ticket.plan,
                Ticket.id != ticket.id,
            )
            .order_by(Ticket.due_at)
            .limit(1)
        )
        if earliest is None:
            return None
        moved = max(earliest - timedelta(seconds=1), cutoff + timedelta(seconds=1))
        if moved >= ticket.due_at:
            return None
        ticket.due_at = moved
        return moved


class QueueViews:
    """What agents and customers are shown of the queue, each read in a session of its own:
    the Telegram commands call these instead of opening sessions themselves."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], policy: SlaPolicy) -> None:
        self._sessions = sessions
        self._policy = policy

    async def top(self, now: datetime, limit: int = 20) -> list[QueueEntry]:
        """The first `limit` tickets waiting on us, in queue order (`/queue`)."""
        async with self._sessions() as session:
            return await top(session, self._policy, now, limit)

    async def stats(self, now: datetime) -> QueueStats:
        """The desk's counts and today's median (`/stats`)."""
        async with self._sessions() as session:
            return await stats(session, self._policy, now)

    async def customer_tickets(self, telegram_id: int, now: datetime) -> list[QueueEntry]:
        """A Telegram customer's open tickets (`/status`)."""
        async with self._sessions() as session:
            return await customer_tickets(session, self._policy, telegram_id, now)

    async def ticket_view(self, number: int, now: datetime) -> TicketView:
        """One ticket with its whole history (`/transcript`)."""
        async with self._sessions() as session:
            return await ticket_view(session, self._policy, number, now)
