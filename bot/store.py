"""The Telegram channel's store: where tickets live in the agents' group, as its own table
`agent_posts` records them, and what feeds a card (read from the core's tables).

`agent_posts` shares the desk's metadata (`tickets.tables.Base`), so Alembic sees it with the
others; only the Telegram channel reads or writes it.

A ticket's *place* is its forum topic (row kind "topic", `thread_id` set) plus its card inside
it (kind "card"), or, in a group without topics, just its card. Every other message the feed
posts for a ticket is kind "post". A reply to any of them, or a message in the topic, belongs
to that ticket.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    String,
    UniqueConstraint,
    exists,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from accounts.lookups import identity_columns, identity_lines
from tickets.model import Direction, OutboxStatus, Route, TicketStatus
from tickets.ports import Clock
from tickets.tables import Base, Customer, Message, OutboxRow, Ticket, TicketTag

TOPIC = "topic"
CARD = "card"
POST = "post"


class AgentPost(Base):
    """Where a ticket lives in the agents' group: its forum topic, its card, and every post.

    A reply to any post of a ticket (or a message in its topic) is a reply to that ticket.
    """

    __tablename__ = "agent_posts"
    __table_args__ = (
        UniqueConstraint("chat_id", "message_id"),
        Index("ix_agent_posts_chat_thread", "chat_id", "thread_id"),
        Index("ix_agent_posts_ticket_kind", "ticket_id", "kind"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"))
    chat_id: Mapped[int] = mapped_column(BigInteger)
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    thread_id: Mapped[int | None] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]


@dataclass(frozen=True)
class Place:
    """A ticket's topic (forum groups) and card; either may still be missing."""

    thread_id: int | None = None
    card_id: int | None = None


@dataclass(frozen=True)
class TicketFacts:
    number: int
    plan: str
    channel: str
    customer: str
    subject: str
    due_at: datetime | None
    claimed: bool
    closed: bool
    place: Place
    identity: str = ""  # the card's "who is this" line (accounts.lookups.identity_lines)
    tags: tuple[str, ...] = ()
    # A customer mail of the ticket failed SPF/DKIM/DMARC and no agent has vouched for it yet:
    # its card, topic title and digest lines say so (`/vouch N` ends it).
    unverified: bool = False


@dataclass(frozen=True)
class MessageFacts:
    id: int
    ticket_id: int
    text: str
    attachments: tuple[dict[str, Any], ...]
    channel: str | None
    external_id: str | None

    def telegram_origin(self) -> tuple[int, int] | None:
        """The customer's chat and message id, when the message came from Telegram."""
        if self.channel != Route.TELEGRAM.value or not self.external_id:
            return None
        chat, _, message = self.external_id.partition(":")
        try:
            return int(chat), int(message)
        except ValueError:
            return None


class PlaceBook:
    """Reads and writes the feed's records for one agents' chat."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], chat_id: int, clock: Clock
    ) -> None:
        self._sessions = sessions
        self.chat_id = chat_id
        self._clock = clock

    async def tickets(self, numbers: Iterable[int]) -> dict[int, TicketFacts]:
        """The tickets with their customer and current place, by number."""
        found, _ = await self.notice_facts(numbers, ())
        return found

    async def notice_facts(
        self, numbers: Iterable[int], message_ids: Iterable[int]
    ) -> tuple[dict[int, TicketFacts], dict[int, MessageFacts]]:
        """The tickets notices are about and the messages they show, read in one session."""
        wanted = sorted(set(numbers))
        ids = sorted(set(message_ids))
        if not wanted and not ids:
            return {}, {}
        async with self._sessions() as session:
            tickets = await self._tickets(session, wanted) if wanted else {}
            messages = await _messages(session, ids) if ids else {}
        return tickets, messages

    async def _tickets(self, session: AsyncSession, wanted: list[int]) -> dict[int, TicketFacts]:
        rows = (
            await session.execute(
                select(Ticket, Customer.name, *identity_columns())
                .join(Customer, Customer.id == Ticket.customer_id)
                .where(Ticket.id.in_(wanted))
            )
        ).all()
        posts = (
            await session.scalars(
                select(AgentPost)
                .where(
                    AgentPost.ticket_id.in_(wanted),
                    AgentPost.chat_id == self.chat_id,
                    AgentPost.kind.in_((TOPIC, CARD)),
                )
                .order_by(AgentPost.id)
            )
        ).all()
        identities = await identity_lines(
            session, ((t.customer_id, code, agent, address) for t, _n, code, agent, address in rows)
        )
        tags: dict[int, list[str]] = {}
        for number, tag in (
            await session.execute(
                select(TicketTag.ticket_id, TicketTag.tag)
                .where(TicketTag.ticket_id.in_(wanted))
                .order_by(TicketTag.ticket_id, TicketTag.tag)
            )
        ).all():
            tags.setdefault(number, []).append(tag)
        unverified = set(
            (
                await session.scalars(
                    select(Message.ticket_id)
                    .where(
                        Message.ticket_id.in_(wanted),
                        Message.direction == Direction.IN.value,
                        Message.auth == "fail",
                        Message.vouched_at.is_(None),
                    )
                    .distinct()
                )
            ).all()
        )
        threads: dict[int, int | None] = {}
        cards: dict[int, int | None] = {}
        for post in posts:  # the newest record of each kind wins
            if post.kind == TOPIC:
                threads[post.ticket_id] = post.thread_id
            else:
                cards[post.ticket_id] = post.message_id
        return {
            ticket.id: TicketFacts(
                number=ticket.id,
                plan=ticket.plan,
                channel=ticket.channel,
                customer=name or "",
                subject=ticket.subject or "",
                due_at=ticket.due_at,
                claimed=ticket.assignee_id is not None,
                closed=ticket.status == TicketStatus.CLOSED.value,
                place=Place(threads.get(ticket.id), cards.get(ticket.id)),
                identity=identities.get(ticket.customer_id, ""),
                tags=tuple(tags.get(ticket.id, ())),
                unverified=ticket.id in unverified,
            )
            for ticket, name, _code, _agent, _address in rows
        }

    async def raw_source(self, message_id: int) -> bytes | None:
        """The raw source kept of a broken mail, if any."""
        async with self._sessions() as session:
            raw = await session.scalar(select(Message.raw_source).where(Message.id == message_id))
        return bytes(raw) if raw is not None else None

    async def latest_customer_message(self, number: int) -> MessageFacts | None:
        """What the customer wrote last on a ticket: the body of a card made after the fact."""
        async with self._sessions() as session:
            row = (
                await session.scalars(
                    select(Message)
                    .where(Message.ticket_id == number, Message.direction == Direction.IN.value)
                    .order_by(Message.id.desc())
                    .limit(1)
                )
            ).first()
        return _message(row) if row is not None else None

    async def ticket_of_topic(self, thread_id: int) -> int | None:
        """The ticket whose forum topic this is."""
        async with self._sessions() as session:
            return await session.scalar(
                select(AgentPost.ticket_id).where(
                    AgentPost.chat_id == self.chat_id,
                    AgentPost.thread_id == thread_id,
                    AgentPost.kind == TOPIC,
                )
            )

    async def ticket_of_post(self, message_id: int) -> int | None:
        """The ticket a message in the group belongs to: its card, or another post of it."""
        async with self._sessions() as session:
            return await session.scalar(
                select(AgentPost.ticket_id).where(
                    AgentPost.chat_id == self.chat_id, AgentPost.message_id == message_id
                )
            )

    async def record(
        self, number: int, kind: str, message_id: int | None, thread_id: int | None
    ) -> None:
        """Remember a topic, card or post at once, so a crash cannot orphan it."""
        async with self._sessions.begin() as session:
            session.add(
                AgentPost(
                    ticket_id=number,
                    chat_id=self.chat_id,
                    message_id=message_id,
                    thread_id=thread_id,
                    kind=kind,
                    created_at=self._clock(),
                )
            )

    async def forget_place(self, number: int) -> None:
        """The topic or card is gone: make a new place next time, keep old posts answerable."""
        async with self._sessions.begin() as session:
            await session.execute(
                update(AgentPost)
                .where(
                    AgentPost.ticket_id == number,
                    AgentPost.chat_id == self.chat_id,
                    AgentPost.kind.in_((TOPIC, CARD)),
                )
                .values(kind=POST)
            )

    async def notices_pending(self) -> bool:
        """Whether any agents' notice is still on its way (or waiting for the group's budget)."""
        async with self._sessions() as session:
            found = await session.scalar(
                select(OutboxRow.id)
                .where(
                    OutboxRow.route == Route.AGENTS.value,
                    OutboxRow.status == OutboxStatus.PENDING.value,
                )
                .limit(1)
            )
        return found is not None

    async def unplaced(self, limit: int) -> list[int]:
        """Open tickets without a card here and with no notice on its way, most urgent first."""
        has_card = exists().where(
            AgentPost.ticket_id == Ticket.id,
            AgentPost.chat_id == self.chat_id,
            AgentPost.kind == CARD,
        )
        notice_pending = exists().where(
            OutboxRow.route == Route.AGENTS.value,
            OutboxRow.status == OutboxStatus.PENDING.value,
            OutboxRow.ticket_id == Ticket.id,
        )
        async with self._sessions() as session:
            found = await session.scalars(
                select(Ticket.id)
                .where(Ticket.status == TicketStatus.OPEN.value, ~has_card, ~notice_pending)
                .order_by(Ticket.due_at.is_(None), Ticket.due_at, Ticket.id)
                .limit(limit)
            )
            return list(found.all())


async def _messages(session: AsyncSession, ids: list[int]) -> dict[int, MessageFacts]:
    """Messages by id, for the texts and files notices refer to."""
    rows = (await session.scalars(select(Message).where(Message.id.in_(ids)))).all()
    return {row.id: _message(row) for row in rows}


def _message(row: Message) -> MessageFacts:
    return MessageFacts(
        id=row.id,
        ticket_id=row.ticket_id,
        text=row.text or "",
        attachments=tuple(a for a in row.attachments or [] if isinstance(a, dict)),
        channel=row.channel,
        external_id=row.external_id,
    )
