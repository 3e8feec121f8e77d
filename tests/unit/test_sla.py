"""Tests for tickets.sla: hand-worked tables, errors, and properties against a brute force."""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tickets.sla import DEFAULT_CALENDAR, BusinessCalendar

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
KOLKATA = ZoneInfo("Asia/Kolkata")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc(*fields: int) -> datetime:
    return datetime(*fields, tzinfo=UTC)  # type: ignore[arg-type, misc]


def at(zone: tzinfo, *fields: int, fold: int = 0) -> datetime:
    return datetime(*fields, tzinfo=zone, fold=fold)  # type: ignore[arg-type, misc]


def later(moment: datetime, delta: timedelta) -> datetime:
    """`moment + delta` in real elapsed time, shown in `moment`'s zone (`+` is wall-clock)."""
    return (moment.astimezone(UTC) + delta).astimezone(moment.tzinfo)


def us(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


# January 2026: Mon 5, Tue 6, Wed 7, Thu 8, Fri 9, Sat 10, Sun 11, Mon 12, Tue 13.
DEFAULT = DEFAULT_CALENDAR
HOLIDAYS = BusinessCalendar.from_strings(holidays="2026-05-25, 2026-04-03")  # a Monday, a Friday
EASTER = BusinessCalendar.from_strings(holidays="2026-04-03,2026-04-06")  # Good Friday + Monday
YEAR_END = BusinessCalendar.from_strings(holidays="2027-01-01")  # Dec 31 2026 is a Thursday
YEAR_END_2 = BusinessCalendar.from_strings(holidays="2026-12-31,2027-01-01")
NINE_FIVE = BusinessCalendar.from_strings(hours="09:00-17:00")
EVENING = BusinessCalendar.from_strings(hours="18:00-24:00")
SUN_THU = BusinessCalendar.from_strings(workdays="sun-thu")
IST_NINE_FIVE = BusinessCalendar(window=(time(9), time(17)), tz=timezone(timedelta(hours=5.5)))
BERLIN_WEEKDAYS = BusinessCalendar(tz="Europe/Berlin")
BERLIN_ALL = BusinessCalendar.from_strings(workdays="mon-sun", timezone="Europe/Berlin")
BERLIN_NIGHT = BusinessCalendar.from_strings(
    workdays="sun-thu", hours="01:00-04:00", timezone="Europe/Berlin"
)
BERLIN_GAP = BusinessCalendar.from_strings(
    workdays="mon-sun", hours="02:30-04:00", timezone="Europe/Berlin"
)
NY_ALL = BusinessCalendar.from_strings(workdays="mon-sun", timezone="America/New_York")
NY_NIGHT = BusinessCalendar.from_strings(
    workdays="sun-thu", hours="01:00-04:00", timezone="America/New_York"
)
NY_GAP_END = BusinessCalendar.from_strings(
    workdays="mon-sun", hours="01:00-02:30", timezone="America/New_York"
)

# (calendar, start, business hours, expected due moment)
ADD_CASES: list[tuple[BusinessCalendar, datetime, float, datetime]] = [
    # the product's worked examples
    (DEFAULT, utc(2026, 1, 10, 10), 24, utc(2026, 1, 13)),  # Saturday counts from Monday
    (DEFAULT, utc(2026, 1, 9, 20), 24, utc(2026, 1, 12, 20)),  # Friday 20:00
    (DEFAULT, utc(2026, 1, 5), 24, utc(2026, 1, 6)),
    (DEFAULT, utc(2026, 1, 8, 12), 24, utc(2026, 1, 9, 12)),
    (DEFAULT, utc(2026, 1, 9, 12), 24, utc(2026, 1, 12, 12)),
    (DEFAULT, utc(2026, 1, 11, 23, 59, 59), 24, utc(2026, 1, 13)),
    (DEFAULT, utc(2026, 1, 9), 24, utc(2026, 1, 10)),  # lands on the window end: Saturday 00:00
    (DEFAULT, utc(2026, 1, 5), 120, utc(2026, 1, 10)),
    (DEFAULT, utc(2026, 1, 5), 0.5, utc(2026, 1, 5, 0, 30)),
    (DEFAULT, utc(2026, 1, 5, 0, 0, 0, 1), 1 / 3_600_000_000, utc(2026, 1, 5, 0, 0, 0, 2)),
    (DEFAULT, utc(2026, 1, 7, 15, 30), 0, utc(2026, 1, 7, 15, 30)),  # 0h in business time
    (DEFAULT, utc(2026, 1, 10, 10), 0, utc(2026, 1, 12)),  # 0h outside: next business start
    # holidays next to weekends
    (HOLIDAYS, utc(2026, 5, 22, 12), 24, utc(2026, 5, 26, 12)),  # Monday May 25 off
    (HOLIDAYS, utc(2026, 5, 23, 10), 24, utc(2026, 5, 27)),
    (HOLIDAYS, utc(2026, 4, 2, 12), 24, utc(2026, 4, 6, 12)),  # Friday Apr 3 off
    (HOLIDAYS, utc(2026, 4, 3, 10), 0, utc(2026, 4, 6)),
    (EASTER, utc(2026, 4, 2, 12), 24, utc(2026, 4, 7, 12)),
    (EASTER, utc(2026, 4, 2, 12), 12, utc(2026, 4, 3)),
    # year end
    (YEAR_END, utc(2026, 12, 31, 12), 24, utc(2027, 1, 4, 12)),
    (YEAR_END, utc(2026, 12, 31), 24, utc(2027, 1, 1)),
    (YEAR_END, utc(2026, 12, 31, 23), 2, utc(2027, 1, 4, 1)),
    (YEAR_END_2, utc(2026, 12, 30, 12), 24, utc(2027, 1, 4, 12)),
    (YEAR_END_2, utc(2026, 12, 31, 8), 1, utc(2027, 1, 4, 1)),
    # 09:00-17:00
    (NINE_FIVE, utc(2026, 1, 9, 16), 6, utc(2026, 1, 12, 14)),  # 1h Friday + 5h Monday
    (NINE_FIVE, utc(2026, 1, 9, 16), 5, utc(2026, 1, 12, 13)),
    (NINE_FIVE, utc(2026, 1, 5, 7), 2, utc(2026, 1, 5, 11)),  # before 09:00 counts from 09:00
    (NINE_FIVE, utc(2026, 1, 5, 9), 8, utc(2026, 1, 5, 17)),
    (NINE_FIVE, utc(2026, 1, 5, 17), 0, utc(2026, 1, 6, 9)),  # 17:00 is not business time
    (NINE_FIVE, utc(2026, 1, 5, 17), 1, utc(2026, 1, 6, 10)),
    (NINE_FIVE, utc(2026, 1, 5, 16, 59, 59), 0, utc(2026, 1, 5, 16, 59, 59)),
    (NINE_FIVE, utc(2026, 1, 5, 9), 40, utc(2026, 1, 9, 17)),
    (IST_NINE_FIVE, utc(2026, 1, 9, 10, 30), 6, utc(2026, 1, 12, 8, 30)),  # 16:00 IST Friday
    # window ending at 24:00
    (EVENING, utc(2026, 1, 5, 23), 2, utc(2026, 1, 6, 19)),
    (EVENING, utc(2026, 1, 5, 18), 6, utc(2026, 1, 6)),
    (EVENING, utc(2026, 1, 9, 20), 4, utc(2026, 1, 10)),
    (EVENING, utc(2026, 1, 9, 20), 5, utc(2026, 1, 12, 19)),
    # Sunday-Thursday week
    (SUN_THU, utc(2026, 1, 8, 12), 24, utc(2026, 1, 11, 12)),
    (SUN_THU, utc(2026, 1, 9, 10), 1, utc(2026, 1, 11, 1)),
    (SUN_THU, utc(2026, 1, 10, 10), 0, utc(2026, 1, 11)),
    # Europe/Berlin: spring forward Sun 2026-03-29 02:00→03:00, fall back Sun 2026-10-25 03:00→02:00
    (BERLIN_WEEKDAYS, at(BERLIN, 2026, 3, 27, 12), 24, at(BERLIN, 2026, 3, 30, 12)),
    (BERLIN_WEEKDAYS, at(BERLIN, 2026, 10, 23, 12), 24, at(BERLIN, 2026, 10, 26, 12)),
    (BERLIN_ALL, at(BERLIN, 2026, 3, 29), 23, at(BERLIN, 2026, 3, 30)),  # a 23-hour day
    (BERLIN_ALL, at(BERLIN, 2026, 3, 29), 24, at(BERLIN, 2026, 3, 30, 1)),
    (BERLIN_ALL, at(BERLIN, 2026, 10, 25), 25, at(BERLIN, 2026, 10, 26)),  # a 25-hour day
    (BERLIN_ALL, at(BERLIN, 2026, 10, 25), 3, utc(2026, 10, 25, 1)),  # the second 02:00
    (BERLIN_NIGHT, utc(2026, 3, 29), 2, utc(2026, 3, 29, 2)),  # 01:00 CET → 04:00 CEST
    (BERLIN_NIGHT, utc(2026, 3, 29), 2.5, utc(2026, 3, 29, 23, 30)),  # Monday 01:30 CEST
    (BERLIN_NIGHT, utc(2026, 10, 24, 23), 4, utc(2026, 10, 25, 3)),  # 01:00 CEST → 04:00 CET
    (BERLIN_GAP, utc(2026, 3, 28, 23), 0, utc(2026, 3, 29, 1)),  # 02:30 is in the gap → 03:00
    (BERLIN_GAP, utc(2026, 3, 28, 23), 1, utc(2026, 3, 29, 2)),
    (BERLIN_GAP, utc(2026, 10, 24, 22), 2.5, utc(2026, 10, 25, 3)),  # 02:30 CEST (first)
    # America/New_York: spring forward Sun 2026-03-08 02:00→03:00,
    # fall back Sun 2026-11-01 02:00→01:00
    (NY_ALL, at(NEW_YORK, 2026, 3, 8), 23, at(NEW_YORK, 2026, 3, 9)),
    (NY_ALL, at(NEW_YORK, 2026, 11, 1), 25, at(NEW_YORK, 2026, 11, 2)),
    (NY_NIGHT, at(NEW_YORK, 2026, 3, 8, 1), 2, utc(2026, 3, 8, 8)),
    (NY_NIGHT, at(NEW_YORK, 2026, 11, 1, 1), 4, utc(2026, 11, 1, 9)),
    (NY_NIGHT, at(NEW_YORK, 2026, 11, 1, 1), 3.5, at(NEW_YORK, 2026, 11, 1, 3, 30)),
    (NY_GAP_END, at(NEW_YORK, 2026, 3, 8, 1), 1, utc(2026, 3, 8, 7)),  # 02:30 → 03:00 EDT
    (NY_GAP_END, at(NEW_YORK, 2026, 11, 1, 1), 2.5, utc(2026, 11, 1, 7, 30)),
]


@pytest.mark.parametrize(("calendar", "start", "hours", "expected"), ADD_CASES)
def test_add_hours_table(
    calendar: BusinessCalendar, start: datetime, hours: float, expected: datetime
) -> None:
    due = calendar.add_hours(start, hours)
    assert due == expected
    assert due.tzinfo is UTC


@pytest.mark.parametrize(("calendar", "start", "hours", "expected"), ADD_CASES)
def test_hours_between_table(
    calendar: BusinessCalendar, start: datetime, hours: float, expected: datetime
) -> None:
    assert calendar.hours_between(start, expected) == pytest.approx(hours, abs=1e-12)
    assert calendar.hours_between(expected, start) == pytest.approx(-hours, abs=1e-12)


# (calendar, start, end, business hours in [start, end))
BETWEEN_CASES: list[tuple[BusinessCalendar, datetime, datetime, float]] = [
    (DEFAULT, utc(2026, 1, 9), utc(2026, 1, 12), 24),
    (DEFAULT, utc(2026, 1, 10), utc(2026, 1, 11, 23), 0),
    (DEFAULT, utc(2026, 1, 5), utc(2026, 1, 12), 120),
    (DEFAULT, utc(2026, 1, 12), utc(2026, 1, 5), -120),
    (DEFAULT, utc(2026, 1, 5), utc(2027, 1, 4), 52 * 120),
    (DEFAULT, at(BERLIN, 2026, 1, 5, 1), utc(2026, 1, 5, 1), 1),  # inputs in any zone
    (HOLIDAYS, utc(2026, 5, 22), utc(2026, 5, 27), 48),
    (YEAR_END, utc(2026, 12, 31), utc(2027, 1, 5), 48),
    (NINE_FIVE, utc(2026, 1, 5, 8), utc(2026, 1, 5, 18), 8),
    (NINE_FIVE, utc(2026, 1, 9, 16, 30), utc(2026, 1, 12, 9, 30), 1),
    (EVENING, utc(2026, 1, 5, 12), utc(2026, 1, 7, 12), 12),
    (SUN_THU, utc(2026, 1, 9), utc(2026, 1, 12), 24),
    (BERLIN_ALL, at(BERLIN, 2026, 3, 29), at(BERLIN, 2026, 3, 30), 23),
    (BERLIN_ALL, at(BERLIN, 2026, 10, 25), at(BERLIN, 2026, 10, 26), 25),
    (BERLIN_NIGHT, at(BERLIN, 2026, 3, 29), at(BERLIN, 2026, 3, 29, 12), 2),
    (BERLIN_NIGHT, at(BERLIN, 2026, 10, 25), at(BERLIN, 2026, 10, 25, 12), 4),
    (BERLIN_GAP, at(BERLIN, 2026, 3, 29), at(BERLIN, 2026, 3, 30), 1),
    (BERLIN_GAP, at(BERLIN, 2026, 10, 25), at(BERLIN, 2026, 10, 26), 2.5),
    (NY_ALL, at(NEW_YORK, 2026, 3, 8), at(NEW_YORK, 2026, 3, 9), 23),
    (NY_ALL, at(NEW_YORK, 2026, 11, 1), at(NEW_YORK, 2026, 11, 2), 25),
    (NY_ALL, at(NEW_YORK, 2026, 11, 2), at(NEW_YORK, 2026, 11, 1), -25),
    (NY_NIGHT, at(NEW_YORK, 2026, 3, 8), at(NEW_YORK, 2026, 3, 9), 2),
    (NY_NIGHT, at(NEW_YORK, 2026, 11, 1), at(NEW_YORK, 2026, 11, 2), 4),
    (NY_GAP_END, at(NEW_YORK, 2026, 3, 8), at(NEW_YORK, 2026, 3, 9), 1),
    (NY_GAP_END, at(NEW_YORK, 2026, 11, 1), at(NEW_YORK, 2026, 11, 2), 2.5),
]


@pytest.mark.parametrize(("calendar", "start", "end", "hours"), BETWEEN_CASES)
def test_hours_between_direct(
    calendar: BusinessCalendar, start: datetime, end: datetime, hours: float
) -> None:
    assert calendar.hours_between(start, end) == pytest.approx(hours, abs=1e-12)


@pytest.mark.parametrize(
    ("calendar", "moment", "expected"),
    [
        (DEFAULT, utc(2026, 1, 9, 23, 59, 59, 999_999), True),
        (DEFAULT, utc(2026, 1, 10), False),
        (DEFAULT, utc(2026, 1, 12), True),
        (NINE_FIVE, utc(2026, 1, 5, 9), True),
        (NINE_FIVE, utc(2026, 1, 5, 8, 59, 59), False),
        (NINE_FIVE, utc(2026, 1, 5, 16, 59, 59, 999_999), True),
        (NINE_FIVE, utc(2026, 1, 5, 17), False),
        (HOLIDAYS, utc(2026, 5, 25, 12), False),
        (SUN_THU, utc(2026, 1, 11, 12), True),
        (SUN_THU, utc(2026, 1, 9, 12), False),
        (BERLIN_GAP, utc(2026, 3, 29, 1), True),
        (BERLIN_GAP, utc(2026, 3, 29, 0, 59, 59), False),
        (BERLIN_GAP, utc(2026, 3, 29, 2), False),
        (NY_NIGHT, at(NEW_YORK, 2026, 11, 1, 1, 30, fold=1), True),  # second 01:30
        (BERLIN_WEEKDAYS, utc(2026, 1, 9, 23, 30), False),  # Saturday 00:30 in Berlin
    ],
)
def test_is_business_time(calendar: BusinessCalendar, moment: datetime, expected: bool) -> None:
    assert calendar.is_business_time(moment) is expected


# -- errors ----------------------------------------------------------------------------------


def test_naive_datetimes_are_rejected() -> None:
    naive = datetime(2026, 1, 5, 12)
    aware = utc(2026, 1, 5, 12)
    for calendar in (DEFAULT, BERLIN_ALL):
        with pytest.raises(ValueError, match="timezone-aware"):
            calendar.add_hours(naive, 1)
        with pytest.raises(ValueError, match="timezone-aware"):
            calendar.hours_between(naive, aware)
        with pytest.raises(ValueError, match="timezone-aware"):
            calendar.hours_between(aware, naive)
        with pytest.raises(ValueError, match="timezone-aware"):
            calendar.is_business_time(naive)


@pytest.mark.parametrize("hours", [-1, -1e-9, math.nan, math.inf, -math.inf])
def test_bad_hours_are_rejected(hours: float) -> None:
    with pytest.raises(ValueError, match="hours"):
        DEFAULT.add_hours(utc(2026, 1, 5), hours)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("hours", "9-17", "hours: expected HH:MM-HH:MM, got '9-17'"),
        ("hours", "", "hours: expected HH:MM-HH:MM"),
        ("hours", "17:00-09:00", "hours: end must be after start"),
        ("hours", "09:00-09:00", "hours: end must be after start"),
        ("hours", "25:00-26:00", "hours: times must be"),
        ("hours", "09:60-10:00", "hours: times must be"),
        ("hours", "09:00-24:30", "hours: times must be"),
        ("workdays", "", "workdays: expected days"),
        ("workdays", "mon-fry", "workdays: unknown day 'fry'"),
        ("workdays", "weekdays", "workdays: unknown day 'weekdays'"),
        ("holidays", "2026-13-01", "holidays: expected .* got '2026-13-01'"),
        ("holidays", "2026-12-25;2027-01-01", "holidays: expected"),
        ("holidays", "christmas", "holidays: expected"),
        ("holidays", "20261225", "holidays: expected"),
        ("timezone", "Mars/Olympus", "timezone: unknown IANA time zone 'Mars/Olympus'"),
        ("timezone", "", "timezone: expected"),
        ("timezone", "../etc/passwd", "timezone: unknown"),
    ],
)
def test_from_strings_errors_name_the_field(field: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BusinessCalendar.from_strings(**{field: value})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"workdays": ()}, "workdays: no workdays"),
        ({"workdays": [7]}, "workdays: weekday numbers"),
        ({"workdays": [-1]}, "workdays: weekday numbers"),
        ({"window": (time(9), time(9))}, "window: end must be after start"),
        ({"window": (time(17), time(9))}, "window: end must be after start"),
        ({"tz": "No/Such_Zone"}, "timezone: unknown IANA time zone"),
    ],
)
def test_empty_or_invalid_calendar(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BusinessCalendar(**kwargs)  # type: ignore[arg-type]


def test_wrong_types_in_constructor() -> None:
    with pytest.raises(TypeError):
        BusinessCalendar(holidays=[utc(2026, 1, 1)])
    with pytest.raises(TypeError):
        BusinessCalendar(workdays=["mon"])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        DEFAULT.add_hours(date(2026, 1, 1), 1)  # type: ignore[arg-type]


# -- parsing, value semantics -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "days"),
    [
        ("mon-fri", (0, 1, 2, 3, 4)),
        ("mon,tue,thu", (0, 1, 3)),
        ("sun-thu", (0, 1, 2, 3, 6)),
        ("fri-mon", (0, 4, 5, 6)),
        (" Mon - Wed , SAT ", (0, 1, 2, 5)),
        ("monday,friday", (0, 4)),
        ("wed-wed", (2,)),
    ],
)
def test_from_strings_workdays(text: str, days: tuple[int, ...]) -> None:
    assert BusinessCalendar.from_strings(workdays=text).workdays == days


def test_from_strings_values() -> None:
    calendar = BusinessCalendar.from_strings(
        workdays="mon-fri",
        hours="09:30-24:00",
        holidays=" 2026-12-25 , 2027-01-01,2026-12-26 ",  # the 26th is a Saturday: dropped
        timezone="Europe/Berlin",
    )
    assert calendar.window == (time(9, 30), time(0))
    assert calendar.holidays == (date(2026, 12, 25), date(2027, 1, 1))
    assert calendar.tz == BERLIN
    assert BusinessCalendar.from_strings(hours="8:00-16:00").window == (time(8), time(16))


def test_value_semantics() -> None:
    assert BusinessCalendar() == DEFAULT
    assert BusinessCalendar.from_strings() == DEFAULT
    assert BusinessCalendar(tz=UTC) == DEFAULT == BusinessCalendar(tz="Etc/UTC")
    assert hash(BusinessCalendar(tz=timezone(timedelta(0)))) == hash(DEFAULT)
    assert BusinessCalendar(holidays=[date(2026, 1, 10)]) == DEFAULT  # a Saturday: no effect
    assert NINE_FIVE != DEFAULT
    assert BERLIN_ALL != NY_ALL
    assert DEFAULT != "calendar"
    for calendar in (DEFAULT, HOLIDAYS, NINE_FIVE, EVENING, BERLIN_NIGHT):
        assert eval(repr(calendar), {"BusinessCalendar": BusinessCalendar}) == calendar
        assert pickle.loads(pickle.dumps(calendar)) == calendar
    assert "09:00-17:00" in repr(NINE_FIVE)


def test_immutable() -> None:
    with pytest.raises(AttributeError):
        DEFAULT.window = (time(9), time(17))  # type: ignore[misc]
    with pytest.raises(AttributeError):
        DEFAULT._ws = 5
    with pytest.raises(AttributeError):
        del DEFAULT._ws


def test_long_spans_are_fast_and_exact() -> None:
    start = utc(2026, 1, 5)
    end = start + timedelta(weeks=5199, days=5)  # 5200 weeks of Mon-Fri end on a Saturday 00:00
    assert DEFAULT.add_hours(start, 24 * 5 * 5200) == end
    assert DEFAULT.hours_between(start, end) == 24 * 5 * 5200
    due = BERLIN_WEEKDAYS.add_hours(start, 24 * 5 * 52 * 10)
    assert BERLIN_WEEKDAYS.hours_between(start, due) == 24 * 5 * 52 * 10


# -- properties -------------------------------------------------------------------------------

ZONES: list[str | tzinfo] = [
    "UTC",
    timezone(timedelta(hours=-3, minutes=-30)),
    timezone(timedelta(hours=9)),
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
]
DISPLAY_ZONES: list[tzinfo] = [UTC, BERLIN, NEW_YORK, KOLKATA, timezone(timedelta(hours=-11))]
# Transitions, the year end and a plain day: start moments cluster near them.
ANCHORS = [
    utc(2026, 3, 8, 7),
    utc(2026, 11, 1, 6),
    utc(2026, 3, 29, 1),
    utc(2026, 10, 25, 1),
    utc(2026, 12, 31, 12),
    utc(2025, 6, 18, 12),
]


@dataclass(frozen=True)
class Spec:
    """A random calendar's parameters, kept for the brute-force reference."""

    days: frozenset[int]
    start_minute: int
    end_minute: int  # 1440 = 24:00
    holidays: frozenset[date]
    zone: str | tzinfo

    def calendar(self) -> BusinessCalendar:
        start = time(self.start_minute // 60, self.start_minute % 60)
        end = time(self.end_minute // 60 % 24, self.end_minute % 60)
        return BusinessCalendar(
            workdays=self.days, window=(start, end), holidays=self.holidays, tz=self.zone
        )

    def local_zone(self) -> tzinfo:
        return ZoneInfo(self.zone) if isinstance(self.zone, str) else self.zone


@st.composite
def cases(draw: st.DrawFn, *, min_days: int = 1, min_window: int = 60) -> tuple[Spec, datetime]:
    """A random calendar and a random start moment (µs resolution) near an anchor."""
    anchor = draw(st.sampled_from(ANCHORS))
    start = anchor + timedelta(microseconds=draw(st.integers(-10 * 86_400_000_000, 86_400_000_000)))
    edges = st.sampled_from([0, 60, 90, 120, 150, 180, 240, 540, 1020, 1440])
    start_minute = draw(st.one_of(edges, st.integers(0, 1440)).filter(lambda m: m < 1440))
    start_minute = min(start_minute, 1440 - min_window)
    end_minute = draw(st.one_of(edges, st.integers(0, 1440)))
    end_minute = max(end_minute, start_minute + min_window)
    days = draw(st.sets(st.integers(0, 6), min_size=min_days))
    offsets = draw(st.lists(st.integers(-3, 20), max_size=4))
    holidays = frozenset(start.date() + timedelta(days=k) for k in offsets)
    zone = draw(st.sampled_from(ZONES))
    display = draw(st.sampled_from(DISPLAY_ZONES))
    spec = Spec(frozenset(days), start_minute, end_minute, holidays, zone)
    return spec, start.astimezone(display)


def minute_case(spec: Spec, start: datetime) -> datetime:
    return start.replace(second=0, microsecond=0)


hours_seconds = st.integers(0, 500 * 3600)
PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(cases(), hours_seconds)
def test_round_trip(case: tuple[Spec, datetime], seconds: int) -> None:
    spec, start = case
    calendar = spec.calendar()
    due = calendar.add_hours(start, seconds / 3600)
    assert due >= start
    assert calendar.hours_between(start, due) == seconds / 3600
    if seconds == 0:
        assert us(due) == us(start) or not calendar.is_business_time(start)  # fold-safe ==
    assert calendar.is_business_time(calendar.add_hours(start, 0))


@PROPERTY_SETTINGS
@given(cases(), hours_seconds, hours_seconds)
def test_monotone_in_hours(case: tuple[Spec, datetime], first: int, second: int) -> None:
    spec, start = case
    calendar = spec.calendar()
    low, high = sorted((first, second))
    assert calendar.add_hours(start, low / 3600) <= calendar.add_hours(start, high / 3600)


@PROPERTY_SETTINGS
@given(cases(), st.integers(0, 7 * 86_400_000_000), st.integers(0, 200 * 3600))
def test_monotone_in_start(case: tuple[Spec, datetime], shift: int, seconds: int) -> None:
    spec, start = case
    calendar = spec.calendar()
    after = later(start, timedelta(microseconds=shift))
    assert calendar.add_hours(start, seconds / 3600) <= calendar.add_hours(after, seconds / 3600)


@PROPERTY_SETTINGS
@given(cases(), st.integers(-30 * 86_400_000_000, 30 * 86_400_000_000), st.integers())
def test_antisymmetric_and_additive(case: tuple[Spec, datetime], shift: int, other: int) -> None:
    spec, a = case
    calendar = spec.calendar()
    b = later(a, timedelta(microseconds=shift))
    c = later(a, timedelta(microseconds=other % (60 * 86_400_000_000) - 30 * 86_400_000_000))
    assert calendar.hours_between(a, b) == -calendar.hours_between(b, a)
    assert calendar.hours_between(a, a) == 0
    total = calendar.hours_between(a, b) + calendar.hours_between(b, c)
    assert total == pytest.approx(calendar.hours_between(a, c), abs=1e-9)


# -- brute force: walk minute by minute ---------------------------------------------------------


def brute_flags(spec: Spec, first_minute: int, stop_minute: int) -> list[bool]:
    """Per UTC minute in [first, stop) since the epoch: is its start business time?

    The local clock is read through zoneinfo and checked against weekday, holidays and window
    directly.  After a fall-back the wall clock repeats an hour; a window edge is crossed
    the first time the clock shows it, so the check uses the highest wall time shown so far.
    """
    zone = spec.local_zone()
    highest: datetime | None = None
    flags: list[bool] = []
    for minute in range(first_minute - 1440, stop_minute):  # a day of warm-up
        wall = (EPOCH + timedelta(minutes=minute)).astimezone(zone).replace(tzinfo=None)
        if highest is None or wall > highest:
            highest = wall
        if minute >= first_minute:
            minute_of_day = highest.hour * 60 + highest.minute
            flags.append(
                highest.weekday() in spec.days
                and highest.date() not in spec.holidays
                and spec.start_minute <= minute_of_day < spec.end_minute
            )
    return flags


def minutes(moment: datetime) -> int:
    value, rest = divmod(us(moment), 60_000_000)
    assert rest == 0
    return value


BRUTE_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@BRUTE_SETTINGS
@given(cases(), st.integers(0, 3 * 1440))
def test_hours_between_matches_brute_force(case: tuple[Spec, datetime], span: int) -> None:
    spec, start = case
    calendar = spec.calendar()
    a = minute_case(spec, start)
    b = later(a, timedelta(minutes=span))
    flags = brute_flags(spec, minutes(a), minutes(b))
    assert calendar.hours_between(a, b) * 60 == pytest.approx(sum(flags), abs=1e-6)
    for index in range(0, span, 7):
        moment = later(a, timedelta(minutes=index))
        assert calendar.is_business_time(moment) is flags[index], moment


@BRUTE_SETTINGS
@given(cases(min_days=3, min_window=180), st.integers(0, 360))
def test_add_hours_matches_brute_force(case: tuple[Spec, datetime], due_minutes: int) -> None:
    spec, start = case
    calendar = spec.calendar()
    s = minute_case(spec, start)
    due = calendar.add_hours(s, due_minutes / 60)
    assume(due - s <= timedelta(days=14))
    first, stop = minutes(s), minutes(due)
    flags = brute_flags(spec, first, stop + 1)
    assert sum(flags[:-1]) == due_minutes  # exactly the asked business minutes elapsed ...
    if due_minutes:
        assert flags[-2]  # ... and not a minute later than needed
    else:
        assert flags[-1]  # the clock starts at the first business minute
        assert not any(flags[:-1])
