"""Waiting on the customer (issue 15, point 5): `/pending`, its reminder and close, and the
auto-close of answered tickets.

* `/pending N [days]` parks a ticket: its running wait ends (it leaves the SLA queue), the
  customer is reminded after `days` business days, and the ticket closes, with a notice, the same
  number of business days after the reminder. A customer message ends the parking: it starts a
  new wait as any message does, and the sweep drops the parking without acting on it.
* With `AUTO_CLOSE_DAYS` > 0, an answered ticket (no customer message waiting, not parked)
  closes with a notice once that many business days passed since its last delivered answer and
  since its last change.
* A business day is as long as the calendar's daily window (24 business hours with whole days).
* `Pending.sweep` runs periodically: every reminder and every close happens once, in the same
  transaction as its notice, under the ticket's lock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tickets import audit
from tickets.agents import active_agent
from tickets.customer_messages import answering
from tickets.customer_notices import notify_customer
from tickets.errors import AgentNotFound, InvalidAction, TicketNotFound
from tickets.model import Direction, TicketStatus
from tickets.notices import notify_agents
from tickets.policy import SlaPolicy
from tickets.ports import Clock, Renderer, utcnow
from tickets.satisfaction import Satisfaction
from tickets.sla import BusinessCalendar
from tickets.tables import Message, PendingTicket, Ticket

DEFAULT_PENDING_DAYS = 3
MAX_PENDING_DAYS = 90
SWEEP_BATCH = 200


def day_hours(calendar: BusinessCalendar) -> float:
    """Business hours in one business day: the length of the daily window."""
    start, end = calendar.window
    first = start.hour * 60 + start.minute
    last = end.hour * 60 + end.minute or 24 * 60
    return (last - first) / 60


def business_days_later(calendar: BusinessCalendar, start: datetime, days: int) -> datetime:
    """The moment `days` business days after `start`."""
    return calendar.add_hours(start, days * day_hours(calendar))


@dataclass(frozen=True)
class Parked:
    """A ticket `/pending` parked: when the customer is reminded, when it closes."""

    number: int
    days: int
    remind_at: datetime
    close_at: datetime
    was_waiting: bool


@dataclass(frozen=True)
class Swept:
    """What one sweep did."""

    reminded: int = 0
    closed: int = 0
    auto_closed: int = 0
    ended: int = 0


class Pending:
    """Parks tickets while waiting on the customer; reminds, closes and auto-closes them."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        policy: SlaPolicy,
        templates: Renderer,
        *,
        clock: Clock = utcnow,
        wakeup: Callable[[], None] | None = None,
        mail_domain: str = "supportbot.invalid",
        auto_close_days: int = 0,
        satisfaction: Satisfaction | None = None,
    ) -> None:
        self._sessions = sessions
        self._calendar = policy.calendar
        self._templates = templates
        self._clock = clock
        self._wakeup = wakeup or (lambda: None)
        self._mail_domain = mail_domain
        self.auto_close_days = auto_close_days
        self._satisfaction = satisfaction

    async def park(self, number: int, agent_id: int, days: int = DEFAULT_PENDING_DAYS) -> Parked:
        """Mark a ticket as waiting on its customer: out of the SLA queue, reminder, then close."""
        if not 1 <= days <= MAX_PENDING_DAYS:
            raise InvalidAction(f"days must be 1 to {MAX_PENDING_DAYS}")
        now = self._clock()
        async with self._sessions.begin() as session:
            agent = await active_agent(session, agent_id)
            if agent is None:
                raise AgentNotFound(agent_id)
            ticket = await session.get(Ticket, number, with_for_update=True)
            if ticket is None:
                raise TicketNotFound(number)
            if ticket.status == TicketStatus.CLOSED.value:
                raise InvalidAction(f"#{number} is closed; reopen it first")
            last_in = await answering(session, ticket.id)
            if last_in is None or not last_in.reply_address:
                raise InvalidAction(f"#{number} has no customer address to remind")
            remind_at = business_days_later(self._calendar, now, days)
            close_at = business_days_later(self._calendar, remind_at, days)
            row = await session.get(PendingTicket, ticket.id) or PendingTicket(ticket_id=ticket.id)
            row.agent_id = agent.id
            row.since = now
            row.days = days
            row.after_message_id = last_in.id
            row.remind_at = remind_at
            row.close_at = close_at
            row.reminded_at = None
            session.add(row)
            was_waiting = ticket.waiting_since is not None
            ticket.waiting_since = None
            ticket.waiting_message_id = None
            ticket.due_at = None
            ticket.updated_at = now
            audit.record(
                session,
                at=now,
                action="pending",
                agent=agent,
                ticket_id=ticket.id,
                days=days,
                remind_at=remind_at.isoformat(),
                close_at=close_at.isoformat(),
                was_waiting=was_waiting,
            )
        return Parked(number, days, remind_at, close_at, was_waiting)

    async def sweep(self) -> Swept:
        """Send the reminders and closes that are due, and auto-close answered tickets."""
        now = self._clock()
        counts = {"reminded": 0, "closed": 0, "auto_closed": 0, "ended": 0}
        async with self._sessions() as session:
            due = list(
                await session.scalars(
                    select(PendingTicket.ticket_id)
                    .where(PendingTicket.remind_at <= now)
                    .order_by(PendingTicket.remind_at)
                    .limit(SWEEP_BATCH)
                )
            )
        for ticket_id in due:
            outcome = await self._pending_due(ticket_id, now)
            if outcome:
                counts[outcome] += 1
        for ticket_id in await self._answered_candidates(now):
            if await self._auto_close(ticket_id, now):
                counts["auto_closed"] += 1
        if counts["reminded"] or counts["closed"] or counts["auto_closed"]:
            self._wakeup()
        return Swept(**counts)

    async def _pending_due(self, ticket_id: int, now: datetime) -> str | None:
        async with self._sessions.begin() as session:
            ticket = await session.get(Ticket, ticket_id, with_for_update=True)
            row = await session.get(PendingTicket, ticket_id)
            if ticket is None or row is None or row.remind_at > now:
                return None  # another sweep got there first
            if ticket.status == TicketStatus.CLOSED.value or await _customer_wrote(
                session, ticket, row
            ):
                await session.delete(row)
                return "ended"
            if row.close_at <= now:
                await self._close(session, ticket, now, "pending_closed", days=row.days)
                await session.delete(row)
                return "closed"
            if row.reminded_at is not None:
                return None
            row.reminded_at = now
            where = await notify_customer(
                session,
                self._templates,
                ticket.id,
                "tickets/pending_reminder",
                at=now,
                mail_domain=self._mail_domain,
                close_at=row.close_at,
            )
            audit.record(
                session, at=now, action="pending_reminder", ticket_id=ticket.id, sent_to=where
            )
            return "reminded"

    async def _answered_candidates(self, now: datetime) -> list[int]:
        if self.auto_close_days <= 0:
            return []
        # Business time never runs faster than the wall clock: this cut keeps every ticket due.
        cutoff = now - timedelta(hours=self.auto_close_days * day_hours(self._calendar))
        answered = func.max(Message.delivered_at)
        async with self._sessions() as session:
            found = await session.scalars(
                select(Ticket.id)
                .join(Message, Message.ticket_id == Ticket.id)
                .where(
                    Ticket.status == TicketStatus.OPEN.value,
                    Ticket.waiting_since.is_(None),
                    Ticket.updated_at <= cutoff,
                    Message.direction == Direction.OUT.value,
                    Message.delivered_at.is_not(None),
                    ~exists().where(PendingTicket.ticket_id == Ticket.id),
                )
                .group_by(Ticket.id)
                .having(answered <= cutoff)
                .order_by(Ticket.id)
                .limit(SWEEP_BATCH)
            )
            return list(found)

    async def _auto_close(self, ticket_id: int, now: datetime) -> bool:
        async with self._sessions.begin() as session:
            ticket = await session.get(Ticket, ticket_id, with_for_update=True)
            if (
                ticket is None
                or ticket.status != TicketStatus.OPEN.value
                or ticket.waiting_since is not None
                or await session.get(PendingTicket, ticket_id) is not None
            ):
                return False
            answered_at = await session.scalar(
                select(func.max(Message.delivered_at)).where(
                    Message.ticket_id == ticket_id,
                    Message.direction == Direction.OUT.value,
                )
            )
            if answered_at is None:
                return False
            since = max(answered_at, ticket.updated_at)
            if business_days_later(self._calendar, since, self.auto_close_days) > now:
                return False
            await self._close(session, ticket, now, "auto_closed", days=self.auto_close_days)
            return True

    async def _close(
        self, session: AsyncSession, ticket: Ticket, now: datetime, event: str, *, days: int
    ) -> None:
        """Close for the desk, with the customer's notice and the agents' in the transaction."""
        where = await notify_customer(
            session,
            self._templates,
            ticket.id,
            f"tickets/{event}",
            at=now,
            mail_domain=self._mail_domain,
            days=days,
        )
        ticket.status = TicketStatus.CLOSED.value
        ticket.closed_at = now
        ticket.waiting_since = None
        ticket.waiting_message_id = None
        ticket.due_at = None
        ticket.updated_at = now
        audit.record(session, at=now, action="close", ticket_id=ticket.id, reason=event, days=days)
        if self._satisfaction is not None:
            await self._satisfaction.ask(session, ticket, now)
        notify_agents(
            session,
            self._templates,
            event,
            at=now,
            ticket_id=ticket.id,
            days=days,
            told=where or "nowhere (no customer address)",
        )


async def _customer_wrote(session: AsyncSession, ticket: Ticket, row: PendingTicket) -> bool:
    """Whether the customer wrote after the ticket was parked (which ends the parking)."""
    if ticket.waiting_since is not None:
        return True
    newer = select(Message.id).where(
        Message.ticket_id == ticket.id,
        Message.direction == Direction.IN.value,
        Message.counts_for_sla.is_(True),
        Message.id > (row.after_message_id or 0),
    )
    return await session.scalar(select(exists(newer))) or False


async def unpark(session: AsyncSession, ticket_id: int) -> None:
    """Drop a ticket's parking (an agent closed it)."""
    await session.execute(delete(PendingTicket).where(PendingTicket.ticket_id == ticket_id))
