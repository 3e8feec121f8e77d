"""The operations channels call. Each one is a single transaction that also writes its outbox rows
and its audit entry, so a change and the messages it causes are committed together or not at all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tickets import audit, rate_limits
from tickets.agents import active_agent
from tickets.console import AGENT_REPLY, Console  # AGENT_REPLY: the desk's contract too
from tickets.customer_lookup import (
    NAME_LIMIT,  # noqa: F401 - part of the desk's contract
    locale_of,
)
from tickets.customer_messages import (  # noqa: F401 - the limits are part of the desk's contract
    EXCERPT,
    NEW_TICKETS_PER_CUSTOMER,
    RECEIPTS_PER_ADDRESS,
    Receiver,
    answering,
)
from tickets.deferred_writes import Unwritten
from tickets.delivery import DeliveryOutcomes
from tickets.errors import AgentNotFound, InvalidAction, NotAllowed, TicketNotFound
from tickets.group_commit import Coalescer, in_transactions
from tickets.languages import LOCALES, choose
from tickets.mail_threads import thread_headers
from tickets.merge import Merger
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
from tickets.notices import notify_agents
from tickets.outbox import Delivery
from tickets.payloads import ReplyPayload, add_mail_headers, enqueue
from tickets.pending import Pending, unpark
from tickets.policy import SlaPolicy
from tickets.ports import INTAKE, NO_EVENTS, AccountPlans, Clock, Events, Renderer, utcnow
from tickets.rate_limits import RateRule, RateVerdict
from tickets.satisfaction import Satisfaction
from tickets.search import TicketSearch
from tickets.tables import (
    Agent,
    Customer,
    CustomerEmail,
    InboundKey,
    Message,
    MessageEdit,
    OutboxRow,
    Quarantined,
    Ticket,
)

UNWRITTEN = "supportbot.unwritten"  # the batch's deferred writes, kept in its session's info


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
        plans: AccountPlans | None = None,
        events: Events = NO_EVENTS,
        auto_close_days: int = 0,
        satisfaction: Satisfaction | None = None,
    ) -> None:
        self.sessions = sessions
        self._events = events
        self.policy = policy
        self._templates = templates
        self._clock = clock
        self._wakeup = wakeup or (lambda: None)
        self._mail_domain = mail_domain
        self._receiver = Receiver(policy, templates, mail_domain=mail_domain, plans=plans)
        self._outcomes = DeliveryOutcomes(policy, templates)
        self._arrivals: Coalescer[IncomingMessage, Intake] = Coalescer(self.receive_many)
        self.console = Console(sessions, templates, clock=clock, wakeup=self._wakeup)
        self.search = TicketSearch(sessions)
        self.merger = Merger(
            sessions, templates, clock=clock, wakeup=self._wakeup, mail_domain=mail_domain
        )
        self.pending = Pending(
            sessions,
            policy,
            templates,
            clock=clock,
            wakeup=self._wakeup,
            mail_domain=mail_domain,
            auto_close_days=auto_close_days,
            satisfaction=satisfaction,
        )
        self.satisfaction = satisfaction

    # -- customers -------------------------------------------------------------------------

    async def receive(self, incoming: IncomingMessage) -> Intake:
        """Store a customer message: open, join or reopen a ticket, start the SLA wait, notify.

        Messages that arrive while others are being stored share their next transaction (in
        the order they arrived); each caller gets its own message's outcome or error.
        """
        return await self._arrivals.submit(incoming)

    async def receive_many(self, incoming: Sequence[IncomingMessage]) -> list[Intake | Exception]:
        """Store a batch of customer messages in order, in as few transactions as possible.

        Each message gets its own outcome, or the error that kept it from being stored; a
        message that fails never keeps the others from being stored.
        """
        results = await in_transactions(
            self.sessions,
            incoming,
            self._receive_one,
            self._write_unwritten,
            start=self._read_ahead,
        )
        if any(isinstance(result, Intake) for result in results):
            self._wakeup()
        for message, result in zip(incoming, results, strict=True):
            if isinstance(result, Intake) and not (result.duplicate or result.ignored):
                self._events.count(INTAKE, channel=message.channel.value)
        return results

    async def _read_ahead(self, session: AsyncSession, batch: Sequence[IncomingMessage]) -> None:
        connection = await session.connection()
        unwritten = await self._receiver.read_ahead(connection, batch, self._clock())
        session.info[UNWRITTEN] = unwritten

    async def _receive_one(self, session: AsyncSession, incoming: IncomingMessage) -> Intake:
        unwritten = session.info.setdefault(UNWRITTEN, Unwritten())
        connection = await session.connection()
        return await self._receiver.receive(connection, incoming, self._clock(), unwritten)

    async def _write_unwritten(self, session: AsyncSession) -> None:
        unwritten = session.info.pop(UNWRITTEN, None)
        if unwritten is not None:
            await unwritten.write(await session.connection())

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

    async def customer_locale(self, ref: CustomerRef) -> str:
        """The locale a Telegram customer reads: their /language pick, else what their client
        says now, else what it said last, else English."""
        async with self.sessions() as session:
            row = (
                await session.execute(
                    select(Customer.language, Customer.client_language).where(
                        Customer.telegram_id == ref.telegram_id
                    )
                )
            ).first()
        if row is None:
            return choose(ref.language)
        return choose(row.language, ref.language, row.client_language)

    async def set_language(self, ref: CustomerRef, locale: str) -> None:
        """Keep the language a customer picked with /language; it wins over their client's."""
        if locale not in LOCALES:
            raise InvalidAction(f"no {locale!r} locale; shipped: {', '.join(LOCALES)}")
        now = self._clock()
        async with self.sessions.begin() as session:
            connection = await session.connection()
            customer, _ = await self._receiver.customer(connection, ref, now, wrote=False)
            await connection.execute(
                update(Customer).where(Customer.id == customer.id).values(language=locale)
            )

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

    async def answer_customer(self, route: Route, recipient: str, text: str) -> None:
        """Queue the answer to a customer's command: the outbox paces it, no caller waits."""
        now = self._clock()
        async with self.sessions.begin() as session:
            enqueue(
                session,
                route=route,
                recipient=recipient,
                kind=OutboxKind.ANSWER,
                payload={"text": text, "automatic": True},
                at=now,
            )
        self._wakeup()

    async def count_use(self, rule: RateRule, holder: str | int) -> RateVerdict:
        """Count one use of a rate-limited request in its own transaction (see rate_limits)."""
        async with self.sessions.begin() as session:
            connection = await session.connection()
            return await rate_limits.take(connection, [(rule, holder)], self._clock())

    async def request_new_ticket(self, ref: CustomerRef) -> None:
        """Remember a customer's `/new`: their next message opens a separate ticket."""
        now = self._clock()
        async with self.sessions.begin() as session:
            connection = await session.connection()
            customer, _ = await self._receiver.customer(connection, ref, now, wrote=False)
            await connection.execute(
                update(Customer).where(Customer.id == customer.id).values(wants_new_ticket=True)
            )

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
            notify_agents(
                session,
                self._templates,
                "edited",
                ticket=ticket,
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
            notify_agents(
                session,
                self._templates,
                "quarantined",
                at=now,
                quarantine_id=row.id,
                source=source,
                reference=reference[:200],
                error=error[:300],
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
        self,
        number: int,
        agent_id: int,
        text: str,
        attachments: Sequence[Attachment] = (),
        *,
        key: str | None = None,
    ) -> int:
        """Queue an agent's answer to the customer over the channel they last wrote from.

        `key` names the agent's own message that asked for it (Telegram's chat:message id): the
        same message taken in again, after a crash before its update was confirmed, queues
        nothing more and returns the reply it queued the first time.
        """
        if not text.strip() and not attachments:
            raise InvalidAction("an empty reply cannot be sent")
        text = storable_text(text)
        async with self._acting(number, agent_id) as (session, agent, ticket, now):
            if key is not None:
                earlier = await session.scalar(
                    select(InboundKey.message_id).where(
                        InboundKey.source == AGENT_REPLY, InboundKey.key == bounded_id(key)
                    )
                )
                if earlier is not None:
                    return int(earlier)
            if ticket.status == TicketStatus.CLOSED.value:
                raise InvalidAction(f"#{number} is closed; reopen it to answer")
            last_in = await answering(session, ticket.id)
            if last_in is None or not last_in.reply_address or last_in.channel is None:
                raise InvalidAction(f"#{number} has no customer address to answer")
            payload: ReplyPayload = {
                "text": text,
                "attachments": [a.to_json() for a in attachments],
                "ticket": ticket.id,
                "subject": ticket.subject,
                "in_reply_to": last_in.external_id,
                "agent": agent.name,
            }
            if last_in.channel == Channel.EMAIL.value:
                locale = await locale_of(await session.connection(), ticket.customer_id)
                payload["locale"] = locale
                add_mail_headers(
                    payload,
                    await thread_headers(
                        await session.connection(),
                        ticket_id=ticket.id,
                        subject=ticket.subject
                        or self._templates.render("mail/subject", locale=locale),
                        in_reply_to=last_in.external_id,
                        kind="reply",
                        at=now,
                        domain=self._mail_domain,
                    ),
                )
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
            if key is not None:  # the ticket's lock keeps a second taker waiting until this commits
                session.add(
                    InboundKey(
                        source=AGENT_REPLY,
                        key=bounded_id(key),
                        message_id=message.id,
                        received_at=now,
                    )
                )
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
            await unpark(session, ticket.id)
            asked = self.satisfaction is not None and await self.satisfaction.ask(
                session, ticket, now
            )
        if asked:
            self._wakeup()  # the ask is committed: the outbox sends it now

    async def vouch(self, number: int, agent_id: int) -> int:
        """An agent vouches for a ticket's unverified senders: the warning ends (audited) until
        another mail that fails SPF/DKIM/DMARC arrives. Returns how many messages it covered."""
        async with self._acting(number, agent_id) as (session, agent, ticket, now):
            unvouched = (
                await session.scalars(
                    select(Message).where(
                        Message.ticket_id == ticket.id,
                        Message.direction == Direction.IN.value,
                        Message.auth == "fail",
                        Message.vouched_at.is_(None),
                    )
                )
            ).all()
            if not unvouched:
                raise InvalidAction(f"#{number} has no unverified sender to vouch for")
            senders = sorted({m.sender_address for m in unvouched if m.sender_address})
            for message in unvouched:
                message.vouched_at = now
            audit.record(
                session,
                at=now,
                action="vouch",
                agent=agent,
                ticket_id=ticket.id,
                messages=[m.id for m in unvouched],
                senders=senders,
            )
            notify_agents(
                session,
                self._templates,
                "vouched",
                at=now,
                ticket_id=ticket.id,
                agent=agent.name or str(agent.telegram_id),
                senders=", ".join(senders),
                restate=True,  # the card and topic title drop their warning
            )
            return len(unvouched)

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

    async def delivered(self, session: AsyncSession, deliveries: Sequence[Delivery]) -> None:
        """Replies reached their customers: this, and only this, stops the SLA clock."""
        await self._outcomes.delivered(await session.connection(), deliveries)

    async def failed(self, session: AsyncSession, row: OutboxRow, at: datetime, error: str) -> None:
        """A row could not be delivered for good: the agents are told, the ticket shows it."""
        await self._outcomes.failed(await session.connection(), row, at, error)


async def _agent(session: AsyncSession, telegram_id: int) -> Agent:
    agent = await active_agent(session, telegram_id)
    if agent is None:
        raise AgentNotFound(telegram_id)
    return agent


async def _ticket(session: AsyncSession, number: int) -> Ticket:
    ticket = await session.get(Ticket, number, with_for_update=True)
    if ticket is None:
        raise TicketNotFound(number)
    return ticket
