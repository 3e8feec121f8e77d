"""The business-time arithmetic behind the reports, against a minute-by-minute brute force.

Random calendars (weekday sets, daily windows, holidays, fixed and DST time zones: the
`cases` strategy of tests/unit/test_sla.py) and random tickets: each wait starts on a whole minute
and is answered inside the period, after it, or never. The reference counts business minutes by
reading the local clock minute by minute (`brute_flags`); the report must agree on every
response's business hours (as the desk stores them), on the shares within 6 h and 24 h, and on
which waits were past due at the period's end and how long they had waited by then.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import accumulate

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.unit.test_sla import Spec, brute_flags, cases, later, minute_case, minutes
from tickets.policy import SlaPolicy
from tickets.reports.figures import Month, Period, ResponseRow, WaitRow, build_report

SPAN_MINUTES = 8 * 1440  # tickets live in the 8 days after the drawn start
TARGET_MINUTES, SLA_MINUTES = 6 * 60, 24 * 60

# (wait starts after, answered after the start or None) in minutes from the drawn moment.
# Short, middling and long: hypothesis favours small numbers, and breaches need long waits.
durations = st.one_of(
    st.integers(0, 12 * 60), st.integers(12 * 60, 4 * 1440), st.integers(4 * 1440, SPAN_MINUTES)
)
tickets = st.lists(
    st.tuples(st.integers(0, SPAN_MINUTES - 1), st.one_of(st.none(), durations)),
    min_size=1,
    max_size=12,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(min_days=3, min_window=360), tickets, st.one_of(st.just(SPAN_MINUTES), durations))
def test_report_agrees_with_the_brute_force(
    case: tuple[Spec, datetime], drawn: list[tuple[int, int | None]], end_after: int
) -> None:
    spec, start = case
    policy = SlaPolicy(calendar=spec.calendar())
    origin = minute_case(spec, start)
    flags = brute_flags(spec, minutes(origin), minutes(origin) + SPAN_MINUTES + 1)
    before = [0, *accumulate(flags)]  # business minutes in [origin, origin + i)

    def moment(offset: int) -> datetime:
        return later(origin, timedelta(minutes=offset))

    end_after = max(end_after, 1)
    period_end = moment(end_after)
    period = Period(Month.of(origin, policy.calendar.tz), origin, period_end, complete=True)
    responses: list[ResponseRow] = []
    waits: list[WaitRow] = []
    expected_answered: list[int] = []
    expected_overdue: dict[int, int] = {}
    for number, (since, answer) in enumerate(drawn, start=1):
        answered = None if answer is None else min(since + answer, SPAN_MINUTES)
        if answered is not None:
            hours = policy.calendar.hours_between(moment(since), moment(answered))
            assert hours == (before[answered] - before[since]) / 60  # what the desk stores
            row = ResponseRow(number, "pro", "email", "Sam", moment(since), moment(answered), hours)
            responses.append(row)
            if answered < end_after:
                expected_answered.append(before[answered] - before[since])
        if answered is None or answered >= end_after:
            waits.append(
                WaitRow(
                    number,
                    "basic",
                    "telegram",
                    moment(since),
                    None if answered is None else moment(answered),
                )
            )
            waited = before[end_after] - before[since] if since < end_after else 0
            if since < end_after and waited >= SLA_MINUTES:
                expected_overdue[number] = waited

    report = build_report(period, policy, responses, waits)
    late = any(m > SLA_MINUTES for m in expected_answered)
    event(f"overdue: {bool(expected_overdue)}, late: {late}")  # --hypothesis-show-statistics

    assert report.overall.responses == len(expected_answered)
    assert report.overall.within_target == sum(m <= TARGET_MINUTES for m in expected_answered)
    assert report.overall.within_sla == sum(m <= SLA_MINUTES for m in expected_answered)
    assert sorted(r.business_hours for r in report.late) == sorted(
        m / 60 for m in expected_answered if m > SLA_MINUTES
    )
    assert {w.ticket: w.hours_waited for w in report.overdue} == {
        number: waited / 60 for number, waited in expected_overdue.items()
    }
    for wait in report.overdue:
        assert wait.due_at <= period_end  # the due time had passed ...
        due_minute = minutes(wait.due_at) - minutes(origin)
        assert before[due_minute] - before[minutes(wait.waiting_since) - minutes(origin)] == (
            SLA_MINUTES
        )  # ... and it is exactly 24 business hours after the wait began
