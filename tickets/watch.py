"""The SLA watch: warns agents as waits cross the internal target, the risk window and the due
time; escalates tickets nobody claimed; releases claims that went stale.

Each warning is given once per wait: `sla_alerts` holds one row per (ticket, wait, kind), and a
row is written in the same transaction as the notice it stands for. Several processes may sweep
at once; the unique key lets only one of them send.

Every threshold is a number of business hours *before the due time*: a wait has run `h`
business hours exactly when `24 - h` are left, so "ran 6 hours" is `due_at <= add_hours(now,
18)`, which the due-time index answers without looking at tickets that are nowhere near.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from sqlalchemy import and_, exists, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tickets import audit
from tickets.dialect_sql import insert_ignore
from tickets.model import Role, TicketStatus
from tickets.notices import notify_agents
from tickets.policy import SlaPolicy
from tickets.ports import Clock, Renderer, utcnow
from tickets.tables import Agent, Customer, SlaAlert, Ticket


class Alert(StrEnum):
    """What the watch tells agents about a wait, mildest first."""

    TARGET = "target"  # the internal target (6 business hours) has passed
    RISK = "risk"  # inside the risk window (4 business hours or less left)
    BREACH = "breach"  # past due: the external SLA is broken
    ESCALATION = "escalation"  # nobody claimed it in time: admins are called


WARNINGS = (Alert.TARGET, Alert.RISK, Alert.BREACH)  # by severity, mildest first
EVENTS = {
    Alert.TARGET: "sla_target",
    Alert.RISK: "sla_risk",
    Alert.BREACH: "sla_breach",
    Alert.ESCALATION: "escalated",
}


@dataclass(frozen=True)
class WatchRules:
    """When the watch acts, in business hours since a wait started (or a claim was made)."""

    escalate_after_hours: float = 2.0
    stale_claim_hours: float = 4.0
    interval_seconds: float = 60.0
    batch: int = 200


def lead_hours(policy: SlaPolicy, rules: WatchRules) -> dict[Alert, float]:
    """Business hours before the due time at which each alert becomes due."""
    response = policy.response_hours
    return {
        Alert.TARGET: max(response - policy.target_hours, 0.0),
        Alert.RISK: min(policy.risk_hours, response),
        Alert.BREACH: 0.0,
        Alert.ESCALATION: max(response - rules.escalate_after_hours, 0.0),
    }


def to_send(due: Sequence[Alert]) -> Alert | None:
    """Of the warnings a wait newly earned, the one worth a message: the most severe.

    After downtime a wait can earn several at once; agents get one message (a breach says
    more than "6 hours passed"), and the milder ones are recorded as given.
    """
    warnings = [alert for alert in WARNINGS if alert in due]
    return warnings[-1] if warnings else None


@dataclass
class SweepReport:
    """What one pass of the watch did."""

    warned: dict[int, Alert] = field(default_factory=dict)
    escalated: list[int] = field(default_factory=list)
    released: list[int] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.warned or self.escalated or self.released)


class SlaWatch:
    """Sweeps the waiting tickets (the service calls `sweep` every `interval_seconds`)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        policy: SlaPolicy,
        renderer: Renderer,
        *,
        rules: WatchRules | None = None,
        clock: Clock = utcnow,
        wakeup: Callable[[], None] = lambda: None,
    ) -> None:
        self._sessions = sessions
        self._policy = policy
        self._renderer = renderer
        self.rules = rules or WatchRules()
        self._clock = clock
        self._wakeup = wakeup

    async def sweep(self) -> SweepReport:
        """One pass: warnings, escalations and stale claims, each in its own transaction."""
        now = self._clock()
        report = SweepReport()
        async with self._sessions.begin() as session:
            await self._warn(session, now, report)
        async with self._sessions.begin() as session:
            await self._escalate(session, now, report)
        async with self._sessions.begin() as session:
            await self._release_stale(session, now, report)
        if report.changed:
            self._wakeup()
        return report

    # -- the three duties ------------------------------------------------------------------

    async def _warn(self, session: AsyncSession, now: datetime, report: SweepReport) -> None:
        leads = lead_hours(self._policy, self.rules)
        earned: dict[int, tuple[Ticket, list[Alert]]] = {}
        for alert in WARNINGS:
            for ticket in await self._without(session, alert, now, leads[alert]):
                earned.setdefault(ticket.id, (ticket, []))[1].append(alert)
        for ticket, alerts in earned.values():
            given = [a for a in alerts if await self._record(session, ticket, a, now)]
            worst = to_send(given)
            if worst is None:
                continue
            notify_agents(
                session,
                self._renderer,
                EVENTS[worst],
                ticket=ticket,
                at=now,
                waited_hours=self._waited(ticket, now),
                hours_left=self._policy.hours_left(ticket.due_at, now),
                claimed=ticket.assignee_id is not None,
                restate=True,
            )
            audit.record(
                session, at=now, action=f"sla_{worst.value}", actor="watch", ticket_id=ticket.id
            )
            report.warned[ticket.id] = worst

    async def _escalate(self, session: AsyncSession, now: datetime, report: SweepReport) -> None:
        lead = lead_hours(self._policy, self.rules)[Alert.ESCALATION]
        tickets = await self._without(session, Alert.ESCALATION, now, lead, unclaimed=True)
        if not tickets:
            return
        admins = (
            await session.execute(
                select(Agent.telegram_id, Agent.name)
                .where(Agent.role == Role.ADMIN.value, Agent.removed_at.is_(None))
                .order_by(Agent.id)
            )
        ).all()
        mentions = [[telegram_id, name or "admin"] for telegram_id, name in admins]
        for ticket in tickets:
            if not await self._record(session, ticket, Alert.ESCALATION, now):
                continue
            notify_agents(
                session,
                self._renderer,
                EVENTS[Alert.ESCALATION],
                ticket=ticket,
                at=now,
                waited_hours=self._waited(ticket, now),
                hours_left=self._policy.hours_left(ticket.due_at, now),
                mentions=mentions,
            )
            audit.record(
                session,
                at=now,
                action="escalate",
                actor="watch",
                ticket_id=ticket.id,
                admins=[m[0] for m in mentions],
            )
            report.escalated.append(ticket.id)

    async def _release_stale(
        self, session: AsyncSession, now: datetime, report: SweepReport
    ) -> None:
        stale = self.rules.stale_claim_hours
        cutoff = self._policy.calendar.add_hours(now, max(self._policy.response_hours - stale, 0))
        rows = (
            await session.execute(
                select(Ticket, Agent)
                .join(Agent, Agent.id == Ticket.assignee_id)
                .where(Ticket.due_at.is_not(None), Ticket.due_at <= cutoff)
                .order_by(Ticket.due_at, Ticket.id)
                .limit(self.rules.batch)
                .with_for_update(of=Ticket, skip_locked=True)
            )
        ).all()
        calendar = self._policy.calendar
        for ticket, claimer in rows:
            waiting = ticket.waiting_since
            assert waiting is not None  # due_at is set only while a wait runs
            since = max(ticket.claimed_at or waiting, waiting)
            silent = calendar.hours_between(since, now)
            if silent < stale:
                continue
            ticket.assignee_id = None
            ticket.claimed_at = None
            ticket.updated_at = now
            audit.record(
                session,
                at=now,
                action="release",
                actor="watch",
                ticket_id=ticket.id,
                previous_assignee=claimer.id,
                reason="stale claim",
                silent_hours=round(silent, 2),
            )
            notify_agents(
                session,
                self._renderer,
                "claim_released",
                ticket=ticket,
                at=now,
                claimer=claimer.name,
                silent_hours=silent,
                mentions=[[claimer.telegram_id, claimer.name or "agent"]],
                restate=True,
            )
            report.released.append(ticket.id)

    # -- helpers ---------------------------------------------------------------------------

    async def _without(
        self,
        session: AsyncSession,
        alert: Alert,
        now: datetime,
        lead: float,
        *,
        unclaimed: bool = False,
    ) -> list[Ticket]:
        """Waiting tickets that have earned `alert` for their current wait and not had it."""
        cutoff = self._policy.calendar.add_hours(now, lead)
        given = exists().where(
            and_(
                SlaAlert.ticket_id == Ticket.id,
                SlaAlert.wait_started_at == Ticket.waiting_since,
                SlaAlert.kind == alert.value,
            )
        )
        query = (
            select(Ticket)
            .join(Customer, Customer.id == Ticket.customer_id)
            .where(
                Ticket.due_at.is_not(None),
                Ticket.due_at <= cutoff,
                Ticket.waiting_since.is_not(None),
                Ticket.status == TicketStatus.OPEN.value,
                Customer.banned_at.is_(None),
                ~given,
            )
            .order_by(Ticket.due_at, Ticket.id)
            .limit(self.rules.batch)
        )
        if unclaimed:
            query = query.where(Ticket.assignee_id.is_(None))
        return list((await session.scalars(query)).all())

    async def _record(
        self, session: AsyncSession, ticket: Ticket, alert: Alert, now: datetime
    ) -> bool:
        assert ticket.waiting_since is not None
        inserted = await insert_ignore(
            session,
            SlaAlert,
            {
                "ticket_id": ticket.id,
                "wait_started_at": ticket.waiting_since,
                "kind": alert.value,
                "created_at": now,
            },
        )
        return inserted is not None

    def _waited(self, ticket: Ticket, now: datetime) -> float:
        assert ticket.waiting_since is not None
        return self._policy.calendar.hours_between(ticket.waiting_since, now)
