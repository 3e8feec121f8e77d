"""The desk's vital signs, read from the database when an operator's monitor asks (`/metrics`).

Each reading is one small aggregate over an index the queue or the outbox worker already uses:
waiting tickets by due time (`ix_tickets_waiting_plan_due`), pending outbox rows
(`ix_outbox_pending_recipient`). Nothing here is cached; a scrape every 15 s costs a few
milliseconds. The database is the truth shared by every replica, so each replica reports the
same figures for these; the counters of things that happen in one process are the shell's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import case, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tickets.model import OutboxStatus, Urgency
from tickets.policy import SlaPolicy
from tickets.tables import OutboxRow, SlaAlert, Ticket


@dataclass(frozen=True)
class RouteBacklog:
    """Outbox rows of one route not delivered yet, and the age of the oldest."""

    depth: int
    oldest_seconds: float


@dataclass(frozen=True)
class Vitals:
    """What the queue and the outbox look like right now."""

    # (plan, urgency) → tickets waiting on us; urgency is breached, at_risk or on_track.
    waiting: dict[tuple[str, str], int] = field(default_factory=dict)
    # Business hours the longest-waiting customer has waited (0 when nobody waits).
    oldest_wait_hours: float = 0.0
    # Breach alerts the SLA watch ever gave (one per wait that went past due).
    breaches_total: int = 0
    backlog: dict[str, RouteBacklog] = field(default_factory=dict)


async def database_answers(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Raise unless the database answers with its schema (readiness).

    It reads the schema's revision rather than `SELECT 1`: SQLite answers that without its file.
    """
    async with sessions() as session:
        await session.execute(text("SELECT version_num FROM alembic_version"))


async def read_vitals(
    sessions: async_sessionmaker[AsyncSession], policy: SlaPolicy, now: datetime
) -> Vitals:
    """The queue's and the outbox's figures as of `now`."""
    risk_cutoff = policy.risk_cutoff(now)
    waiting_only = Ticket.due_at.is_not(None)
    async with sessions() as session:
        # One pass over the (plan, due_at) index: no grouping by an expression, no sort.
        per_plan = await session.execute(
            select(
                Ticket.plan,
                func.count(),
                func.sum(case((Ticket.due_at <= now, 1), else_=0)),
                func.sum(case((Ticket.due_at <= risk_cutoff, 1), else_=0)),
            )
            .where(waiting_only)
            .group_by(Ticket.plan)
        )
        waiting: dict[tuple[str, str], int] = {}
        for plan, total, breached, urgent in per_plan:
            waiting[plan, Urgency.BREACHED.value] = int(breached or 0)
            waiting[plan, Urgency.AT_RISK.value] = int(urgent or 0) - int(breached or 0)
            waiting[plan, Urgency.ON_TRACK.value] = int(total) - int(urgent or 0)
        # The longest wait is the earliest due one's (due times follow waits in order), read
        # from the due-time index instead of a scan for the smallest waiting_since.
        oldest = await session.scalar(
            select(Ticket.waiting_since)
            .where(waiting_only)
            .order_by(Ticket.due_at, Ticket.id)
            .limit(1)
        )
        breaches = await session.scalar(
            select(func.count()).select_from(SlaAlert).where(SlaAlert.kind == "breach")
        )
        backlog_rows = await session.execute(
            select(OutboxRow.route, func.count(), func.min(OutboxRow.created_at))
            .where(OutboxRow.status == OutboxStatus.PENDING.value)
            .group_by(OutboxRow.route)
        )
        backlog = {
            route: RouteBacklog(int(count), _age(first, now))
            for route, count, first in backlog_rows
        }
    return Vitals(
        waiting=waiting,
        oldest_wait_hours=(
            max(policy.calendar.hours_between(oldest, now), 0.0) if oldest is not None else 0.0
        ),
        breaches_total=int(breaches or 0),
        backlog=backlog,
    )


def _age(first: datetime | None, now: datetime) -> float:
    return max((now - first).total_seconds(), 0.0) if first is not None else 0.0
