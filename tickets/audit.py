"""The audit log: who did what to which ticket, written in the same transaction as the change."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from tickets.tables import Agent, AuditEntry


def record(
    session: AsyncSession,
    *,
    at: datetime,
    action: str,
    agent: Agent | None = None,
    actor: str | None = None,
    ticket_id: int | None = None,
    **details: Any,
) -> None:
    """Add one audit entry; `actor` defaults to the agent ("agent:<telegram id>")."""
    session.add(
        AuditEntry(
            at=at,
            actor=actor or (f"agent:{agent.telegram_id}" if agent else "system"),
            agent_id=agent.id if agent else None,
            action=action,
            ticket_id=ticket_id,
            details=details,
        )
    )
