"""Notices to the agents' group: every writer of one builds its row here, the same way.

`notify_agents` adds it to an ORM session; `agents_notice` gives the row's values for the
Core writes of a batch (`tickets.deferred_writes.Unwritten`) and of delivery outcomes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol, cast

from sqlalchemy.ext.asyncio import AsyncSession

from tickets.model import OutboxKind, Route
from tickets.payloads import AgentNoticePayload, outbox_row
from tickets.ports import Renderer
from tickets.tables import OutboxRow

# The recipient of every row of `Route.AGENTS`: the one agents' group.
AGENTS = "agents"


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
) -> AgentNoticePayload:
    """The outbox payload of a notice: its facts and the text of `agents/<event>.txt`.

    Given a `ticket`, its plan, channel, subject and due time are in the template's context
    too; `ticket_id` alone just places the notice in that ticket's topic or under its card.
    """
    context: dict[str, Any] = {"event": event, "ticket": ticket.id if ticket else ticket_id}
    if ticket is not None:
        context.update(
            plan=ticket.plan,
            channel=ticket.channel,
            subject=ticket.subject,
            due_at=ticket.due_at.isoformat() if ticket.due_at else None,
        )
    context.update(facts)
    text = renderer.render(f"agents/{event}", **context)
    # The facts are the template's own context: open keys beside the typed ones.
    return cast(AgentNoticePayload, {**context, "text": text})


def agents_notice(
    renderer: Renderer,
    event: str,
    *,
    at: datetime,
    ticket: TicketFacts | None = None,
    ticket_id: int | None = None,
    **facts: Any,
) -> dict[str, Any]:
    """The outbox row of a notice to the agents' group, for a Core insert (see `agents_payload`)."""
    payload = agents_payload(renderer, event, ticket, ticket_id, **facts)
    return outbox_row(
        Route.AGENTS,
        AGENTS,
        OutboxKind.AGENT_NOTICE,
        payload,
        at,
        ticket_id=payload.get("ticket"),
    )


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
    row = agents_notice(renderer, event, at=at, ticket=ticket, ticket_id=ticket_id, **facts)
    session.add(OutboxRow(**row))
