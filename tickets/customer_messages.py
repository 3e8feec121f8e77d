"""A customer message arrives: the desk's busiest write, in SQLAlchemy Core.

Each message is a handful of statements on the caller's transaction: the dedup key, the customer
(locked), the ticket (locked), the message, the ticket's wait, and the outbox rows. Core keeps the
ORM's unit of work and identity map off this path; a batch of messages shares one transaction
(see `tickets.group_commit`), and reads its senders and their recent receipts together first
(`Receiver.read_ahead`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import Insert, bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from tickets.customer_lookup import CustomerRow, find_or_create, load_senders, sender_key
from tickets.deferred_writes import TicketState, Unwritten
from tickets.dialect_sql import insert_ignoring, next_ticket_number
from tickets.errors import InvalidAction
from tickets.mail_threads import thread_headers
from tickets.model import (
    Channel,
    CustomerRef,
    DeliveryState,
    Direction,
    IncomingMessage,
    Intake,
    OutboxKind,
    Route,
    TicketStatus,
    bounded_id,
    storable_text,
)
from tickets.notices import agents_notice
from tickets.payloads import ReceiptPayload, add_mail_headers, outbox_row
from tickets.policy import SlaPolicy
from tickets.ports import AccountPlans, Renderer
from tickets.rate_limits import RateKey, RateRule, lock_windows
from tickets.tables import Message, audit_log, inbound_keys, mail_ids, messages, tickets

# Of a customer message, an agents' notice carries this much (one Telegram message with its header
# and footer); the agents' feed sends the whole text of a longer one as a file.
EXCERPT = 3500
# A mail loop or a flood still reaches the agents, just without more receipts.
RECEIPTS_PER_ADDRESS = RateRule("receipts_per_address", 3, timedelta(hours=1))
# A Telegram customer's new tickets; over it, messages join their latest ticket.
NEW_TICKETS_PER_CUSTOMER = RateRule("new_tickets", 5, timedelta(hours=1))
# The agents' notice that posts a customer's mailed files into the ticket's place.
MAIL_FILES = "mail_files"

_TICKET_COLUMNS = (
    tickets.c.id,
    tickets.c.customer_id,
    tickets.c.channel,
    tickets.c.subject,
    tickets.c.status,
    tickets.c.plan,
    tickets.c.waiting_since,
    tickets.c.waiting_message_id,
    tickets.c.due_at,
    tickets.c.closed_at,
)
_LATEST_TICKET = (
    select(*_TICKET_COLUMNS)
    .where(tickets.c.customer_id == bindparam("customer_id"))
    .order_by((tickets.c.status == TicketStatus.OPEN.value).desc(), tickets.c.id.desc())
    .limit(1)
    .with_for_update()
)
_TICKET_BY_ID = select(*_TICKET_COLUMNS).where(tickets.c.id == bindparam("ticket_id"))
_TICKET_BY_ID_LOCKED = _TICKET_BY_ID.with_for_update()
_MERGED_INTO = select(tickets.c.merged_into_id).where(tickets.c.id == bindparam("ticket_id"))
MERGE_HOPS = 5  # a chain of merges followed this far (each merge closes its ticket)
_THREAD_TICKET = (
    select(mail_ids.c.ticket_id)
    .where(mail_ids.c.message_id.in_(bindparam("references", expanding=True)))
    .order_by(mail_ids.c.id.desc())
    .limit(1)
)
_NEW_TICKET = insert(tickets).returning(tickets.c.id)
_NEW_MESSAGE = insert(messages).returning(messages.c.id)
_FORGET_KEY = delete(inbound_keys).where(inbound_keys.c.id == bindparam("key_id"))
_EARLIER = (
    select(messages.c.ticket_id, messages.c.id)
    .join(inbound_keys, inbound_keys.c.message_id == messages.c.id)
    .where(inbound_keys.c.source == bindparam("source"), inbound_keys.c.key == bindparam("key"))
)
_WITHIN_WINDOW = "customer wrote within the reopen window"
_OVER_LIMIT = "customer wrote over their limit of new tickets"
_NEW_AUDIT = insert(audit_log)


class Receiver:
    """Stores customer messages; `receive` runs on a transaction the caller owns."""

    def __init__(
        self,
        policy: SlaPolicy,
        templates: Renderer,
        *,
        mail_domain: str,
        plans: AccountPlans | None = None,
    ) -> None:
        self._policy = policy
        self._templates = templates
        self._mail_domain = mail_domain
        self._plans = plans

    async def receive(
        self,
        connection: AsyncConnection,
        incoming: IncomingMessage,
        now: datetime,
        unwritten: Unwritten,
    ) -> Intake:
        """Store one customer message: open, join or reopen a ticket, start the wait, notify.

        Part of the work is left in `unwritten`, for the caller to write before it commits.
        """
        at = incoming.received_at or now
        key_id: int | None = None
        if incoming.dedup_key is not None:
            source, key = incoming.dedup_key[0], bounded_id(incoming.dedup_key[1])
            key_id, earlier = await self._dedup(connection, source, key, now, unwritten)
            if earlier is not None:
                return earlier
        if incoming.from_desk:
            intake = await self._from_desk(connection, incoming, at, now, unwritten)
            _link_key(unwritten, key_id, incoming, intake)
            return intake
        customer, wanted_new = await self.customer(
            connection, incoming.customer, now, wrote=True, unwritten=unwritten
        )
        if customer.banned:
            if key_id is not None:
                await connection.execute(_FORGET_KEY, {"key_id": key_id})
            return Intake(ticket=0, message_id=0, ignored=True)
        if wanted_new:
            incoming = replace(incoming, new_ticket=True, ticket=None)
        bounced: str | None = None
        if incoming.channel is Channel.EMAIL:
            incoming, bounced = await self._thread(connection, customer, incoming, unwritten)
        ticket, opened, reopened = await self._ticket_for(
            connection, customer, incoming, at, now, unwritten
        )
        external_id = bounded_id(incoming.external_id) if incoming.external_id else None
        reply_address = _reply_address(incoming)
        message_id = (
            await connection.execute(
                _NEW_MESSAGE,
                {
                    "ticket_id": ticket.id,
                    "direction": Direction.IN.value,
                    "channel": incoming.channel.value,
                    "author_agent_id": None,
                    "text": storable_text(incoming.text),
                    "attachments": [a.to_json() for a in incoming.attachments],
                    "external_id": external_id,
                    "reply_address": reply_address,
                    "counts_for_sla": not incoming.automated,
                    "auth": incoming.auth,
                    **_sender_columns(incoming),
                    "created_at": at,
                    "delivery": None,
                    "delivered_at": None,
                },
            )
        ).scalar_one()
        _link_key(unwritten, key_id, incoming, Intake(ticket.id, message_id))
        if incoming.channel is Channel.EMAIL and external_id:
            unwritten.add_mail_id(external_id, ticket.id, now)
        if not incoming.automated and ticket.waiting_since is None:
            ticket.waiting_since = at
            ticket.waiting_message_id = message_id
            ticket.due_at = self._policy.due_at(at)
        ticket.updated_at = now
        rows = unwritten.outbox_rows
        receipt = (opened or reopened) and not incoming.automated
        if receipt:
            receipt = await self._receipt(
                connection,
                unwritten,
                ticket,
                incoming.channel,
                reply_address,
                external_id,
                reopened=reopened,
                at=now,
                locale=customer.locale,
            )
        event = "opened" if opened else "reopened" if reopened else "message"
        if bounced:
            event = "bounced"
        rows.append(
            agents_notice(
                self._templates,
                event,
                ticket=ticket,
                at=now,
                customer=customer.name,
                bounced=bounced,
                raw_source=incoming.raw_source is not None,
                text=storable_text(incoming.text[:EXCERPT]),
                truncated=len(incoming.text) > EXCERPT,
                attachments=len(incoming.attachments),
                automated=incoming.automated,
                auth=incoming.auth,
                message_id=message_id,
            )
        )
        if incoming.channel is Channel.EMAIL and incoming.attachments and not incoming.automated:
            self._mail_files(unwritten, ticket, incoming, message_id, now)
        return Intake(
            ticket=ticket.id,
            message_id=message_id,
            opened=opened,
            reopened=reopened,
            receipt=receipt,
        )

    def _mail_files(
        self,
        unwritten: Unwritten,
        ticket: TicketState,
        incoming: IncomingMessage,
        message_id: int,
        now: datetime,
    ) -> None:
        """Keep a customer's mailed files and queue their post into the ticket's place (after
        the message's own notice): the agents' feed posts them, paced like any notice."""
        for position, attachment in enumerate(incoming.attachments):
            if attachment.data is not None:
                unwritten.files.append(
                    {"message_id": message_id, "position": position, "data": attachment.data}
                )
        unwritten.outbox_rows.append(
            agents_notice(
                self._templates,
                MAIL_FILES,
                ticket_id=ticket.id,
                at=now,
                files=len(incoming.attachments),
                message_id=message_id,
            )
        )

    async def _dedup(
        self,
        connection: AsyncConnection,
        source: str,
        key: str,
        now: datetime,
        unwritten: Unwritten,
    ) -> tuple[int | None, Intake | None]:
        """The new dedup key's id, or the outcome of the message stored with it before."""
        values = {"source": source, "key": key, "received_at": now}
        new_key = _new_key(connection.dialect.name)
        key_id = (await connection.execute(new_key, values)).scalar()
        if key_id is not None:
            return key_id, None
        if (source, key) in unwritten.keyed:  # stored earlier in this batch
            return None, unwritten.keyed[source, key]
        earlier = (await connection.execute(_EARLIER, {"source": source, "key": key})).first()
        if earlier is None:
            return None, Intake(ticket=0, message_id=0, duplicate=True)
        return None, Intake(ticket=earlier.ticket_id, message_id=earlier.id, duplicate=True)

    async def customer(
        self,
        connection: AsyncConnection,
        ref: CustomerRef,
        at: datetime,
        *,
        wrote: bool,
        unwritten: Unwritten | None = None,
    ) -> tuple[CustomerRow, bool]:
        """The customer (see `find_or_create`), from what the batch read ahead if it did."""
        known = unwritten.senders if unwritten is not None else None
        return await find_or_create(
            connection, ref, at, wrote=wrote, known=known, plans=self._plans
        )

    async def read_ahead(
        self, connection: AsyncConnection, batch: Sequence[IncomingMessage], now: datetime
    ) -> Unwritten:
        """Read what every message of a batch needs, one statement for each kind: the senders
        (locked), then the rate windows of their receipts and new tickets (locked).

        A lone message is left to look up what it needs itself, which costs no more; so are the
        windows of a kind that only one message of the batch could use.
        """
        unwritten = Unwritten()
        if len(batch) < 2:
            return unwritten
        senders = await load_senders(connection, (i.customer for i in batch))
        unwritten.senders.update(senders)
        keys: list[RateKey] = []
        mails = [i for i in batch if i.channel is Channel.EMAIL and not i.automated]
        if len(mails) > 1:
            keys += [RECEIPTS_PER_ADDRESS.key(_reply_address(i)) for i in mails]
        chats = [i for i in batch if i.channel is Channel.TELEGRAM]
        if len(chats) > 1:
            found = (senders.get(sender_key(i.customer)) for i in chats)
            keys += [NEW_TICKETS_PER_CUSTOMER.key(f.id) for f in found if f is not None]
        unwritten.windows.update(await lock_windows(connection, keys))
        return unwritten

    async def _ticket_for(
        self,
        connection: AsyncConnection,
        customer: CustomerRow,
        incoming: IncomingMessage,
        at: datetime,
        now: datetime,
        unwritten: Unwritten,
    ) -> tuple[TicketState, bool, bool]:
        """The ticket the message joins (locked), and whether it was opened or reopened.

        A Telegram customer over their limit of new tickets joins (or reopens) their latest
        ticket instead of opening one: what they send is kept, the queue is not flooded.
        """
        found = None
        if incoming.ticket is not None:
            found = (
                await connection.execute(_TICKET_BY_ID_LOCKED, {"ticket_id": incoming.ticket})
            ).first()
        elif not incoming.new_ticket:
            found = (await connection.execute(_LATEST_TICKET, {"customer_id": customer.id})).first()
        if found is not None and found.status != TicketStatus.OPEN.value:
            found = await _follow_merges(connection, found)
        if found is not None:
            ticket = unwritten.tickets.get(found.id) or TicketState(**found._asdict())
            unwritten.tickets[ticket.id] = ticket
            if ticket.status == TicketStatus.OPEN.value:
                return ticket, False, False
            if self._policy.reopens(ticket.closed_at, at):
                reopened = await self._reopen(connection, ticket, customer, at, _WITHIN_WINDOW)
                return reopened, False, True
        latest = await self._over_new_ticket_limit(connection, customer, incoming, now, unwritten)
        if latest is not None:
            if latest.status == TicketStatus.OPEN.value:
                return latest, False, False
            reopened = await self._reopen(connection, latest, customer, at, _OVER_LIMIT)
            return reopened, False, True
        subject = storable_text(incoming.subject[:300])
        number = (
            await connection.execute(
                _NEW_TICKET,
                {
                    "id": await next_ticket_number(connection),
                    "customer_id": customer.id,
                    "channel": incoming.channel.value,
                    "subject": subject,
                    "status": TicketStatus.OPEN.value,
                    "plan": customer.plan,
                    "opened_at": at,
                    "updated_at": at,
                },
            )
        ).scalar_one()
        ticket = TicketState(
            id=number,
            customer_id=customer.id,
            channel=incoming.channel.value,
            subject=subject,
            status=TicketStatus.OPEN.value,
            plan=customer.plan,
            waiting_since=None,
            waiting_message_id=None,
            due_at=None,
            closed_at=None,
        )
        unwritten.tickets[ticket.id] = ticket
        unwritten.opened.add(ticket.id)
        return ticket, True, False

    async def _reopen(
        self,
        connection: AsyncConnection,
        ticket: TicketState,
        customer: CustomerRow,
        at: datetime,
        reason: str,
    ) -> TicketState:
        ticket.status = TicketStatus.OPEN.value
        ticket.closed_at = None
        ticket.plan = customer.plan
        await connection.execute(
            _NEW_AUDIT,
            {
                "at": at,
                "actor": "customer",
                "agent_id": None,
                "action": "reopen",
                "ticket_id": ticket.id,
                "details": {"reason": reason},
            },
        )
        return ticket

    async def _over_new_ticket_limit(
        self,
        connection: AsyncConnection,
        customer: CustomerRow,
        incoming: IncomingMessage,
        now: datetime,
        unwritten: Unwritten,
    ) -> TicketState | None:
        """Count a new Telegram ticket against the customer's limit; over it, their latest
        ticket (locked), which the message joins instead. The customer is told once."""
        if incoming.channel is not Channel.TELEGRAM:
            return None
        rule = NEW_TICKETS_PER_CUSTOMER
        window = await unwritten.window(connection, rule.key(customer.id))
        retry_at = window.retry_at(rule, now)
        if retry_at is None:
            window.use(rule, now)
            return None
        found = (await connection.execute(_LATEST_TICKET, {"customer_id": customer.id})).first()
        if found is None:  # the tickets it counted are gone: nothing to join
            window.use(rule, now)
            return None
        ticket = unwritten.tickets.get(found.id) or TicketState(**found._asdict())
        unwritten.tickets[ticket.id] = ticket
        if window.refuse(now):
            text = self._templates.render(
                "telegram/slow_down", locale=customer.locale, ticket=ticket.id, retry_at=retry_at
            )
            unwritten.outbox_rows.append(
                outbox_row(
                    Route.TELEGRAM,
                    _reply_address(incoming),
                    OutboxKind.NOTICE,
                    {"text": text, "ticket": ticket.id, "automatic": True},
                    now,
                    ticket_id=ticket.id,
                )
            )
        return ticket

    async def _thread(
        self,
        connection: AsyncConnection,
        customer: CustomerRow | None,
        incoming: IncomingMessage,
        unwritten: Unwritten,
    ) -> tuple[IncomingMessage, str | None]:
        """Which ticket a mail belongs to: a bounce's original, its thread's, or its [#N] tag's,
        and for a bounce what it was that bounced ("reply", "acknowledgement", "notice", "mail").

        Never by subject text. A tag counts only for the ticket's own customer, so a stranger
        cannot write into someone else's ticket by copying its number.
        """
        if incoming.bounce_of:
            bounced = [bounded_id(i) for i in incoming.bounce_of]
            original = (
                await connection.execute(
                    select(messages.c.id, messages.c.ticket_id)
                    .where(
                        messages.c.channel == Channel.EMAIL.value,
                        messages.c.direction == Direction.OUT.value,
                        messages.c.external_id.in_(bounced),
                    )
                    .limit(1)
                )
            ).first()
            if original is not None:  # an agent's reply
                await connection.execute(
                    update(messages)
                    .where(messages.c.id == original.id)
                    .values(delivery=DeliveryState.BOUNCED.value)
                )
                threaded = replace(incoming, ticket=original.ticket_id, new_ticket=False)
                return replace(threaded, automated=True), "reply"
            receipt_ticket = (
                unwritten.thread(bounced)
                or (  # an automatic mail, e.g. a receipt
                    await connection.execute(
                        select(mail_ids.c.ticket_id)
                        .where(mail_ids.c.message_id.in_(bounced))
                        .limit(1)
                    )
                ).scalar()
            )
            if receipt_ticket is not None:
                threaded = replace(incoming, ticket=receipt_ticket, new_ticket=False)
                return replace(threaded, automated=True), _bounced_kind(bounced)
        if incoming.thread_refs:
            references = [bounded_id(r) for r in incoming.thread_refs]
            found = (
                unwritten.thread(references)
                or (await connection.execute(_THREAD_TICKET, {"references": references})).scalar()
            )
            if found is not None:
                return replace(incoming, ticket=found, new_ticket=False), None
        if incoming.ticket_tag is not None:
            tagged = (
                await connection.execute(_TICKET_BY_ID, {"ticket_id": incoming.ticket_tag})
            ).first()
            if tagged is not None and (customer is None or tagged.customer_id == customer.id):
                return replace(incoming, ticket=tagged.id, new_ticket=False), None
        return incoming, None

    async def _from_desk(
        self,
        connection: AsyncConnection,
        incoming: IncomingMessage,
        at: datetime,
        now: datetime,
        unwritten: Unwritten,
    ) -> Intake:
        """Mail from the support address itself: an internal note on the ticket it threads to.

        An agent answering from a mail client with Cc to the mailbox, or a forwarder sending
        our own receipt back: neither is a customer's word, so no customer is made, no wait
        starts or ends, and the ticket is neither opened nor reopened. Mail of ours that
        belongs to no ticket is refused (and so set aside, raw, with a notice to the agents).
        """
        threaded, _bounced = await self._thread(
            connection, None, replace(incoming, bounce_of=()), unwritten
        )
        if threaded.ticket is None:
            raise InvalidAction(
                "mail from the support address that belongs to no ticket: "
                "the desk never becomes its own customer"
            )
        found = (
            await connection.execute(_TICKET_BY_ID_LOCKED, {"ticket_id": threaded.ticket})
        ).first()
        if found is None:
            raise InvalidAction(f"there is no ticket #{threaded.ticket}")
        ticket = unwritten.tickets.get(found.id) or TicketState(**found._asdict())
        unwritten.tickets[ticket.id] = ticket
        external_id = bounded_id(incoming.external_id) if incoming.external_id else None
        message_id = (
            await connection.execute(
                _NEW_MESSAGE,
                {
                    "ticket_id": ticket.id,
                    "direction": Direction.NOTE.value,
                    "channel": incoming.channel.value,
                    "author_agent_id": None,
                    "text": storable_text(incoming.text),
                    "attachments": [a.to_json() for a in incoming.attachments],
                    "external_id": external_id,
                    "reply_address": None,
                    "counts_for_sla": False,
                    "auth": incoming.auth,
                    **_sender_columns(incoming),
                    "created_at": at,
                    "delivery": None,
                    "delivered_at": None,
                },
            )
        ).scalar_one()
        if external_id:
            unwritten.add_mail_id(external_id, ticket.id, now)
        ticket.updated_at = now
        unwritten.outbox_rows.append(
            agents_notice(
                self._templates,
                "outside_mail",
                ticket=ticket,
                at=now,
                sender=_sender(incoming),
                text=storable_text(incoming.text[:EXCERPT]),
                truncated=len(incoming.text) > EXCERPT,
                attachments=len(incoming.attachments),
                automated=incoming.automated,
                message_id=message_id,
            )
        )
        return Intake(ticket=ticket.id, message_id=message_id)

    async def _receipt(
        self,
        connection: AsyncConnection,
        unwritten: Unwritten,
        ticket: TicketState,
        channel: Channel,
        recipient: str,
        external_id: str | None,
        *,
        reopened: bool,
        at: datetime,
        locale: str,
    ) -> bool:
        route = Route(channel.value)
        if route is Route.EMAIL:
            rule = RECEIPTS_PER_ADDRESS
            window = await unwritten.window(connection, rule.key(recipient))
            if window.retry_at(rule, at) is not None:
                return False  # a mail loop or a flood: the agents still see every message
            window.use(rule, at)
        text = self._templates.render(
            "receipt",
            locale=locale,
            ticket=ticket.id,
            due_at=ticket.due_at,
            reopened=reopened,
            response_hours=self._policy.response_hours,
        )
        payload: ReceiptPayload = {
            "text": text,
            "ticket": ticket.id,
            "subject": ticket.subject,
            "in_reply_to": external_id,
            "automatic": True,
            "locale": locale,
        }
        if route is Route.EMAIL:
            add_mail_headers(
                payload,
                await thread_headers(
                    connection,
                    ticket_id=ticket.id,
                    subject=ticket.subject or self._templates.render("mail/subject", locale=locale),
                    in_reply_to=external_id,
                    kind="receipt",
                    at=at,
                    domain=self._mail_domain,
                    unwritten=unwritten,
                ),
            )
        unwritten.outbox_rows.append(
            outbox_row(route, recipient, OutboxKind.RECEIPT, payload, at, ticket_id=ticket.id)
        )
        return True


async def _follow_merges(connection: AsyncConnection, found: Any) -> Any:
    """A merged ticket's messages go to the ticket it was merged into (locked in turn)."""
    for _ in range(MERGE_HOPS):
        into = (await connection.execute(_MERGED_INTO, {"ticket_id": found.id})).scalar()
        if into is None:
            return found
        survivor = (await connection.execute(_TICKET_BY_ID_LOCKED, {"ticket_id": into})).first()
        if survivor is None:
            return found
        found = survivor
    return found


async def answering(session: AsyncSession, ticket_id: int) -> Message | None:
    """The customer message an answer on the ticket goes back to: the latest that counts for the
    SLA (not an auto-reply or bounce: those come from addresses nobody reads)."""
    found = await session.scalars(
        select(Message)
        .where(
            Message.ticket_id == ticket_id,
            Message.direction == Direction.IN.value,
            Message.counts_for_sla.is_(True),
        )
        .order_by(Message.id.desc())
        .limit(1)
    )
    return found.first()


def _link_key(
    unwritten: Unwritten, key_id: int | None, incoming: IncomingMessage, intake: Intake
) -> None:
    """Tie the message's dedup key to it, so a redelivery finds it (in this batch, too)."""
    if key_id is None or incoming.dedup_key is None:
        return
    unwritten.key_links.append({"key_id": key_id, "message_id": intake.message_id})
    key = (incoming.dedup_key[0], bounded_id(incoming.dedup_key[1]))
    unwritten.keyed[key] = replace(intake, duplicate=True)


_BOUNCED_KINDS = {"receipt": "acknowledgement", "reply": "reply", "notice": "notice"}


def _bounced_kind(bounced: Sequence[str]) -> str:
    """What kind of our mail bounced, from the Message-ID we gave it (`tickets.mail_threads`)."""
    for message_id in bounced:
        kind = message_id.lstrip("<").split("-", 1)[0]
        if kind in _BOUNCED_KINDS:
            return _BOUNCED_KINDS[kind]
    return "mail"


def _sender(incoming: IncomingMessage) -> str:
    """Who wrote this message, as agents read it: `Name <address>`, or the address alone."""
    address = incoming.sender_address or ""
    name = incoming.sender_name.strip()
    if name and address and name.lower() != address.lower():
        return f"{name} <{address}>"
    return address or name


def _sender_columns(incoming: IncomingMessage) -> dict[str, object]:
    return {
        "sender_address": (incoming.sender_address or None) and incoming.sender_address[:320],
        "sender_name": incoming.sender_name[:200] or None,
        "raw_source": incoming.raw_source,
    }


def _reply_address(incoming: IncomingMessage) -> str:
    """Where answers to this message go: its Reply-To, else the sender."""
    ref = incoming.customer
    default = str(ref.telegram_id) if ref.telegram_id is not None else (ref.email or "").lower()
    return (incoming.reply_address or default)[:320]


@cache
def _new_key(dialect: str) -> Insert:
    """Insert-if-absent of a dedup key, built once per dialect."""
    return insert_ignoring(dialect, inbound_keys).returning(inbound_keys.c.id)
