"""SLA policy: when a wait is due, how urgent a ticket is, and the queue's order. Pure code."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from tickets.model import Plan, Urgency
from tickets.sla import BusinessCalendar


@dataclass(frozen=True)
class SlaPolicy:
    """The support promise in numbers: 24 business hours to answer, 6 as the internal target."""

    calendar: BusinessCalendar
    response_hours: float = 24.0
    target_hours: float = 6.0
    risk_hours: float = 4.0
    reopen_days: int = 7

    def due_at(self, waiting_since: datetime) -> datetime:
        """When an answer to a wait that started at `waiting_since` is due."""
        return self.calendar.add_hours(waiting_since, self.response_hours)

    def risk_cutoff(self, now: datetime) -> datetime:
        """Tickets due at or before this moment are at risk (or breached) now.

        Business time is monotone, so "at most `risk_hours` business hours left" is the same as
        "due no later than `risk_hours` business hours from now"; one moment, computed once per
        query, lets the database answer from the due-time index.
        """
        return self.calendar.add_hours(now, self.risk_hours)

    def urgency(self, due_at: datetime | None, now: datetime) -> Urgency:
        if due_at is None:
            return Urgency.NOT_WAITING
        if due_at <= now:
            return Urgency.BREACHED
        if due_at <= self.risk_cutoff(now):
            return Urgency.AT_RISK
        return Urgency.ON_TRACK

    def hours_left(self, due_at: datetime | None, now: datetime) -> float | None:
        """Business hours until the due time; negative once breached."""
        if due_at is None:
            return None
        return self.calendar.hours_between(now, due_at)

    def reopens(self, closed_at: datetime | None, now: datetime) -> bool:
        """Whether a customer message on a ticket closed at `closed_at` reopens it."""
        return closed_at is not None and now - closed_at < timedelta(days=self.reopen_days)


def queue_key(
    policy: SlaPolicy, plan: Plan, due_at: datetime, number: int, now: datetime
) -> tuple[int, datetime, int]:
    """The queue's order as a sort key: urgent first, then Pro, then the rest, each by due time.

    The database applies the same order from its indexes (tickets/queue.py); this is the
    reference the tests hold it to.
    """
    if due_at <= policy.risk_cutoff(now):
        band = 0
    elif plan is Plan.PRO:
        band = 1
    else:
        band = 2
    return band, due_at, number
