"""The uptime inputs, table-tested with figures worked out by hand.

February 2026 has 28 × 1,440 = 40,320 minutes; 0.5 % of it is 201.6 minutes, so 201 down
minutes keep the promise (99.5014… %) and 202 break it (99.4990… %).
"""

from __future__ import annotations

import json
from collections.abc import Set
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from accounts.uptime import (
    Check,
    UptimeError,
    Window,
    credit_month,
    from_checks,
    from_incidents,
    given,
    parse_checks,
    parse_instatus,
    parse_windows,
)
from tickets.months import Month

FEB = Month(2026, 2)
MINUTES = 40_320


def at(day: int, hour: int = 0, minute: int = 0, second: int = 0, month: int = 2) -> datetime:
    return datetime(2026, month, day, hour, minute, second, tzinfo=UTC)


def month_of_checks(down: Set[int] = frozenset(), missing: Set[int] = frozenset()) -> list[Check]:
    """One check per minute of February at :00 seconds; `down` fail, `missing` have none."""
    start = FEB.start
    return [
        Check(start + timedelta(minutes=m), m not in down)
        for m in range(MINUTES)
        if m not in missing
    ]


# -- months -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "month", "previous", "end"),
    [
        ("2026-02", Month(2026, 2), Month(2026, 1), at(1, month=3)),
        ("2026-01", Month(2026, 1), Month(2025, 12), at(1, month=2)),
        (" 2026-12 ", Month(2026, 12), Month(2026, 11), datetime(2027, 1, 1, tzinfo=UTC)),
    ],
)
def test_months(text: str, month: Month, previous: Month, end: datetime) -> None:
    parsed = credit_month(text)
    assert parsed == month and parsed.previous() == previous and parsed.end == end
    assert str(parsed) == text.strip()


@pytest.mark.parametrize("text", ["2026-13", "2026", "March", "2026-00", "26-03", "2026-03-01"])
def test_bad_months_are_refused(text: str) -> None:
    with pytest.raises(UptimeError, match="YYYY-MM"):
        credit_month(text)


def test_month_of_a_moment_is_taken_in_utc() -> None:
    late = datetime(2026, 3, 31, 23, 30, tzinfo=UTC).astimezone(ZoneInfo("Europe/Berlin"))
    assert Month.of(late) == Month(2026, 3) and FEB.label == "February 2026"


# -- a typed figure ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "percent", "below"),
    [("99.3", "99.3", True), ("99.5", "99.5", False), ("99.4999%", "99.4999", True)],
)
def test_given_uptime(text: str, percent: str, below: bool) -> None:
    uptime = given(text)
    assert uptime.percent == Decimal(percent) and uptime.below(Decimal("99.5")) is below


@pytest.mark.parametrize("text", ["abc", "101", "-1", "NaN", "inf", ""])
def test_given_uptime_must_be_a_percentage(text: str) -> None:
    with pytest.raises(UptimeError, match="percentage"):
        given(text)


# -- checks file ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("down", "missing", "maintenance", "percent", "detail"),
    [
        (set(), set(), [], "100.0000", "40,320 of 40,320 minutes up"),
        (set(range(201)), set(), [], "99.5014", "40,119 of 40,320 minutes up; 201 down"),
        (set(range(202)), set(), [], "99.4990", "40,118 of 40,320 minutes up; 202 down"),
        # 120 minutes of maintenance (all failing) are left out: 39,998 up of 40,200.
        (
            set(range(202)) | set(range(1000, 1120)),
            set(),
            [Window(FEB.start + timedelta(minutes=1000), FEB.start + timedelta(minutes=1120))],
            "99.4975",
            "39,998 of 40,200 minutes up; 202 down; 0 without a check counted as down; "
            "120 maintenance minutes left out",
        ),
        # 100 minutes without any check count as down, with 150 failing: 40,070 up.
        (set(range(150)), set(range(5000, 5100)), [], "99.3799", "100 without a check"),
    ],
)
def test_uptime_from_checks(
    down: set[int], missing: set[int], maintenance: list[Window], percent: str, detail: str
) -> None:
    uptime = from_checks(month_of_checks(down, missing), FEB, maintenance)
    assert uptime.percent == Decimal(percent)
    assert detail in uptime.detail
    assert uptime.complete


def test_one_failed_check_makes_its_minute_down_and_other_months_do_not_count() -> None:
    checks = month_of_checks()
    checks += [
        Check(at(3, 10, 0, 30), False),  # a second check in the minute 10:00, failing
        Check(at(1, month=3), False),  # March: not February's business
        Check(at(31, 23, 59, month=1), False),  # January
    ]
    uptime = from_checks(checks, FEB)
    assert "40,319 of 40,320 minutes up; 1 down" in uptime.detail


def test_a_window_counts_the_minutes_that_start_inside_it_clipped_to_the_month() -> None:
    windows = [
        Window(at(31, 23, 0, month=1), at(1, 0, 30)),  # 30 minutes of it are in February
        Window(at(5, 2, 0, 30), at(5, 2, 10)),  # minutes 02:01 … 02:09 start inside: 9
    ]
    uptime = from_checks(month_of_checks(), FEB, windows)
    assert "39 maintenance minutes left out" in uptime.detail


def test_checks_that_stop_before_the_month_ends_are_incomplete() -> None:
    stopped = from_checks(month_of_checks(missing={MINUTES - 1}), FEB)
    assert not stopped.complete and stopped.percent == Decimal("99.9975")


def test_a_month_without_checks_is_an_error_not_zero_uptime() -> None:
    with pytest.raises(UptimeError, match=r"checks\.csv has no check in 2026-02"):
        from_checks([Check(at(1, month=3), True)], FEB, source="checks.csv")


def test_all_maintenance_is_full_uptime() -> None:
    uptime = from_checks(month_of_checks(down={1}), FEB, [Window(FEB.start, FEB.end)])
    assert uptime.percent == Decimal(100)


def test_parse_checks_file() -> None:
    text = (
        "# exported by the monitor\n"
        "timestamp,ok\n"
        "2026-02-01T00:00:00Z,1\n"
        "\n"
        "2026-02-01T00:01:00+01:00, down\n"
        "2026-02-01 00:02:00,TRUE\n"
    )
    assert parse_checks(text) == [
        Check(at(1), True),
        Check(at(31, 23, 1, month=1), False),
        Check(at(1, 0, 2), True),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "timestamp,ok\n2026-02-01T00:00:00Z,1\nyesterday,1\n",
            "c.csv line 3: timestamp 'yesterday'",
        ),
        ("2026-02-01T00:00:00Z,maybe\n", "c.csv line 1: ok 'maybe' is not one of"),
        ("2026-02-01T00:00:00Z\n", "c.csv line 1: expected 2 fields (timestamp,ok), got 1"),
        ("2026-02-01T00:00:00Z,1,extra\n", "c.csv line 1: expected 2 fields"),
    ],
)
def test_bad_checks_name_the_line_and_field(text: str, message: str) -> None:
    with pytest.raises(UptimeError) as error:
        parse_checks(text, "c.csv")
    assert message in str(error.value)


def test_parse_maintenance_file() -> None:
    text = "start,end\n2026-02-05T02:00:00Z,2026-02-05T02:30:00Z\n"
    assert parse_windows(text) == [Window(at(5, 2), at(5, 2, 30))]
    with pytest.raises(UptimeError, match=r"m\.csv line 2: the window ends before it starts"):
        parse_windows("start,end\n2026-02-05T03:00:00Z,2026-02-05T02:30:00Z\n", "m.csv")
    with pytest.raises(UptimeError, match=r"m\.csv line 1: end 'soon'"):
        parse_windows("2026-02-05T03:00:00Z,soon\n", "m.csv")


# -- Instatus ---------------------------------------------------------------------------------

EXPORT = {
    "incidents": [
        {
            "id": "a",
            "name": "API down",
            "started": "2026-02-10T10:00:00.000Z",
            "resolved": "2026-02-10T12:00:00.000Z",
            "status": "RESOLVED",
            "impact": "MAJOROUTAGE",
        },
        {  # overlaps the first: together 10:00-13:00
            "id": "b",
            "name": "Dashboard down",
            "started": "2026-02-10T11:00:00Z",
            "resolved": "2026-02-10T13:00:00Z",
            "status": "RESOLVED",
            "impact": "PARTIALOUTAGE",
        },
        {  # slow, not down
            "id": "c",
            "started": "2026-02-15T00:00:00Z",
            "resolved": "2026-02-16T00:00:00Z",
            "impact": "DEGRADEDPERFORMANCE",
        },
        {"id": "d", "started": "2026-02-20T00:00:00Z", "resolved": "2026-02-20T00:30:00Z"},
        {"id": "e", "started": "2026-01-31T23:00:00Z", "resolved": "2026-02-01T01:00:00Z"},
        {"id": "f", "started": "2026-02-28T23:00:00Z", "resolved": None, "status": "MONITORING"},
        {"id": "g", "started": "2026-03-02T00:00:00Z", "resolved": "2026-03-02T05:00:00Z"},
    ],
    "maintenances": [
        {"id": "m1", "start": "2026-02-10T12:30:00Z", "duration": 60, "status": "COMPLETED"},
        {"id": "m2", "start": "2026-02-11T00:00:00Z", "duration": "600", "status": "NOTSTARTEDYET"},
    ],
}


def test_uptime_from_an_instatus_export() -> None:
    incidents, maintenances = parse_instatus(json.dumps(EXPORT))
    uptime = from_incidents(incidents, FEB, maintenances)
    # Month 2,419,200 s; maintenance 3,600 s → 2,415,600 measured. Down: Feb 1 00-01 (3,600),
    # Feb 10 10-13 (10,800) less its 30 minutes inside maintenance (1,800), Feb 20 (1,800),
    # Feb 28 23-24 while unresolved (3,600) = 18,000 s. 2,397,600 / 2,415,600 = 99.25484 %.
    assert uptime.percent == Decimal("99.2548")
    assert uptime.detail == "4 outage span(s), 300.0 min down; 60.0 min of maintenance left out"


def test_a_bare_incident_list_is_accepted() -> None:
    incidents, maintenances = parse_instatus(json.dumps(EXPORT["incidents"]))
    assert len(incidents) == 6 and maintenances == []


@pytest.mark.parametrize(
    ("export", "message"),
    [
        ('{"incidents": [', "i.json line 1 column 16: not JSON"),
        ('{"incidents": [{"id": "a"}]}', "i.json: incidents[0].started is missing"),
        (
            '{"incidents": [{"started": "2026-02-01T00:00:00Z"}, {"started": "noon"}]}',
            "i.json: incidents[1].started 'noon' is not an ISO 8601 time",
        ),
        (
            '{"incidents": [{"started": "2026-02-02T00:00:00Z", '
            '"resolved": "2026-02-01T00:00:00Z"}]}',
            "incidents[0].resolved is before its start",
        ),
        (
            '{"maintenances": [{"start": "2026-02-01T00:00:00Z", "duration": "an hour"}]}',
            "i.json: maintenances[0].duration 'an hour' is not a number of minutes",
        ),
        ('{"incidents": {"a": 1}}', "i.json: incidents must be a list"),
        ('"up"', "i.json: expected an object"),
        ('{"incidents": [{"started": 5}]}', "incidents[0].started must be an ISO 8601 time"),
    ],
)
def test_bad_instatus_exports_name_the_field(export: str, message: str) -> None:
    with pytest.raises(UptimeError) as error:
        parse_instatus(export, "i.json")
    assert message in str(error.value)


def test_the_readme_instatus_example() -> None:
    export = """{
      "incidents": [
        {"id": "ckf01m59u", "name": "API down", "status": "RESOLVED", "impact": "MAJOROUTAGE",
         "started": "2026-03-12T10:00:00.000Z", "resolved": "2026-03-12T14:00:00.000Z"}
      ],
      "maintenances": [
        {"id": "ckf1fzzbt", "name": "Database upgrade", "status": "COMPLETED",
         "start": "2026-03-14T02:00:00.000Z", "duration": 60}
      ]
    }"""
    incidents, maintenances = parse_instatus(export)
    # (744 h - 1 h - 4 h) / (744 h - 1 h) = 99.46164… %
    assert from_incidents(incidents, Month(2026, 3), maintenances).percent == Decimal("99.4616")
