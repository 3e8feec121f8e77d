"""The operations channels call. Each one is a single transaction that also writes its outbox rows
and its audit entry, so a change and the messages it causes are committed together or not at all.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tickets import audit
from tickets.errors import AgentNotFound, InvalidAction, NotAllowed, TicketNotFound
from tickets.model import (
    Attachment,
    Channel,
    CustomerRef,
    DeliveryState,
    Direction,
    IncomingMessage,
    Intake,
    OutboxKind,
    Plan,
    Role,
    Route,
    TicketStatus,
    bounded_id,
    storable_text,
)
from tickets.outbox import enqueue
from tickets.policy import SlaPolicy
from tickets.ports import Clock, Renderer, utcnow
from tickets.tables import (
    Agent,
    Customer,
    CustomerEmail,
    InboundKey,
    MailId,
    Message,
    MessageEdit,
    OutboxRow,
    Quarantined,
    Response,
    Ticket,
)

EXCERPT = 500
REFERENCES_KEPT = 20
RECEIPTS_PER_WINDOW = 3
RECEIPT_WINDOW = timedelta(hours=1)
NAME_LIMIT = 200


class Desk:
    """The support desk's write side: customer messages, agent actions, delivery outcomes."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        policy: SlaPolicy,
        templates: Renderer,
        *,
        clock: Clock = utcnow,
        wakeup: Callable[[], None] | None = None,
        mail_domain: str = "supportbot.invalid",
    ) -> None:
        self.sessions = sessions
        self.policy = policy
        self._templates = templates
        self._clock = clock
        self._wakeup = wakeup or (lambda: None)
        self._mail_domain = mail_domain

    # -- customers -------------------------------------------------------------------------

    async def receive(self, incoming: IncomingMessage) -> Intake:
        """Store a customer message: open, join or reopen a ticket, start the SLA wait, notify."""
        now = self._clock()
        at = incoming.received_at or now
        async with self.sessions.begin() as session:
            key_id: int | None = None
            if incoming.dedup_key is not None:
                dedup = (incoming.dedup_key[0], bounded_id(incoming.dedup_key[1]))
                key_id = await _insert_ignore(
                    session, InboundKey, {"source": dedup[0], "key": dedup[1], "received_at": now}
                )
                if key_id is None:
                    return await _earlier_intake(session, dedup)
            customer = await self._customer(session, incoming.customer, now)
            if customer.banned_at is not None:
                if key_id is not None:
                    await session.execute(delete(InboundKey).where(InboundKey.id == key_id))
                return Intake(ticket=0, message_id=0, ignored=True)
            customer.unreachable_at = None
            if customer.wants_new_ticket:
                customer.wants_new_ticket = False
                incoming = replace(incoming, new_ticket=True, ticket=None)
            bounced = False
            if incoming.channel is Channel.EMAIL:
                incoming, bounced = await self._thread(session, customer, incoming)
            ticket, opened, reopened = await self._ticket_for(session, customer, incoming, at)
            message = Message(
                ticket_id=ticket.id,
                direction=Direction.IN.value,
                channel=incoming.channel.value,
                text=storable_text(incoming.text),
                attachments=[a.to_json() for a in incoming.attachments],
                external_id=bounded_id(incoming.external_id) if incoming.external_id else None,
                reply_address=(incoming.reply_address or _default_address(incoming.customer))[:320],
                counts_for_sla=not incoming.automated,
                auth=incoming.auth,
                created_at=at,
            )
            session.add(message)
            await session.flush()
            if key_id is not None:
                await session.execute(
                    update(InboundKey).where(InboundKey.id == key_id).values(message_id=message.id)
                )
            if incoming.channel is Channel.EMAIL and message.external_id:
                await _insert_ignore(
                    session,
                    MailId,
                    {"message_id": message.external_id, "ticket_id": ticket.id, "created_at": now},
                )
            if not incoming.automated and ticket.waiting_since is None:
                ticket.waiting_since = at
                ticket.waiting_message_id = message.id
                ticket.due_at = self.policy.due_at(at)
            ticket.updated_at = now
            receipt = (opened or reopened) and not incoming.automated
            if receipt:
                receipt = await self._receipt(session, ticket, message, reopened=reopened, at=now)
            event = "opened" if opened else "reopened" if reopened else "message"
            if bounced:
                event = "bounced"
            self._notify_agents(
                session,
                event,
                ticket,
                at=now,
                customer=customer.name,
                text=storable_text(incoming.text[:EXCERPT]),
                truncated=len(incoming.text) > EXCERPT,
                attachments=len(incoming.attachments),
                automated=incoming.automated,
                auth=incoming.auth,
                message_id=message.id,
            )
            intake = Intake(
                ticket=ticket.id,
                message_id=message.id,
                opened=opened,
                reopened=reopened,
                receipt=receipt,
            )
        self._wakeup()
        return intake

    async def set_plan(self, customer_id: int, plan: Plan) -> None:
        """Change a customer's plan; their open tickets move to the matching queue tier."""
        async with self.sessions.begin() as session:
            customer = await session.get(Customer, customer_id, with_for_update=True)
            if customer is None:
                raise InvalidAction(f"there is no customer {customer_id}")
            customer.plan = plan.value
            await session.execute(
                update(Ticket)
                .where(Ticket.customer_id == customer_id, Ticket.status == TicketStatus.OPEN.value)
                .values(plan=plan.value)
            )

    async def _customer(self, session: AsyncSession, ref: CustomerRef, at: datetime) -> Customer:
        name = storable_text(ref.name)[:NAME_LIMIT]
        if ref.telegram_id is not None:
            by_telegram = select(Customer).where(Customer.telegram_id == ref.telegram_id)
            found = (await session.scalars(by_telegram.with_for_update())).first()
            if found is None:
                # Insert-if-absent (no sequence value is spent on known customers), so a first
                # message racing another from the same person still ends with one customer.
                await _insert_ignore(
                    session,
                    Customer,
                    {
                        "telegram_id": ref.telegram_id,
                        "name": name,
                        "plan": "basic",
                        "created_at": at,
                    },
                )
                found = (await session.scalars(by_telegram.with_for_update())).one()
            customer = found
        else:
            assert ref.email is not None
            address = ref.email.strip().lower()
            customer_id = await session.scalar(
                select(CustomerEmail.customer_id).where(CustomerEmail.address == address)
            )
            if customer_id is None:
                fresh = Customer(name=name, plan="basic", created_at=at)
                session.add(fresh)
                await session.flush()
                won = await _insert_ignore(
                    session, CustomerEmail, {"customer_id": fresh.id, "address": address}
                )
                if not won:  # another transaction registered the address first
                    await session.delete(fresh)
                customer_id = await session.scalar(
                    select(CustomerEmail.customer_id).where(CustomerEmail.address == address)
                )
            customer = (
                await session.scalars(
                    select(Customer).where(Customer.id == customer_id).with_for_update()
                )
            ).one()
        if name and customer.name != name:
            customer.name = name
        return customer

    async def _ticket_for(
        self, session: AsyncSession, customer: Customer, incoming: IncomingMessage, at: datetime
    ) -> tuple[Ticket, bool, bool]:
        ticket: Ticket | None = None
        if incoming.ticket is not None:
            ticket = await session.get(Ticket, incoming.ticket, with_for_update=True)
        elif not incoming.new_ticket:
            ticket = (
                await session.scalars(
                    select(Ticket)
                    .where(Ticket.customer_id == customer.id)
                    .order_by((Ticket.status == TicketStatus.OPEN.value).desc(), Ticket.id.desc())
                    .limit(1)
                    .with_for_update()
                )
            ).first()
        if ticket is not None and ticket.status == TicketStatus.OPEN.value:
            return ticket, False, False
        if ticket is not None and self.policy.reopens(ticket.closed_at, at):
            ticket.status = TicketStatus.OPEN.value
            ticket.closed_at = None
            ticket.plan = customer.plan
            audit.record(
                session,
                at=at,
                action="reopen",
                actor="customer",
                ticket_id=ticket.id,
                reason="customer wrote within the reopen window",
            )
            return ticket, False, True
        ticket = Ticket(
            customer_id=customer.id,
            channel=incoming.channel.value,
            subject=storable_text(incoming.subject[:300]),
            status=TicketStatus.OPEN.value,
            plan=customer.plan,
            opened_at=at,
            updated_at=at,
        )
        session.add(ticket)
        await session.flush()
        return ticket, True, False

    async def _thread(
        self, session: AsyncSession, customer: Customer, incoming: IncomingMessage
    ) -> tuple[IncomingMessage, bool]:
        """Which ticket a mail belongs to: a bounce's original, its thread's, or its [#N] tag's.

        Never by subject text. A tag counts only for the ticket's own customer, so a stranger
        cannot write into someone else's ticket by copying its number.
        """
        if incoming.bounce_of:
            original = (
                await session.scalars(
                    select(Message)
                    .where(
                        Message.channel == Channel.EMAIL.value,
                        Message.direction == Direction.OUT.value,
                        Message.external_id.in_([bounded_id(i) for i in incoming.bounce_of]),
                    )
                    .limit(1)
                )
            ).first()
            if original is not None:  # an agent's reply
                original.delivery = DeliveryState.BOUNCED.value
                threaded = replace(incoming, ticket=original.ticket_id, new_ticket=False)
                return replace(threaded, automated=True), True
            receipt_ticket = await session.scalar(  # an automatic mail, such as a receipt
                select(MailId.ticket_id)
                .where(MailId.message_id.in_([bounded_id(i) for i in incoming.bounce_of]))
                .limit(1)
            )
            if receipt_ticket is not None:
                threaded = replace(incoming, ticket=receipt_ticket, new_ticket=False)
                return replace(threaded, automated=True), True
        if incoming.thread_refs:
            found = await session.scalar(
                select(MailId.ticket_id)
                .where(MailId.message_id.in_([bounded_id(r) for r in incoming.thread_refs]))
                .order_by(MailId.id.desc())
                .limit(1)
            )
            if found is not None:
                return replace(incoming, ticket=found, new_ticket=False), False
        if incoming.ticket_tag is not None:
            tagged = await session.get(Ticket, incoming.ticket_tag)
            if tagged is not None and tagged.customer_id == customer.id:
                return replace(incoming, ticket=tagged.id, new_ticket=False), False
        return incoming, False

    async def _mail_headers(
        self,
        session: AsyncSession,
        ticket: Ticket,
        answering: Message | None,
        kind: str,
        at: datetime,
    ) -> dict[str, Any]:
        """Threading headers for a mail we send on a ticket; its Message-ID is kept for replies."""
        message_id = f"<{kind}-{ticket.id}-{uuid.uuid4().hex[:16]}@{self._mail_domain}>"
        earlier = (
            await session.scalars(
                select(MailId.message_id)
                .where(MailId.ticket_id == ticket.id)
                .order_by(MailId.id.desc())
                .limit(REFERENCES_KEPT)
            )
        ).all()
        session.add(MailId(message_id=message_id, ticket_id=ticket.id, created_at=at))
        subject = ticket.subject or "Your support request"
        if kind == "reply" and not subject.lower().startswith("re:"):
            subject = f"Re: {subject}"
        return {
            "message_id": message_id,
            "in_reply_to": answering.external_id if answering is not None else None,
            "references": list(reversed(earlier)),
            "subject_line": f"[#{ticket.id}] {subject}",
        }

    async def _receipt(
        self,
        session: AsyncSession,
        ticket: Ticket,
        message: Message,
        *,
        reopened: bool,
        at: datetime,
    ) -> bool:
        route = Route(message.channel or Channel.TELEGRAM.value)
        recipient = message.reply_address or ""
        if route is Route.EMAIL:
            recent = await session.scalar(
                select(func.count())
                .select_from(OutboxRow)
                .where(
                    OutboxRow.route == Route.EMAIL.value,
                    OutboxRow.kind == OutboxKind.RECEIPT.value,
                    OutboxRow.recipient == recipient,
                    OutboxRow.created_at > at - RECEIPT_WINDOW,
                )
            )
            if (recent or 0) >= RECEIPTS_PER_WINDOW:
                return False  # a mail loop or a flood: the agents still see every message
        text = self._templates.render(
            "receipt",
            ticket=ticket.id,
            due_at=ticket.due_at,
            reopened=reopened,
            response_hours=self.policy.response_hours,
        )
        payload: dict[str, Any] = {
            "text": text,
            "ticket": ticket.id,
            "subject": ticket.subject,
            "in_reply_to": message.external_id,
            "automatic": True,
        }
        if route is Route.EMAIL:
            payload.update(await self._mail_headers(session, ticket, message, "receipt", at))
        enqueue(
            session,
            route=route,
            recipient=recipient,
            kind=OutboxKind.RECEIPT,
            payload=payload,
            at=at,
            ticket_id=ticket.id,
        )
        return True

    def _notify_agents(
        self, session: AsyncSession, event: str, ticket: Ticket, *, at: datetime, **facts: Any
    ) -> None:
        payload: dict[str, Any] = {
            "event": event,
            "ticket": ticket.id,
            "plan": ticket.plan,
            "channel": ticket.channel,
            "subject": ticket.subject,
            "due_at": ticket.due_at.isoformat() if ticket.due_at else None,
            **facts,
        }
        payload["text"] = self._templates.render(f"agents/{event}", **payload)
        enqueue(
            session,
            route=Route.AGENTS,
            recipient="agents",
            kind=OutboxKind.AGENT_NOTICE,
            payload=payload,
            at=at,
            ticket_id=ticket.id,
        )

    async def customer_banned(self, ref: CustomerRef) -> bool:
        """Whether an admin banned this customer (then they get nothing at all)."""
        if ref.telegram_id is not None:
            where = Customer.telegram_id == ref.telegram_id
        else:
            address = (ref.email or "").strip().lower()
            where = Customer.id.in_(
                select(CustomerEmail.customer_id).where(CustomerEmail.address == address)
            )
        async with self.sessions() as session:
            banned = await session.scalar(select(Customer.banned_at).where(where))
        return banned is not None

    async def refused(
        self, telegram_id: int, action: str, reason: str, ticket: int | None = None
    ) -> None:
        """Audit an action that was refused (a stranger, a forged button, a closed ticket)."""
        now = self._clock()
        async with self.sessions.begin() as session:
            exists_ticket = ticket is not None and await session.get(Ticket, ticket) is not None
            audit.record(
                session,
                at=now,
                action=f"refused:{action}"[:64],
                actor=f"telegram:{telegram_id}",
                ticket_id=ticket if exists_ticket else None,
                reason=reason[:500],
            )

    async def request_new_ticket(self, ref: CustomerRef) -> None:
        """Remember a customer's `/new`: their next message opens a separate ticket."""
        now = self._clock()
        async with self.sessions.begin() as session:
            customer = await self._customer(session, ref, now)
            customer.wants_new_ticket = True

    async def record_edit(
        self, channel: Channel, external_id: str, text: str, at: datetime | None = None
    ) -> int | None:
        """Keep the new text of an edited customer message and show agents the edit.

        Returns the ticket number, or None when the original message is unknown (then there is
        nothing to attach the edit to, and the caller treats the text as a new message).
        """
        now = self._clock()
        text = storable_text(text)
        async with self.sessions.begin() as session:
            message = (
                await session.scalars(
                    select(Message).where(
                        Message.channel == channel.value,
                        Message.external_id == bounded_id(external_id),
                        Message.direction == Direction.IN.value,
                    )
                )
            ).first()
            if message is None:
                return None
            ticket = await session.get(Ticket, message.ticket_id)
            assert ticket is not None
            if message.text == text:
                return ticket.id
            session.add(MessageEdit(message_id=message.id, text=message.text, edited_at=at or now))
            message.text = text
            customer = await session.get(Customer, ticket.customer_id)
            self._notify_agents(
                session,
                "edited",
                ticket,
                at=now,
                customer=customer.name if customer else "",
                text=text[:EXCERPT],
                truncated=len(text) > EXCERPT,
                message_id=message.id,
            )
        self._wakeup()
        return ticket.id

    async def mark_unreachable(self, telegram_id: int) -> None:
        """Telegram refused delivery to this customer (they blocked the bot)."""
        now = self._clock()
        async with self.sessions.begin() as session:
            await session.execute(
                update(Customer)
                .where(Customer.telegram_id == telegram_id, Customer.unreachable_at.is_(None))
                .values(unreachable_at=now)
            )

    async def quarantine(self, source: str, reference: str, raw: bytes, error: str) -> int:
        """Keep an event that could not be processed, and tell the agents about it."""
        now = self._clock()
        async with self.sessions.begin() as session:
            row = Quarantined(
                source=source,
                reference=reference[:200],
                raw=raw,
                error=error[:4000],
                received_at=now,
                retries=0,
            )
            session.add(row)
            await session.flush()
            payload: dict[str, Any] = {
                "event": "quarantined",
                "ticket": None,
                "quarantine_id": row.id,
                "source": source,
                "reference": reference[:200],
                "error": error[:300],
            }
            payload["text"] = self._templates.render("agents/quarantined", **payload)
            enqueue(
                session,
                route=Route.AGENTS,
                recipient="agents",
                kind=OutboxKind.AGENT_NOTICE,
                payload=payload,
                at=now,
            )
            quarantine_id = row.id
        self._wakeup()
        return quarantine_id

    # -- agents ----------------------------------------------------------------------------

    @asynccontextmanager
    async def _acting(
        self, number: int, agent_id: int
    ) -> AsyncIterator[tuple[AsyncSession, Agent, Ticket, datetime]]:
        """One agent action's transaction: the agent checked, the ticket locked."""
        now = self._clock()
        async with self.sessions.begin() as session:
            agent = await _agent(session, agent_id)
            ticket = await _ticket(session, number)
            yield session, agent, ticket, now

    async def agent_role(self, telegram_id: int) -> Role | None:
        """The role of an allowlisted agent, or None for anyone else."""
        async with self.sessions() as session:
            role = await session.scalar(
                select(Agent.role).where(
                    Agent.telegram_id == telegram_id, Agent.removed_at.is_(None)
                )
            )
        return Role(role) if role else None

    async def ban(self, number: int, agent_id: int, *, banned: bool = True) -> None:
        """An admin bans (or unbans) the customer of a ticket: a banned customer gets nothing."""
        now = self._clock()
        async with self.sessions.begin() as session:
            agent = await _agent(session, agent_id)
            if agent.role != Role.ADMIN.value:
                raise NotAllowed("only an admin can ban or unban a customer")
            ticket = await _ticket(session, number)
            customer = await session.get(Customer, ticket.customer_id, with_for_update=True)
            assert customer is not None
            customer.banned_at = now if banned else None
            audit.record(
                session,
                at=now,
                action="ban" if banned else "unban",
                agent=agent,
                ticket_id=ticket.id,
                customer_id=customer.id,
            )

    async def reply(
        self, number: int, agent_id: int, text: str, attachments: Sequence[Attachment] = ()
    ) -> int:
        """Queue an agent's answer to the customer over the channel they last wrote from."""
        if not text.strip() and not attachments:
            raise InvalidAction("an empty reply cannot be sent")
        text = storable_text(text)
        async with self._acting(number, agent_id) as (session, agent, ticket, now):
            if ticket.status == TicketStatus.CLOSED.value:
                raise InvalidAction(f"#{number} is closed; reopen it to answer")
            last_in = (
                await session.scalars(
                    select(Message)
                    .where(
                        Message.ticket_id == ticket.id,
                        Message.direction == Direction.IN.value,
                        # not an auto-reply or bounce: those come from addresses nobody reads
                        Message.counts_for_sla.is_(True),
                    )
                    .order_by(Message.id.desc())
                    .limit(1)
                )
            ).first()
            if last_in is None or not last_in.reply_address or last_in.channel is None:
                raise InvalidAction(f"#{number} has no customer address to answer")
            payload: dict[str, Any] = {
                "text": text,
                "attachments": [a.to_json() for a in attachments],
                "ticket": ticket.id,
                "subject": ticket.subject,
                "in_reply_to": last_in.external_id,
                "agent": agent.name,
            }
            if last_in.channel == Channel.EMAIL.value:
                payload.update(await self._mail_headers(session, ticket, last_in, "reply", now))
            message = Message(
                ticket_id=ticket.id,
                direction=Direction.OUT.value,
                channel=last_in.channel,
                author_agent_id=agent.id,
                text=text,
                attachments=[a.to_json() for a in attachments],
                external_id=payload.get("message_id"),
                reply_address=last_in.reply_address,
                counts_for_sla=False,
                created_at=now,
                delivery=DeliveryState.PENDING.value,
            )
            session.add(message)
            await session.flush()
            enqueue(
                session,
                route=Route(last_in.channel),
                recipient=last_in.reply_address,
                kind=OutboxKind.REPLY,
                payload=payload,
                at=now,
                ticket_id=ticket.id,
                message_id=message.id,
            )
            ticket.updated_at = now
            audit.record(
                session,
                at=now,
                action="reply",
                agent=agent,
                ticket_id=ticket.id,
                message_id=message.id,
                channel=last_in.channel,
            )
            message_id = message.id
        self._wakeup()
        return message_id

    async def note(self, number: int, agent_id: int, text: str) -> int:
        """Add an internal note: kept on the ticket, never sent to the customer."""
        if not text.strip():
            raise InvalidAction("an empty note says nothing")
        text = storable_text(text)
        async with self._acting(number, agent_id) as (session, agent, ticket, now):
            message = Message(
                ticket_id=ticket.id,
                direction=Direction.NOTE.value,
                channel=None,
                author_agent_id=agent.id,
                text=text,
                attachments=[],
                counts_for_sla=False,
                created_at=now,
            )
            session.add(message)
            await session.flush()
            audit.record(
                session,
                at=now,
                action="note",
                agent=agent,
                ticket_id=ticket.id,
                message_id=message.id,
            )
            return message.id

    async def claim(self, number: int, agent_id: int) -> None:
        """Take a ticket so others know it is handled; claiming does not stop the clock."""
        async with self._acting(number, agent_id) as (session, agent, ticket, now):
            if ticket.status == TicketStatus.CLOSED.value:
                raise InvalidAction(f"#{number} is closed")
            if ticket.assignee_id == agent.id:
                raise InvalidAction(f"you have already claimed #{number}")
            if ticket.assignee_id is not None:
                holder = await session.get(Agent, ticket.assignee_id)
                name = holder.name if holder else "another agent"
                raise InvalidAction(f"#{number} is already claimed by {name}")
            ticket.assignee_id = agent.id
            ticket.claimed_at = now
            ticket.updated_at = now
            audit.record(session, at=now, action="claim", agent=agent, ticket_id=ticket.id)

    async def release(self, number: int, agent_id: int) -> None:
        """Give a claimed ticket back to the queue (the claimer, or an admin)."""
        async with self._acting(number, agent_id) as (session, agent, ticket, now):
            if ticket.assignee_id is None:
                raise InvalidAction(f"#{number} is not claimed")
            if ticket.assignee_id != agent.id and agent.role != Role.ADMIN.value:
                raise NotAllowed(
                    f"#{number} is claimed by someone else; only they or an admin can release it"
                )
            audit.record(
                session,
                at=now,
                action="release",
                agent=agent,
                ticket_id=ticket.id,
                previous_assignee=ticket.assignee_id,
            )
            ticket.assignee_id = None
            ticket.claimed_at = None
            ticket.updated_at = now

    async def close(self, number: int, agent_id: int) -> None:
        """Close a ticket; a running wait ends unanswered and is not counted as a response."""
        async with self._acting(number, agent_id) as (session, agent, ticket, now):
            if ticket.status == TicketStatus.CLOSED.value:
                raise InvalidAction(f"#{number} is already closed")
            audit.record(
                session,
                at=now,
                action="close",
                agent=agent,
                ticket_id=ticket.id,
                was_waiting=ticket.waiting_since is not None,
            )
            ticket.status = TicketStatus.CLOSED.value
            ticket.closed_at = now
            ticket.waiting_since = None
            ticket.waiting_message_id = None
            ticket.due_at = None
            ticket.updated_at = now

    async def reopen(self, number: int, agent_id: int) -> None:
        """Reopen a closed ticket; the SLA clock starts again only when the customer writes."""
        async with self._acting(number, agent_id) as (session, agent, ticket, now):
            if ticket.status == TicketStatus.OPEN.value:
                raise InvalidAction(f"#{number} is already open")
            ticket.status = TicketStatus.OPEN.value
            ticket.closed_at = None
            ticket.updated_at = now
            audit.record(session, at=now, action="reopen", agent=agent, ticket_id=ticket.id)

    # -- delivery outcomes (the outbox worker calls these) ---------------------------------

    async def delivered(
        self, session: AsyncSession, row: OutboxRow, at: datetime, external_id: str | None
    ) -> None:
        """A reply reached the customer: this, and only this, stops the SLA clock."""
        if row.message_id is None or row.kind != OutboxKind.REPLY.value:
            return
        message = await session.get(Message, row.message_id)
        if message is None:
            return
        message.delivery = DeliveryState.DELIVERED.value
        message.delivered_at = at
        if external_id and message.external_id is None:
            message.external_id = external_id
        ticket = await session.get(Ticket, message.ticket_id, with_for_update=True)
        if ticket is None:
            return
        started_by = ticket.waiting_message_id
        if ticket.waiting_since is not None and started_by is not None and started_by < message.id:
            # The wait began with a message stored before this answer was written: it is answered.
            session.add(
                Response(
                    ticket_id=ticket.id,
                    message_id=message.id,
                    agent_id=message.author_agent_id,
                    plan=ticket.plan,
                    channel=message.channel or ticket.channel,
                    waiting_since=ticket.waiting_since,
                    answered_at=at,
                    business_hours=self.policy.calendar.hours_between(ticket.waiting_since, at),
                )
            )
            # Customer messages stored after the answer was written start the next wait. Both
            # lock the ticket row, so message ids give the order they reached the ticket in.
            later = (
                await session.execute(
                    select(Message.id, Message.created_at)
                    .where(
                        Message.ticket_id == ticket.id,
                        Message.direction == Direction.IN.value,
                        Message.counts_for_sla.is_(True),
                        Message.id > message.id,
                    )
                    .order_by(Message.id)
                    .limit(1)
                )
            ).first()
            ticket.waiting_since = later.created_at if later is not None else None
            ticket.waiting_message_id = later.id if later is not None else None
            ticket.due_at = self.policy.due_at(later.created_at) if later is not None else None
        self._notify_agents(
            session,
            "delivered",
            ticket,
            at=at,
            message_id=message.id,
            address=row.recipient,
            route=row.route,
        )

    async def failed(self, session: AsyncSession, row: OutboxRow, at: datetime, error: str) -> None:
        """A row could not be delivered for good: the agents are told, the ticket shows it."""
        if row.message_id is not None:
            message = await session.get(Message, row.message_id)
            if message is not None:
                message.delivery = DeliveryState.FAILED.value
        audit.record(
            session,
            at=at,
            action="delivery_failed",
            ticket_id=row.ticket_id,
            outbox_id=row.id,
            kind=row.kind,
            route=row.route,
            error=error[:500],
        )
        if row.route == Route.AGENTS.value or row.ticket_id is None:
            return  # the agents' group itself is unreachable; the log and audit entry remain
        ticket = await session.get(Ticket, row.ticket_id)
        if ticket is not None:
            self._notify_agents(
                session,
                "delivery_failed",
                ticket,
                at=at,
                kind=row.kind,
                address=row.recipient,
                route=row.route,
                error=error[:500],
            )


async def _agent(session: AsyncSession, telegram_id: int) -> Agent:
    agent = (
        await session.scalars(
            select(Agent).where(Agent.telegram_id == telegram_id, Agent.removed_at.is_(None))
        )
    ).first()
    if agent is None:
        raise AgentNotFound(telegram_id)
    return agent


async def _ticket(session: AsyncSession, number: int) -> Ticket:
    ticket = await session.get(Ticket, number, with_for_update=True)
    if ticket is None:
        raise TicketNotFound(number)
    return ticket


def _default_address(ref: CustomerRef) -> str:
    return str(ref.telegram_id) if ref.telegram_id is not None else (ref.email or "").lower()


async def _insert_ignore(
    session: AsyncSession, model: type[Any], values: dict[str, Any]
) -> int | None:
    """INSERT … ON CONFLICT DO NOTHING on either database; the new row's id, or None."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    result = await session.execute(
        insert(model).values(**values).on_conflict_do_nothing().returning(model.id)
    )
    inserted = result.scalar()
    return int(inserted) if inserted is not None else None


async def _earlier_intake(session: AsyncSession, key: tuple[str, str]) -> Intake:
    source, value = key
    row = (
        await session.execute(
            select(Message.ticket_id, Message.id)
            .join(InboundKey, InboundKey.message_id == Message.id)
            .where(InboundKey.source == source, InboundKey.key == value)
        )
    ).first()
    if row is None:
        return Intake(ticket=0, message_id=0, duplicate=True)
    return Intake(ticket=row.ticket_id, message_id=row.id, duplicate=True)
