"""Notices to the agents' group: the payload every writer of one builds the same way."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from tickets.model import OutboxKind, Route
from tickets.outbox import enqueue
from tickets.ports import Renderer


class TicketFacts(Protocol):
    """What an agents' notice shows of a ticket (a `Ticket` row, or the intake's own state)."""

    @property
    def id(self) -> int: ...
    @property
    def plan(self) -> str: ...
    @property
    def channel(self) -> str: ...
    @property
    def subject(self) -> str: ...
    @property
    def due_at(self) -> datetime | None: ...


def agents_payload(
    renderer: Renderer,
    event: str,
    ticket: TicketFacts | None = None,
    ticket_id: int | None = None,
    **facts: Any,
) -> dict[str, Any]:
    """The outbox payload of a notice: its facts and the text of `agents/<event>.txt`.

    Given a `ticket`, its plan, channel, subject and due time are in the template's context
    too; `ticket_id` alone just places the notice in that ticket's topic or under its card.
    """
    payload: dict[str, Any] = {"event": event, "ticket": ticket.id if ticket else ticket_id}
    if ticket is not None:
        payload.update(
            plan=ticket.plan,
            channel=ticket.channel,
            subject=ticket.subject,
            due_at=ticket.due_at.isoformat() if ticket.due_at else None,
        )
    payload.update(facts)
    payload["text"] = renderer.render(f"agents/{event}", **payload)
    return payload


def notify_agents(
    session: AsyncSession,
    renderer: Renderer,
    event: str,
    *,
    at: datetime,
    ticket: TicketFacts | None = None,
    ticket_id: int | None = None,
    **facts: Any,
) -> None:
    """Tell the agents, in the caller's transaction (see `agents_payload`)."""
    payload = agents_payload(renderer, event, ticket, ticket_id, **facts)
    enqueue(
        session,
        route=Route.AGENTS,
        recipient="agents",
        kind=OutboxKind.AGENT_NOTICE,
        payload=payload,
        at=at,
        ticket_id=payload["ticket"],
    )
