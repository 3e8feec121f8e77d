"""SLA policy: urgency bands and reopening, tested directly (pure code)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tickets.model import Plan, Urgency
from tickets.policy import SlaPolicy, queue_key
from tickets.sla import BusinessCalendar

POLICY = SlaPolicy(calendar=BusinessCalendar())
TUE_9 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
FRI_22 = datetime(2026, 11, 27, 22, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("due", "now", "urgency"),
    [
        (None, TUE_9, Urgency.NOT_WAITING),
        (TUE_9, TUE_9, Urgency.BREACHED),
        (TUE_9 - timedelta(seconds=1), TUE_9, Urgency.BREACHED),
        (TUE_9 + timedelta(hours=4), TUE_9, Urgency.AT_RISK),
        (TUE_9 + timedelta(hours=4, seconds=1), TUE_9, Urgency.ON_TRACK),
        # Friday 22:00: the weekend does not count, so Monday 02:00 is 4 business hours away.
        (datetime(2026, 11, 30, 2, 0, tzinfo=UTC), FRI_22, Urgency.AT_RISK),
        (datetime(2026, 11, 30, 2, 1, tzinfo=UTC), FRI_22, Urgency.ON_TRACK),
    ],
)
def test_urgency(due: datetime | None, now: datetime, urgency: Urgency) -> None:
    assert POLICY.urgency(due, now) is urgency


def test_hours_left_is_negative_once_breached() -> None:
    assert POLICY.hours_left(TUE_9 - timedelta(hours=2), TUE_9) == pytest.approx(-2)
    assert POLICY.hours_left(None, TUE_9) is None


def test_due_at_uses_the_configured_calendar_and_hours() -> None:
    office = SlaPolicy(
        calendar=BusinessCalendar.from_strings(hours="09:00-17:00"), response_hours=8
    )
    assert office.due_at(TUE_9) == datetime(2026, 11, 24, 17, 0, tzinfo=UTC)  # end of the day
    assert office.due_at(TUE_9 + timedelta(minutes=1)) == datetime(2026, 11, 25, 9, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("closed_ago", "reopens"),
    [(None, False), (timedelta(days=6, hours=23), True), (timedelta(days=7), False)],
)
def test_reopen_window(closed_ago: timedelta | None, reopens: bool) -> None:
    closed_at = TUE_9 - closed_ago if closed_ago is not None else None
    assert POLICY.reopens(closed_at, TUE_9) is reopens


def test_queue_key_bands() -> None:
    risky_basic = queue_key(POLICY, Plan.BASIC, TUE_9 + timedelta(hours=3), 3, TUE_9)
    calm_pro = queue_key(POLICY, Plan.PRO, TUE_9 + timedelta(hours=20), 2, TUE_9)
    calm_basic = queue_key(POLICY, Plan.BASIC, TUE_9 + timedelta(hours=5), 1, TUE_9)
    assert sorted([calm_basic, calm_pro, risky_basic]) == [risky_basic, calm_pro, calm_basic]
