"""Merging one ticket into another (issue 15, point 3): `/merge N` in the surviving ticket.

One transaction moves the merged ticket's messages, its mail Message-IDs (so later mail threads
into the survivor), its measured responses and tags, carries its running wait over when it began
earlier, closes it with a note that points to the survivor, audits both, and queues a template
notice to the customer on each channel the survivor now answers on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tickets import audit
from tickets.agents import active_agent
from tickets.errors import AgentNotFound, InvalidAction, TicketNotFound
from tickets.mail_threads import thread_headers
from tickets.model import Channel, Direction, OutboxKind, Route, TicketStatus
from tickets.payloads import NoticePayload, add_mail_headers, enqueue
from tickets.ports import Clock, Renderer, utcnow
from tickets.tables import MailId, Message, Response, Ticket, TicketTag

MERGED = "merged"  # audit action on the merged ticket; `into` names the survivor


@dataclass(frozen=True)
class Merged:
    survivor: int
    merged: int
    messages: int
    other_customer: bool  # the merged ticket was another customer record's (say so)
    told: tuple[str, ...]  # where the customer was told: "Telegram", "email (a@b)"


class Merger:
    """`/merge`: every step in the survivor's transaction, both tickets locked."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        templates: Renderer,
        *,
        clock: Clock = utcnow,
        wakeup: Callable[[], None] | None = None,
        mail_domain: str = "supportbot.invalid",
    ) -> None:
        self._sessions = sessions
        self._templates = templates
        self._clock = clock
        self._wakeup = wakeup or (lambda: None)
        self._mail_domain = mail_domain

    async def merge(self, merged_number: int, survivor_number: int, agent_id: int) -> Merged:
        """Move ticket `merged_number` into `survivor_number`."""
        if merged_number == survivor_number:
            raise InvalidAction(f"#{merged_number} cannot be merged into itself")
        now = self._clock()
        async with self._sessions.begin() as session:
            agent = await active_agent(session, agent_id)
            if agent is None:
                raise AgentNotFound(agent_id)
            # Locked in id order, so two opposite merges cannot deadlock.
            locked = {}
            for number in sorted((merged_number, survivor_number)):
                ticket = await session.get(Ticket, number, with_for_update=True)
                if ticket is None:
                    raise TicketNotFound(number)
                locked[number] = ticket
            survivor, merged = locked[survivor_number], locked[merged_number]
            if survivor.status == TicketStatus.CLOSED.value:
                raise InvalidAction(f"#{survivor.id} is closed; reopen it first")
            if merged.merged_into_id is not None:
                raise InvalidAction(
                    f"#{merged.id} was already merged into #{merged.merged_into_id}"
                )
            moved = await session.scalar(
                select(func.count()).select_from(Message).where(Message.ticket_id == merged.id)
            )
            await session.execute(
                update(Message).where(Message.ticket_id == merged.id).values(ticket_id=survivor.id)
            )
            await session.execute(
                update(MailId).where(MailId.ticket_id == merged.id).values(ticket_id=survivor.id)
            )
            await session.execute(
                update(Response)
                .where(Response.ticket_id == merged.id)
                .values(ticket_id=survivor.id)
            )
            await _move_tags(session, merged.id, survivor.id, now)
            _carry_wait(merged, survivor)
            survivor.updated_at = now
            merged.status = TicketStatus.CLOSED.value
            merged.closed_at = now
            merged.waiting_since = merged.due_at = None
            merged.waiting_message_id = None
            merged.merged_into_id = survivor.id
            merged.updated_at = now
            session.add(
                Message(
                    ticket_id=merged.id,
                    direction=Direction.NOTE.value,
                    channel=None,
                    author_agent_id=agent.id,
                    text=f"Merged into #{survivor.id}: its messages are there now.",
                    attachments=[],
                    counts_for_sla=False,
                    created_at=now,
                )
            )
            other = merged.customer_id != survivor.customer_id
            audit.record(
                session,
                at=now,
                action="merge",
                agent=agent,
                ticket_id=survivor.id,
                merged=merged.id,
                messages=moved,
                other_customer=other,
            )
            audit.record(
                session, at=now, action=MERGED, agent=agent, ticket_id=merged.id, into=survivor.id
            )
            await session.flush()
            told = await self._tell_customer(session, survivor, merged.id, now)
        self._wakeup()
        return Merged(survivor.id, merged.id, int(moved or 0), other, told)

    async def _tell_customer(
        self, session: AsyncSession, survivor: Ticket, merged: int, now: datetime
    ) -> tuple[str, ...]:
        """The notice goes to the latest address of each channel the customer wrote from."""
        rows = (
            await session.execute(
                select(Message.channel, Message.reply_address, Message.external_id)
                .where(
                    Message.ticket_id == survivor.id,
                    Message.direction == Direction.IN.value,
                    Message.counts_for_sla.is_(True),
                    Message.reply_address.is_not(None),
                )
                .order_by(Message.id.desc())
            )
        ).all()
        latest: dict[str, tuple[str, str | None]] = {}
        for channel, address, external_id in rows:
            if channel is not None and channel not in latest:
                latest[channel] = (str(address), external_id)
        text = self._templates.render("merged", ticket=survivor.id, merged=merged)
        told: list[str] = []
        for channel, (address, external_id) in sorted(latest.items()):
            payload: NoticePayload = {
                "text": text,
                "event": "merged",
                "ticket": survivor.id,
                "subject": survivor.subject,
                "automatic": True,
            }
            if channel == Channel.EMAIL.value:
                add_mail_headers(
                    payload,
                    await thread_headers(
                        await session.connection(),
                        ticket_id=survivor.id,
                        subject=survivor.subject,
                        in_reply_to=external_id,
                        kind="notice",
                        at=now,
                        domain=self._mail_domain,
                    ),
                )
                told.append(f"email ({address})")
            else:
                told.append("Telegram")
            enqueue(
                session,
                route=Route(channel),
                recipient=address,
                kind=OutboxKind.NOTICE,
                payload=payload,
                at=now,
                ticket_id=survivor.id,
            )
        return tuple(told)


def _carry_wait(merged: Ticket, survivor: Ticket) -> None:
    """The earlier unanswered wait is kept: its due time is the one the customer was promised."""
    if merged.waiting_since is None:
        return
    if survivor.waiting_since is None or merged.waiting_since < survivor.waiting_since:
        survivor.waiting_since = merged.waiting_since
        survivor.waiting_message_id = merged.waiting_message_id
        survivor.due_at = merged.due_at


async def _move_tags(session: AsyncSession, merged: int, survivor: int, now: datetime) -> None:
    have = set(
        (await session.scalars(select(TicketTag.tag).where(TicketTag.ticket_id == survivor))).all()
    )
    for tag in (
        await session.scalars(select(TicketTag).where(TicketTag.ticket_id == merged))
    ).all():
        if tag.tag not in have:
            session.add(TicketTag(ticket_id=survivor, tag=tag.tag, created_at=now))
