"""Delivery outcomes: what the desk does when the outbox delivered a row, or gave up on it.

Run inside the outbox worker's transaction that records the outcome, in SQLAlchemy Core, so a
batch of outcomes costs a few statements each.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tickets.batch_writes import audit_log, messages, outbox, tickets
from tickets.model import DeliveryState, Direction, OutboxKind, Route
from tickets.policy import SlaPolicy
from tickets.receiving import Receiver
from tickets.tables import OutboxRow, Response

responses = cast(Table, Response.__table__)

_DELIVERED = (
    update(messages)
    .where(messages.c.id == bindparam("message_id"))
    .values(
        delivery=DeliveryState.DELIVERED.value,
        delivered_at=bindparam("at"),
        external_id=func.coalesce(messages.c.external_id, bindparam("external_id")),
    )
    .returning(messages.c.id, messages.c.ticket_id, messages.c.author_agent_id, messages.c.channel)
)
_FAILED = (
    update(messages)
    .where(messages.c.id == bindparam("message_id"))
    .values(delivery=DeliveryState.FAILED.value)
)
_TICKET = select(
    tickets.c.id,
    tickets.c.channel,
    tickets.c.subject,
    tickets.c.plan,
    tickets.c.waiting_since,
    tickets.c.waiting_message_id,
    tickets.c.due_at,
).where(tickets.c.id == bindparam("ticket_id"))
_LATER_MESSAGE = (
    select(messages.c.id, messages.c.created_at)
    .where(
        messages.c.ticket_id == bindparam("ticket_id"),
        messages.c.direction == Direction.IN.value,
        messages.c.counts_for_sla.is_(True),
        messages.c.id > bindparam("message_id"),
    )
    .order_by(messages.c.id)
    .limit(1)
)
_NEXT_WAIT = (
    update(tickets)
    .where(tickets.c.id == bindparam("ticket_id"))
    .values(
        waiting_since=bindparam("waiting_since"),
        waiting_message_id=bindparam("waiting_message_id"),
        due_at=bindparam("due_at"),
    )
)
_NEW_RESPONSE = insert(responses)
_NEW_OUTBOX_ROW = insert(outbox)
_NEW_AUDIT = insert(audit_log)


class DeliveryOutcomes:
    """Stops the SLA clock on a delivered reply; reports a row that failed for good."""

    def __init__(self, policy: SlaPolicy, receiver: Receiver) -> None:
        self._policy = policy
        self._receiver = receiver

    async def delivered(
        self, connection: AsyncConnection, row: OutboxRow, at: datetime, external_id: str | None
    ) -> None:
        """A reply reached the customer: this, and only this, stops the SLA clock."""
        if row.message_id is None or row.kind != OutboxKind.REPLY.value:
            return
        message = (
            await connection.execute(
                _DELIVERED,
                {"message_id": row.message_id, "at": at, "external_id": external_id or None},
            )
        ).first()
        if message is None:
            return
        ticket = (
            await connection.execute(_TICKET.with_for_update(), {"ticket_id": message.ticket_id})
        ).first()
        if ticket is None:
            return
        due_at = ticket.due_at
        started_by = ticket.waiting_message_id
        if ticket.waiting_since is not None and started_by is not None and started_by < message.id:
            # The wait began with a message stored before this answer was written: it is answered.
            await connection.execute(
                _NEW_RESPONSE,
                {
                    "ticket_id": ticket.id,
                    "message_id": message.id,
                    "agent_id": message.author_agent_id,
                    "plan": ticket.plan,
                    "channel": message.channel or ticket.channel,
                    "waiting_since": ticket.waiting_since,
                    "answered_at": at,
                    "business_hours": self._policy.calendar.hours_between(ticket.waiting_since, at),
                },
            )
            # Customer messages stored after the answer was written start the next wait. Both
            # lock the ticket row, so message ids give the order they reached the ticket in.
            later = (
                await connection.execute(
                    _LATER_MESSAGE, {"ticket_id": ticket.id, "message_id": message.id}
                )
            ).first()
            due_at = self._policy.due_at(later.created_at) if later is not None else None
            await connection.execute(
                _NEXT_WAIT,
                {
                    "ticket_id": ticket.id,
                    "waiting_since": later.created_at if later is not None else None,
                    "waiting_message_id": later.id if later is not None else None,
                    "due_at": due_at,
                },
            )
        notice = self._receiver.agents_notice(
            "delivered",
            _TicketFacts(ticket.id, ticket.plan, ticket.channel, ticket.subject, due_at),
            at=at,
            message_id=message.id,
            address=row.recipient,
            route=row.route,
        )
        await connection.execute(_NEW_OUTBOX_ROW, notice)

    async def failed(
        self, connection: AsyncConnection, row: OutboxRow, at: datetime, error: str
    ) -> None:
        """A row could not be delivered for good: the agents are told, the ticket shows it."""
        if row.message_id is not None:
            await connection.execute(_FAILED, {"message_id": row.message_id})
        await connection.execute(
            _NEW_AUDIT,
            {
                "at": at,
                "actor": "system",
                "agent_id": None,
                "action": "delivery_failed",
                "ticket_id": row.ticket_id,
                "details": {
                    "outbox_id": row.id,
                    "kind": row.kind,
                    "route": row.route,
                    "error": error[:500],
                },
            },
        )
        if row.route == Route.AGENTS.value or row.ticket_id is None:
            return  # the agents' group itself is unreachable; the log and audit entry remain
        ticket = (await connection.execute(_TICKET, {"ticket_id": row.ticket_id})).first()
        if ticket is not None:
            notice = self._receiver.agents_notice(
                "delivery_failed",
                _TicketFacts(ticket.id, ticket.plan, ticket.channel, ticket.subject, ticket.due_at),
                at=at,
                kind=row.kind,
                address=row.recipient,
                route=row.route,
                error=error[:500],
            )
            await connection.execute(_NEW_OUTBOX_ROW, notice)


@dataclass(frozen=True)
class _TicketFacts:
    id: int
    plan: str
    channel: str
    subject: str
    due_at: datetime | None
