"""The SLA watch's pure rules: when each warning is due, and only the most severe of several."""

from __future__ import annotations

import pytest

from tickets.policy import SlaPolicy
from tickets.sla import BusinessCalendar
from tickets.watch import Alert, WatchRules, lead_hours, to_send


def test_each_alert_is_due_a_fixed_number_of_business_hours_before_the_due_time() -> None:
    policy = SlaPolicy(calendar=BusinessCalendar())
    leads = lead_hours(policy, WatchRules(escalate_after_hours=2))
    assert leads == {Alert.TARGET: 18, Alert.RISK: 4, Alert.BREACH: 0, Alert.ESCALATION: 22}


@pytest.mark.parametrize(
    ("earned", "sent"),
    [
        ([], None),
        ([Alert.TARGET], Alert.TARGET),
        ([Alert.TARGET, Alert.RISK], Alert.RISK),
        ([Alert.RISK, Alert.TARGET, Alert.BREACH], Alert.BREACH),
        ([Alert.ESCALATION], None),
    ],
)
def test_of_several_warnings_earned_at_once_only_the_most_severe_is_sent(
    earned: list[Alert], sent: Alert | None
) -> None:
    assert to_send(earned) is sent
