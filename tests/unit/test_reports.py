"""Monthly SLA reports against a small month computed by hand (tickets/reports.py is pure)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest

from bot.format import utf16_len
from bot.reports import telegram_text
from tickets.policy import SlaPolicy
from tickets.rendering import Templates
from tickets.reports.figures import (
    InvalidMonth,
    Month,
    MonthlyReport,
    ResponseRow,
    Summary,
    WaitRow,
    build_report,
    nearest_rank,
    period_of,
)
from tickets.reports.monthly import csv_text, report_text
from tickets.sla import BusinessCalendar

POLICY = SlaPolicy(calendar=BusinessCalendar())  # Mon-Fri, whole UTC days
NOVEMBER = Month(2026, 11)
AFTER = datetime(2026, 12, 10, 12, 0, tzinfo=UTC)  # November is over


def at(day: int, hour: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


# (ticket, plan, channel, agent, waiting since, answered at, business hours). November 2026:
# Mondays are the 2nd, 9th, 16th, 23rd and 30th. Each wait is on its own days.
FIXTURE = [
    (1, "pro", "telegram", "Sam", at(2, 3), at(2, 4), 1.0),
    (2, "pro", "email", "Sam", at(3, 10), at(3, 13), 3.0),
    (3, "pro", "telegram", "Ada", at(4, 20), at(5, 3), 7.0),
    (4, "pro", "email", "Ada", at(6), at(9, 6), 30.0),  # Fri 00:00 → Mon 06:00, over a weekend
    (5, "basic", "telegram", "Sam", at(10, 1), at(10, 3), 2.0),
    (6, "basic", "email", "Sam", at(11, 12), at(11, 17), 5.0),
    (7, "basic", "telegram", "Ada", at(12, 18), at(13), 6.0),  # ends at midnight
    (8, "basic", "email", "Ada", at(14, 10), at(16, 12), 12.0),  # from Saturday: counts Monday
    (9, "basic", "telegram", "Ada", at(17), at(18), 24.0),  # exactly the SLA: on time
    (10, "basic", "email", "Sam", at(19), at(20, 2), 26.0),
]
ROWS = [ResponseRow(*values) for values in FIXTURE]
OUTSIDE = [
    ResponseRow(90, "pro", "email", "Sam", at(29, 0, 10), at(30, 0, 10), 24.0),  # October
    ResponseRow(91, "pro", "email", "Sam", at(30), at(1, 1, 12), 25.0),  # answered 1 December
]
WAITS = [
    WaitRow(20, "basic", "email", at(25, 12), None),  # due Thu 26 12:00: overdue, 84 h waited
    WaitRow(21, "pro", "telegram", at(30, 6), None),  # 18 h waited: not yet due
    WaitRow(22, "pro", "email", at(26), at(2, 9, 12)),  # due Fri 27, answered 2 December
    WaitRow(23, "basic", "telegram", at(27), at(30, 12)),  # answered in November: a response
    WaitRow(24, "basic", "telegram", at(1, 0, 12), None),  # began in December
    WaitRow(25, "pro", "telegram", at(30), None),  # due 1 Dec 00:00 = the month's end: overdue
]


def report() -> MonthlyReport:
    return build_report(period_of(NOVEMBER, POLICY, AFTER), POLICY, [*ROWS, *OUTSIDE], WAITS)


def test_fixture_hours_are_the_calendars() -> None:
    for row in ROWS:
        assert POLICY.calendar.hours_between(row.waiting_since, row.answered_at) == (
            row.business_hours
        ), row


def test_overall_figures() -> None:
    # All ten, sorted: 1 2 3 5 6 7 12 24 26 30. p50: rank ceil(5) = 5 → 6; p90: rank 9 → 26.
    # Within 6 h: 1 2 3 5 6 (5 of 10); within 24 h: all but 26 and 30 (8 of 10).
    assert report().overall == Summary(
        responses=10, p50=6.0, p90=26.0, within_target=5, within_sla=8
    )
    assert report().overall.target_share == 0.5 and report().overall.sla_share == 0.8


def test_by_plan_channel_and_agent() -> None:
    r = report()
    by_plan = {b.name: b.summary for b in r.by_plan}
    assert [b.name for b in r.by_plan] == ["pro", "basic"]
    # Pro: 1 3 7 30. p50 rank 2 → 3; p90 rank ceil(3.6) = 4 → 30.
    assert by_plan["pro"] == Summary(4, 3.0, 30.0, within_target=2, within_sla=3)
    # Basic: 2 5 6 12 24 26. p50 rank 3 → 6; p90 rank ceil(5.4) = 6 → 26.
    assert by_plan["basic"] == Summary(6, 6.0, 26.0, within_target=3, within_sla=5)
    assert by_plan["basic"].sla_share == pytest.approx(5 / 6)

    by_channel = {b.name: b.summary for b in r.by_channel}
    assert [b.name for b in r.by_channel] == ["email", "telegram"]
    # Telegram: 1 2 6 7 24 → p50 rank 3 → 6, p90 rank 5 → 24. Email: 3 5 12 26 30.
    assert by_channel["telegram"] == Summary(5, 6.0, 24.0, within_target=3, within_sla=5)
    assert by_channel["email"] == Summary(5, 12.0, 30.0, within_target=2, within_sla=3)

    # Five each: ties are ordered by name. Ada: 6 7 12 24 30. Sam: 1 2 3 5 26.
    assert [(b.name, b.summary) for b in r.by_agent] == [
        ("Ada", Summary(5, 12.0, 30.0, within_target=1, within_sla=4)),
        ("Sam", Summary(5, 3.0, 26.0, within_target=4, within_sla=4)),
    ]


def test_breaches_late_answers_and_waits_past_due_at_month_end() -> None:
    r = report()
    assert [(x.ticket, x.business_hours, x.agent) for x in r.late] == [
        (4, 30.0, "Ada"),
        (10, 26.0, "Sam"),
    ]
    assert [(w.ticket, w.due_at, w.hours_waited, w.answered_at) for w in r.overdue] == [
        (20, at(26, 12), 84.0, None),
        (22, at(27), 72.0, at(2, 9, 12)),
        (25, at(1, 0, 12), 24.0, None),
    ]
    assert r.breaches == 5


def test_distribution_per_plan_is_sorted_for_the_chart() -> None:
    assert report().distribution == (
        ("pro", (1.0, 3.0, 7.0, 30.0)),
        ("basic", (2.0, 5.0, 6.0, 12.0, 24.0, 26.0)),
    )


def test_the_month_so_far_ends_now() -> None:
    now = at(18, 12)
    period = period_of(NOVEMBER, POLICY, now)
    assert (period.start, period.end, period.complete) == (at(1), now, False)
    r = build_report(period, POLICY, ROWS, [WaitRow(30, "pro", "email", at(16, 6), None)])
    assert r.overall.responses == 9  # ticket 10 is answered on the 20th
    assert [(w.ticket, w.hours_waited) for w in r.overdue] == [(30, 54.0)]  # 18 + 24 + 12


def test_an_empty_month() -> None:
    r = build_report(period_of(Month(2026, 10), POLICY, AFTER), POLICY, [])
    assert r.overall == Summary(0, None, None, 0, 0)
    assert r.overall.target_share is None and r.by_plan == () and r.breaches == 0
    text = report_text(Templates(), r)
    assert "SLA report October 2026" in text and "Breaches: 0" in text


@pytest.mark.parametrize(
    ("values", "percent", "expected"),
    [
        ([7.0], 50, 7.0),
        ([7.0], 90, 7.0),
        ([1.0, 2.0], 50, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
        ([1.0, 2.0, 3.0, 4.0, 5.0], 50, 3.0),
        ([float(i) for i in range(1, 11)], 90, 9.0),
        ([float(i) for i in range(1, 12)], 90, 10.0),  # ceil(9.9) = 10
        ([float(i) for i in range(1, 101)], 90, 90.0),
        ([1.0, 2.0, 3.0], 100, 3.0),
        ([], 50, None),
    ],
)
def test_nearest_rank(values: list[float], percent: int, expected: float | None) -> None:
    assert nearest_rank(values, percent) == expected


def test_nearest_rank_refuses_a_percent_outside_0_to_100() -> None:
    with pytest.raises(ValueError, match="percentile"):
        nearest_rank([1.0], 0)


@pytest.mark.parametrize(
    "text", ["2026-13", "2026-00", "26-11", "2026-1", "november", "", "1969-12"]
)
def test_bad_months_are_refused(text: str) -> None:
    with pytest.raises(InvalidMonth):
        Month.parse(text)


def test_months_parse_and_a_future_month_is_refused() -> None:
    assert Month.parse(" 2026-11 ") == NOVEMBER and str(NOVEMBER) == "2026-11"
    assert Month(2026, 12).next() == Month(2027, 1)
    with pytest.raises(InvalidMonth, match="has not begun"):
        period_of(Month(2027, 1), POLICY, AFTER)


def test_months_follow_the_calendars_time_zone() -> None:
    berlin = SlaPolicy(calendar=BusinessCalendar(tz="Europe/Berlin"))
    late_evening = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)  # 00:30 on 1 December in Berlin
    assert Month.of(late_evening, berlin.calendar.tz) == Month(2026, 12)
    period = period_of(NOVEMBER, berlin, AFTER)
    assert period.start == datetime(2026, 10, 31, 23, tzinfo=UTC)
    assert period.end == datetime(2026, 11, 30, 23, tzinfo=UTC)


def test_text_shows_the_figures() -> None:
    text = report_text(Templates(), report())
    lines = text.splitlines()
    assert lines[0] == "SLA report November 2026"
    assert "All               10    6.0   26.0  50.0%  80.0%" in lines
    assert " pro               4    3.0   30.0  50.0%  75.0%" in lines
    assert " basic             6    6.0   26.0  50.0%  83.3%" in lines
    assert " Ada               5   12.0   30.0  20.0%  80.0%" in lines
    assert "Breaches: 5" in lines
    assert any(
        line.startswith(" #4 pro email · Ada · 30.0 h · answered Mon 09 Nov") for line in lines
    )
    assert any(
        "#20 basic email · due Thu 26 Nov 2026, 12:00 UTC · 84.0 h waited · still waiting" in line
        for line in lines
    )


def test_telegram_text_stays_within_one_message() -> None:
    many = [
        ResponseRow(1000 + n, "basic", "email", f"Agent number {n % 40}", at(2), at(5), 72.0)
        for n in range(600)
    ]
    big = build_report(period_of(NOVEMBER, POLICY, AFTER), POLICY, many, WAITS)
    full = report_text(Templates(), big)
    assert utf16_len(full) > 4096
    text = telegram_text(Templates(), big)
    assert utf16_len(text) <= 4096
    assert "Breaches: 603" in text and "… and" in text and "more agents" in text


def test_csv_has_one_row_per_response() -> None:
    rows = list(csv.reader(io.StringIO(csv_text(ROWS[:2] + ROWS[-1:], POLICY))))
    assert rows == [
        [
            "ticket",
            "plan",
            "channel",
            "agent",
            "waiting_since",
            "answered_at",
            "business_hours",
            "within_6h",
            "within_24h",
        ],
        [
            "1",
            "pro",
            "telegram",
            "Sam",
            "2026-11-02T03:00:00+00:00",
            "2026-11-02T04:00:00+00:00",
            "1.0000",
            "yes",
            "yes",
        ],
        [
            "2",
            "pro",
            "email",
            "Sam",
            "2026-11-03T10:00:00+00:00",
            "2026-11-03T13:00:00+00:00",
            "3.0000",
            "yes",
            "yes",
        ],
        [
            "10",
            "basic",
            "email",
            "Sam",
            "2026-11-19T00:00:00+00:00",
            "2026-11-20T02:00:00+00:00",
            "26.0000",
            "no",
            "no",
        ],
    ]


def test_a_response_without_an_agent_is_grouped_as_such() -> None:
    row = ResponseRow(5, "pro", "email", None, at(2), at(2, 1), 1.0)
    r = build_report(period_of(NOVEMBER, POLICY, AFTER), POLICY, [row])
    assert [b.name for b in r.by_agent] == ["(no agent)"]
    assert r.period.end - r.period.start == timedelta(days=30)
