"""Delivery outcomes: what the desk does when the outbox delivered a row, or gave up on it.

Run inside the outbox worker's transaction that records the outcome, in SQLAlchemy Core, so a
batch of outcomes costs a few statements each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tickets.model import DeliveryState, Direction, OutboxKind, Route
from tickets.notices import agents_notice
from tickets.outbox import Delivery
from tickets.policy import SlaPolicy
from tickets.ports import Renderer
from tickets.tables import OutboxRow, Response, audit_log, messages, outbox, tickets

responses = cast(Table, Response.__table__)
_REPLY = OutboxKind.REPLY.value

_REPLIES = select(
    messages.c.id, messages.c.ticket_id, messages.c.author_agent_id, messages.c.channel
).where(messages.c.id.in_(bindparam("ids", expanding=True)))
_DELIVERED = (
    update(messages)
    .where(messages.c.id == bindparam("message_id"))
    .values(
        delivery=DeliveryState.DELIVERED.value,
        delivered_at=bindparam("at"),
        external_id=func.coalesce(messages.c.external_id, bindparam("external_id")),
    )
)
_FAILED = (
    update(messages)
    .where(messages.c.id == bindparam("message_id"))
    .values(delivery=DeliveryState.FAILED.value)
)
_TICKET_COLUMNS = (
    tickets.c.id,
    tickets.c.channel,
    tickets.c.subject,
    tickets.c.plan,
    tickets.c.waiting_since,
    tickets.c.waiting_message_id,
    tickets.c.due_at,
)
_TICKET = select(*_TICKET_COLUMNS).where(tickets.c.id == bindparam("ticket_id"))
_TICKETS = (
    select(*_TICKET_COLUMNS)
    .where(tickets.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(tickets.c.id)  # every writer locks tickets in id order
    .with_for_update()
)
_LATER_MESSAGES = (
    select(messages.c.id, messages.c.ticket_id, messages.c.created_at)
    .where(
        messages.c.ticket_id.in_(bindparam("ids", expanding=True)),
        messages.c.direction == Direction.IN.value,
        messages.c.counts_for_sla.is_(True),
        messages.c.id > bindparam("after"),
    )
    .order_by(messages.c.id)
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
_PAYLOAD = select(outbox.c.payload).where(outbox.c.id == bindparam("row_id"))
_NEW_AUDIT = insert(audit_log)


class DeliveryOutcomes:
    """Stops the SLA clock on a delivered reply; reports a row that failed for good."""

    def __init__(self, policy: SlaPolicy, templates: Renderer) -> None:
        self._policy = policy
        self._templates = templates

    async def delivered(self, connection: AsyncConnection, deliveries: Sequence[Delivery]) -> None:
        """Replies reached their customers: this, and only this, stops the SLA clock.

        A batch of deliveries costs a few statements in all, not a few each.
        """
        wanted = [d for d in deliveries if d.row.message_id is not None and d.row.kind == _REPLY]
        if not wanted:
            return
        ids = [d.row.message_id for d in wanted]
        found = {row.id: _Reply(*row) for row in await connection.execute(_REPLIES, {"ids": ids})}
        replies = [(d, found[d.row.message_id]) for d in wanted if d.row.message_id in found]
        if not replies:
            return
        await connection.execute(
            _DELIVERED,
            [
                {"message_id": m.id, "at": d.at, "external_id": d.external_id or None}
                for d, m in replies
            ],
        )
        waits = {
            row.id: _Wait(*row)
            for row in await connection.execute(
                _TICKETS, {"ids": sorted({m.ticket_id for _, m in replies})}
            )
        }
        later = await self._later(connection, replies, waits)
        answers: list[dict[str, Any]] = []
        changed: dict[int, _Wait] = {}
        notices: list[dict[str, Any]] = []
        for delivery, message in replies:
            wait = waits.get(message.ticket_id)
            if wait is None:
                continue
            if wait.answered_by(message.id):
                answers.append(self._response(wait, delivery, message))
                # Customer messages stored after the answer was written start the next wait.
                # Both lock the ticket row, so message ids give the order they reached it in.
                following = next((m for m in later.get(wait.id, ()) if m.id > message.id), None)
                wait.waiting_since = following.created_at if following is not None else None
                wait.waiting_message_id = following.id if following is not None else None
                wait.due_at = (
                    self._policy.due_at(following.created_at) if following is not None else None
                )
                changed[wait.id] = wait
            notices.append(
                agents_notice(
                    self._templates,
                    "delivered",
                    ticket=_TicketFacts(
                        wait.id, wait.plan, wait.channel, wait.subject, wait.due_at
                    ),
                    at=delivery.at,
                    message_id=message.id,
                    address=delivery.row.recipient,
                    route=delivery.row.route,
                )
            )
        if answers:
            await connection.execute(_NEW_RESPONSE, answers)
        if changed:
            await connection.execute(
                _NEXT_WAIT,
                [
                    {
                        "ticket_id": wait.id,
                        "waiting_since": wait.waiting_since,
                        "waiting_message_id": wait.waiting_message_id,
                        "due_at": wait.due_at,
                    }
                    for wait in changed.values()
                ],
            )
        if notices:
            await connection.execute(_NEW_OUTBOX_ROW, notices)

    def _response(self, wait: _Wait, delivery: Delivery, message: _Reply) -> dict[str, Any]:
        """The measured wait an answer ends (a row of `responses`)."""
        assert wait.waiting_since is not None
        return {
            "ticket_id": wait.id,
            "message_id": message.id,
            "agent_id": message.author_agent_id,
            "plan": wait.plan,
            "channel": message.channel or wait.channel,
            "waiting_since": wait.waiting_since,
            "answered_at": delivery.at,
            "business_hours": self._policy.calendar.hours_between(wait.waiting_since, delivery.at),
        }

    async def _later(
        self,
        connection: AsyncConnection,
        replies: Sequence[tuple[Delivery, _Reply]],
        waits: dict[int, _Wait],
    ) -> dict[int, list[_Later]]:
        """Counted customer messages written after the batch's first answer, by ticket."""
        answering = [
            (message.ticket_id, message.id)
            for _, message in replies
            if (wait := waits.get(message.ticket_id)) is not None
            and wait.waiting_message_id is not None
        ]
        if not answering:
            return {}
        rows = await connection.execute(
            _LATER_MESSAGES,
            {
                "ids": sorted({ticket for ticket, _ in answering}),
                "after": min(message for _, message in answering),
            },
        )
        by_ticket: dict[int, list[_Later]] = {}
        for row in rows:
            by_ticket.setdefault(row.ticket_id, []).append(_Later(*row))
        return by_ticket

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
        if row.route == Route.BILLING.value:
            # A write back to the billing system: the agents must put it right by hand.
            write = (await connection.execute(_PAYLOAD, {"row_id": row.id})).scalar() or {}
            notice = agents_notice(
                self._templates,
                "billing_failed",
                at=at,
                ticket_id=row.ticket_id,
                kind=row.kind,
                account=row.recipient,
                write=write,
                error=error[:500],
            )
            await connection.execute(_NEW_OUTBOX_ROW, notice)
            return
        if row.route == Route.AGENTS.value or row.ticket_id is None:
            return  # the agents' group itself is unreachable; the log and audit entry remain
        ticket = (await connection.execute(_TICKET, {"ticket_id": row.ticket_id})).first()
        if ticket is not None:
            notice = agents_notice(
                self._templates,
                "delivery_failed",
                ticket=_TicketFacts(
                    ticket.id, ticket.plan, ticket.channel, ticket.subject, ticket.due_at
                ),
                at=at,
                kind=row.kind,
                address=row.recipient,
                route=row.route,
                error=error[:500],
            )
            await connection.execute(_NEW_OUTBOX_ROW, notice)


@dataclass(frozen=True)
class _Reply:
    """The stored reply a delivered row carried."""

    id: int
    ticket_id: int
    author_agent_id: int | None
    channel: str | None


@dataclass(frozen=True)
class _Later:
    """A counted customer message written after a reply."""

    id: int
    ticket_id: int
    created_at: datetime


@dataclass
class _Wait:
    """A ticket's wait as the batch of deliveries leaves it."""

    id: int
    channel: str
    subject: str
    plan: str
    waiting_since: datetime | None
    waiting_message_id: int | None
    due_at: datetime | None

    def answered_by(self, message_id: int) -> bool:
        """Whether the wait began with a message stored before this answer was written."""
        started_by = self.waiting_message_id
        return self.waiting_since is not None and started_by is not None and started_by < message_id


@dataclass(frozen=True)
class _TicketFacts:
    id: int
    plan: str
    channel: str
    subject: str
    due_at: datetime | None
