"""Notices to the agents' group, written to the outbox in the caller's transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from tickets.model import OutboxKind, Route
from tickets.outbox import enqueue
from tickets.ports import Renderer
from tickets.tables import Ticket


def notify_agents(
    session: AsyncSession,
    renderer: Renderer,
    event: str,
    *,
    at: datetime,
    ticket: Ticket | None = None,
    ticket_id: int | None = None,
    **facts: Any,
) -> None:
    """Tell the agents (in the ticket's topic or card, if any) what `agents/<event>.txt` says.

    Given a loaded `ticket`, its plan, channel, subject and due time are in the template's
    context too; `ticket_id` alone just places the notice.
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
    enqueue(
        session,
        route=Route.AGENTS,
        recipient="agents",
        kind=OutboxKind.AGENT_NOTICE,
        payload=payload,
        at=at,
        ticket_id=payload["ticket"],
    )
