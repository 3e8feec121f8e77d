"""Notices to the agents' group, written to the outbox in the caller's transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from tickets.model import OutboxKind, Route
from tickets.outbox import enqueue
from tickets.ports import Renderer
from tickets.tables import Ticket


def notice_to_agents(
    session: AsyncSession,
    renderer: Renderer,
    event: str,
    ticket: Ticket,
    *,
    at: datetime,
    **facts: Any,
) -> None:
    """Tell the agents about a ticket: the text comes from `templates/agents/<event>.txt`."""
    payload: dict[str, Any] = {
        "event": event,
        "ticket": ticket.id,
        "plan": ticket.plan,
        "channel": ticket.channel,
        "subject": ticket.subject,
        "due_at": ticket.due_at.isoformat() if ticket.due_at else None,
        **facts,
    }
    payload["text"] = renderer.render(f"agents/{event}", **payload)
    enqueue(
        session,
        route=Route.AGENTS,
        recipient="agents",
        kind=OutboxKind.AGENT_NOTICE,
        payload=payload,
        at=at,
        ticket_id=ticket.id,
    )
