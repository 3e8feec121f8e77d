"""The agents' console beyond the core operations: assigning, tags, one's own tickets, a
ticket's audit trail, the allowlist managed from the group, and edits of sent replies.

Each write is one transaction with its audit entry (and its notice, where agents should see it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tickets import audit
from tickets.agents import active_agent, add_agent, remove_agent
from tickets.errors import AgentNotFound, InvalidAction, NotAllowed, TicketNotFound
from tickets.model import Direction, Role, TicketStatus, bounded_id, storable_text
from tickets.notices import notify_agents
from tickets.ports import Clock, Renderer, utcnow
from tickets.tables import Agent, AuditEntry, InboundKey, Message, MessageEdit, Ticket, TicketTag
from tickets.tags import merged_tags

AGENT_REPLY = "agent_reply"  # `inbound_keys.source` of the agents' messages that asked for replies
TRAIL_LIMIT = 30  # audit entries `/audit` shows, newest last
MINE_LIMIT = 30


@dataclass(frozen=True)
class Assigned:
    ticket: int
    assignee_id: int  # Telegram id
    assignee: str
    previous: str | None


@dataclass(frozen=True)
class MyTicket:
    number: int
    subject: str
    customer_waiting: bool
    due_at: datetime | None


@dataclass(frozen=True)
class TrailEntry:
    at: datetime
    actor: str
    action: str
    details: dict[str, Any]


@dataclass(frozen=True)
class SentReply:
    """A reply an agent's message asked for, as an edit of that message needs it."""

    message_id: int
    ticket: int
    channel: str | None
    external_id: str | None  # Telegram "chat:message" of the customer's copy, once delivered
    text: str
    attachments: int
    created_at: datetime
    delivered: bool


class Console:
    """Agent operations of the console; every one checks the agent first."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        templates: Renderer,
        *,
        clock: Clock = utcnow,
        wakeup: Callable[[], None] | None = None,
    ) -> None:
        self._sessions = sessions
        self._templates = templates
        self._clock = clock
        self._wakeup = wakeup or (lambda: None)

    async def assign(self, number: int, agent_id: int, assignee_id: int) -> Assigned:
        """Hand a ticket to an agent (oneself included); the claim moves to them."""
        now = self._clock()
        async with self._sessions.begin() as session:
            agent = await _agent(session, agent_id)
            assignee = await active_agent(session, assignee_id)
            if assignee is None:
                raise InvalidAction(f"{assignee_id} is not an agent; an admin can /agent add them")
            ticket = await _ticket(session, number)
            if ticket.status == TicketStatus.CLOSED.value:
                raise InvalidAction(f"#{number} is closed; reopen it first")
            if ticket.assignee_id == assignee.id:
                raise InvalidAction(f"#{number} is already {_name(assignee)}'s")
            previous = await session.get(Agent, ticket.assignee_id) if ticket.assignee_id else None
            ticket.assignee_id = assignee.id
            ticket.claimed_at = now
            ticket.updated_at = now
            audit.record(
                session,
                at=now,
                action="assign",
                agent=agent,
                ticket_id=ticket.id,
                assignee=assignee.telegram_id,
                previous_assignee=previous.telegram_id if previous else None,
            )
            return Assigned(
                number, assignee.telegram_id, _name(assignee), _name(previous) if previous else None
            )

    async def mine(self, agent_id: int) -> list[MyTicket]:
        """The open tickets an agent holds, most urgent first."""
        async with self._sessions() as session:
            agent = await _agent(session, agent_id)
            rows = await session.scalars(
                select(Ticket)
                .where(Ticket.assignee_id == agent.id, Ticket.status == TicketStatus.OPEN.value)
                .order_by(Ticket.due_at.is_(None), Ticket.due_at, Ticket.id)
                .limit(MINE_LIMIT)
            )
            return [
                MyTicket(t.id, t.subject or "", t.waiting_since is not None, t.due_at)
                for t in rows.all()
            ]

    async def tag(self, number: int, agent_id: int, words: Sequence[str]) -> list[str]:
        """Add tags to a ticket; returns all its tags. The card and topic title show them."""
        if not words:
            raise InvalidAction("no tags given")
        now = self._clock()
        async with self._sessions.begin() as session:
            agent = await _agent(session, agent_id)
            ticket = await _ticket(session, number)
            existing = list(
                (
                    await session.scalars(
                        select(TicketTag.tag).where(TicketTag.ticket_id == ticket.id)
                    )
                ).all()
            )
            tags, new = merged_tags(existing, words)
            if not new:
                return tags
            session.add_all(TicketTag(ticket_id=ticket.id, tag=t, created_at=now) for t in new)
            ticket.updated_at = now
            audit.record(session, at=now, action="tag", agent=agent, ticket_id=ticket.id, added=new)
            notify_agents(
                session,
                self._templates,
                "tagged",
                at=now,
                ticket_id=ticket.id,
                agent=_name(agent),
                added=new,
                tags=tags,
                restate=True,
            )
        self._wakeup()
        return tags

    async def trail(self, number: int, agent_id: int) -> list[TrailEntry]:
        """A ticket's audit trail, its latest entries in order."""
        async with self._sessions() as session:
            await _agent(session, agent_id)
            if await session.get(Ticket, number) is None:
                raise TicketNotFound(number)
            rows = (
                await session.scalars(
                    select(AuditEntry)
                    .where(AuditEntry.ticket_id == number)
                    .order_by(AuditEntry.id.desc())
                    .limit(TRAIL_LIMIT)
                )
            ).all()
            names = {
                f"agent:{a.telegram_id}": _name(a)
                for a in (await session.scalars(select(Agent))).all()
            }
        return [
            TrailEntry(e.at, names.get(e.actor, e.actor), e.action, dict(e.details or {}))
            for e in reversed(rows)
        ]

    async def set_agent(self, admin_id: int, telegram_id: int, role: Role, name: str) -> bool:
        """An admin allows someone as an agent, or changes their role; True if newly added."""
        now = self._clock()
        async with self._sessions.begin() as session:
            admin = await _admin(session, admin_id)
            if telegram_id == admin_id and role is not Role.ADMIN:
                raise NotAllowed("you cannot take away your own admin role; ask another admin")
            return await add_agent(
                session, telegram_id, role, name, at=now, actor=f"agent:{admin.telegram_id}"
            )

    async def drop_agent(self, admin_id: int, telegram_id: int) -> None:
        """An admin takes someone off the allowlist."""
        now = self._clock()
        async with self._sessions.begin() as session:
            admin = await _admin(session, admin_id)
            if telegram_id == admin_id:
                raise NotAllowed("you cannot remove yourself; ask another admin")
            await remove_agent(session, telegram_id, at=now, actor=f"agent:{admin.telegram_id}")

    async def sent_reply(self, key: str) -> SentReply | None:
        """The reply an agent's message (Telegram "chat:message") asked for, if it did."""
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(Message)
                    .join(InboundKey, InboundKey.message_id == Message.id)
                    .where(InboundKey.source == AGENT_REPLY, InboundKey.key == bounded_id(key))
                )
            ).scalar_one_or_none()
        if row is None or row.direction != Direction.OUT.value:
            return None
        return SentReply(
            message_id=row.id,
            ticket=row.ticket_id,
            channel=row.channel,
            external_id=row.external_id,
            text=row.text or "",
            attachments=len(row.attachments or []),
            created_at=row.created_at,
            delivered=row.delivered_at is not None,
        )

    async def record_edit(
        self, message_id: int, agent_id: int, text: str, *, passed_on: str
    ) -> None:
        """Keep a sent reply's new text (the old one stays as an edit) and how it went out."""
        now = self._clock()
        async with self._sessions.begin() as session:
            agent = await _agent(session, agent_id)
            message = await session.get(Message, message_id, with_for_update=True)
            if message is None:
                raise InvalidAction("that reply is gone")
            session.add(MessageEdit(message_id=message.id, text=message.text, edited_at=now))
            message.text = storable_text(text)
            audit.record(
                session,
                at=now,
                action="reply_edit",
                agent=agent,
                ticket_id=message.ticket_id,
                message_id=message.id,
                passed_on=passed_on,
            )


def edit_in_window(sent_at: datetime, now: datetime, window: timedelta) -> bool:
    """Whether an edit of a reply sent at `sent_at` is still passed on to the customer."""
    return now - sent_at <= window


def _name(agent: Agent) -> str:
    return agent.name or str(agent.telegram_id)


async def _agent(session: AsyncSession, telegram_id: int) -> Agent:
    agent = await active_agent(session, telegram_id)
    if agent is None:
        raise AgentNotFound(telegram_id)
    return agent


async def _admin(session: AsyncSession, telegram_id: int) -> Agent:
    agent = await _agent(session, telegram_id)
    if agent.role != Role.ADMIN.value:
        raise NotAllowed("only an admin can manage agents")
    return agent


async def _ticket(session: AsyncSession, number: int) -> Ticket:
    ticket = await session.get(Ticket, number, with_for_update=True)
    if ticket is None:
        raise TicketNotFound(number)
    return ticket
