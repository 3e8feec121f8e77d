"""SLA business-time calendar: when is a ticket's response due?

A ticket's response is due a number of *business hours* after the customer's
first unanswered message; time outside business time does not count.  This
module answers two questions exactly (to the microsecond, with integer
arithmetic throughout): "what moment is N business hours after T?"
(`BusinessCalendar.add_hours`) and "how many business hours lie between A and
B?" (`BusinessCalendar.hours_between`).  It is pure code: no I/O besides the
time-zone database that `zoneinfo` reads.

Semantics
---------
* Business time is the union of one half-open interval per business day,
  ``[window start, window end)`` in the calendar's local wall time.  A business
  day is a local date whose weekday is in ``workdays`` and which is not in
  ``holidays`` (holidays on non-workdays change nothing and are dropped).  A
  window end of ``time(0)`` means 24:00, the end of that day.  The default
  calendar is Monday-Friday, 00:00-24:00 UTC, no holidays.
* ``add_hours(t, h)`` counts from ``t`` if ``t`` is business time, otherwise from
  the next business moment (a Saturday message counts from Monday 00:00).  It
  returns the *earliest* moment at which ``h`` business hours have elapsed, so a
  result that lands exactly on a window end is that end: Friday 00:00 + 24h is
  Saturday 00:00 (= Friday 24:00), not Monday 00:00.  ``add_hours(t, 0)`` is
  ``t`` itself (the same instant) when ``t`` is business time and the next
  business start otherwise (the moment the SLA clock starts running).  Results
  are aware datetimes in UTC.  ``h`` must be finite and >= 0 and is rounded to
  the nearest microsecond; a result past year 9999 raises OverflowError.
* ``hours_between(a, b)`` is the business time in ``[a, b)``; it is negative
  when ``b < a`` (``hours_between(a, b) == -hours_between(b, a)``) and additive.
  ``hours_between(t, add_hours(t, h)) == h`` for every ``t`` and ``h >= 0``.
* Time zones: the window is local wall time, business time is real elapsed
  time, so an 00:00-24:00 day in Europe/Berlin on the spring-forward day holds
  23 business hours and on the fall-back day 25.  A window edge inside a DST
  gap maps to the instant the gap ends; an ambiguous edge takes its first
  occurrence.  Equivalently, an edge maps to the first instant at which the
  local clock shows that wall time or later.
* Only timezone-aware datetimes are accepted (``ValueError`` otherwise).

Cost: for fixed-offset zones (UTC, ``datetime.timezone``, the ``Etc/GMT±N``
family) both operations are closed-form, O(log holidays).  For zones with DST
they walk cached per-week interval tables, O(weeks spanned).
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["DEFAULT_CALENDAR", "BusinessCalendar"]

_US: Final = timedelta(microseconds=1)
_US_PER_DAY: Final = 86_400_000_000
_US_PER_HOUR: Final = 3_600_000_000
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH: Final = datetime(1970, 1, 1)  # noqa: DTZ001 - local wall-clock arithmetic
# Day numbers ("mday") count days since Monday 1969-12-29, so weekday = mday % 7.
_MDAY_SHIFT: Final = 3 * _US_PER_DAY  # the epoch (Thursday) is mday 3
_MDAY_ORDINAL: Final = date(1969, 12, 29).toordinal()
_WEEK_CACHE_MAX: Final = 4096
_FIXED_ZONE_KEY: Final = re.compile(
    r"(?:Etc/)?(?:GMT(?:[+-]\d{1,2})?|GMT0|UTC|UCT|Universal|Zulu|Greenwich)"
)
_DAY_NAMES: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAY_NAMES: Final = (
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
)
_HOURS_RE: Final = re.compile(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*")
_ISO_DATE_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")

# A week's business time in a zone with DST: (first instant of the local week,
# first instant of the next local week, total business µs, flat (start, end, ...)
# UTC-µs pairs of its business intervals in order).
_Week = tuple[int, int, int, tuple[int, ...]]


def _time_to_us(value: time) -> int:
    return ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000 + value.microsecond


def _format_wall(us: int) -> str:
    seconds, micro = divmod(us, 1_000_000)
    minutes, second = divmod(seconds, 60)
    text = f"{minutes // 60:02d}:{minutes % 60:02d}"
    if second or micro:
        text += f":{second:02d}" + (f".{micro:06d}" if micro else "")
    return text


def _aware_error(name: str, value: object) -> Exception:
    if not isinstance(value, datetime):
        return TypeError(f"{name} must be a datetime, got {type(value).__name__}")
    return ValueError(f"{name} must be timezone-aware, got naive datetime {value.isoformat()}")


def _resolve_tz(tz: str | tzinfo) -> tuple[tzinfo, str]:
    if isinstance(tz, str):
        if tz == "UTC":
            return UTC, "UTC"
        try:
            return ZoneInfo(tz), tz
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(f"timezone: unknown IANA time zone {tz!r}") from None
    if isinstance(tz, tzinfo):
        return tz, str(getattr(tz, "key", None) or tz)
    raise TypeError(f"tz must be an IANA name or a tzinfo, got {type(tz).__name__}")


def _fixed_offset_us(tz: tzinfo) -> int | None:
    """UTC offset in µs if `tz` never changes offset, else None."""
    offset: timedelta | None = None
    if isinstance(tz, timezone):
        offset = tz.utcoffset(None)
    elif isinstance(tz, ZoneInfo) and _FIXED_ZONE_KEY.fullmatch(tz.key):
        offset = tz.utcoffset(datetime(2000, 1, 1))  # noqa: DTZ001 - probing a fixed zone
    return None if offset is None else offset // _US


def _parse_workdays(text: str) -> list[int]:
    days: list[int] = []

    def day_number(name: str) -> int:
        key = name.strip().lower()
        if key in _DAY_NAMES:
            return _DAY_NAMES.index(key)
        if key in _FULL_DAY_NAMES:
            return _FULL_DAY_NAMES.index(key)
        raise ValueError(
            f"workdays: unknown day {name.strip()!r} in {text!r} (use mon, tue, wed, thu, "
            "fri, sat, sun; ranges like 'mon-fri' or 'sun-thu'; separate with commas)"
        )

    for item in text.split(","):
        if not item.strip():
            continue
        if "-" in item:
            first_text, _, last_text = item.partition("-")
            first, last = day_number(first_text), day_number(last_text)
            days.extend((first + i) % 7 for i in range((last - first) % 7 + 1))
        else:
            days.append(day_number(item))
    if not days:
        raise ValueError(f"workdays: expected days like 'mon-fri', got {text!r}")
    return days


def _parse_hours(text: str) -> tuple[time, time]:
    match = _HOURS_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"hours: expected HH:MM-HH:MM, got {text!r}")
    h1, m1, h2, m2 = (int(group) for group in match.groups())
    if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2 != 0):
        raise ValueError(f"hours: times must be 00:00-23:59 (end may be 24:00), got {text!r}")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if end % 1440 != 0 and end <= start:
        raise ValueError(f"hours: end must be after start, got {text!r}")
    return time(h1, m1), time(h2 % 24, m2)


def _parse_holidays(text: str) -> list[date]:
    result: list[date] = []
    for item in text.split(","):
        value = item.strip()
        if not value:
            continue
        try:
            if not _ISO_DATE_RE.fullmatch(value):
                raise ValueError
            result.append(date.fromisoformat(value))
        except ValueError:
            raise ValueError(
                f"holidays: expected comma-separated ISO dates (YYYY-MM-DD), got {value!r}"
            ) from None
    return result


def _rebuild(
    workdays: tuple[int, ...], window: tuple[time, time], holidays: tuple[date, ...], tz: tzinfo
) -> BusinessCalendar:
    return BusinessCalendar(workdays=workdays, window=window, holidays=holidays, tz=tz)


class BusinessCalendar:
    """Business days, a daily window and holidays in one time zone; immutable."""

    __slots__ = (
        "_before",
        "_day_us",
        "_hol",
        "_holidays",
        "_holset",
        "_is_work",
        "_n_work",
        "_shift",
        "_tz",
        "_tz_eq",
        "_tzname",
        "_wday_list",
        "_we",
        "_weeks",
        "_window",
        "_workdays",
        "_ws",
    )

    _before: tuple[int, ...]
    _day_us: int
    _hol: tuple[int, ...]
    _holidays: tuple[date, ...]
    _holset: frozenset[int]
    _is_work: tuple[bool, ...]
    _n_work: int
    _shift: int | None
    _tz: tzinfo
    _tz_eq: object
    _tzname: str
    _wday_list: tuple[int, ...]
    _weeks: dict[int, _Week]
    _window: tuple[time, time]
    _workdays: tuple[int, ...]
    _ws: int
    _we: int

    def __init__(
        self,
        *,
        workdays: Iterable[int] = (0, 1, 2, 3, 4),
        window: tuple[time, time] = (time(0), time(0)),
        holidays: Iterable[date] = (),
        tz: str | tzinfo = "UTC",
    ) -> None:
        """Validate and precompute; raises ValueError if there is no business time at all."""
        days: set[int] = set()
        for day in workdays:
            if not isinstance(day, int) or isinstance(day, bool):
                raise TypeError(f"workdays: expected weekday numbers 0-6, got {day!r}")
            if not 0 <= day <= 6:
                raise ValueError(f"workdays: weekday numbers are 0 (Monday) to 6, got {day}")
            days.add(day)
        if not days:
            raise ValueError("workdays: no workdays, so there is no business time at all")
        if len(window) != 2 or not all(isinstance(t, time) for t in window):
            raise TypeError(f"window: expected (start time, end time), got {window!r}")
        if any(t.tzinfo is not None for t in window):
            raise ValueError("window: times must be naive local wall times")
        ws, we = _time_to_us(window[0]), _time_to_us(window[1])
        if we == 0:
            we = _US_PER_DAY
        if we <= ws:
            raise ValueError(
                f"window: end must be after start (end 00:00 means 24:00), got "
                f"{window[0].isoformat()}-{window[1].isoformat()}"
            )
        tz_obj, tzname = _resolve_tz(tz)
        shift = _fixed_offset_us(tz_obj)
        hol_dates: set[date] = set()
        for holiday in holidays:
            if isinstance(holiday, datetime) or not isinstance(holiday, date):
                raise TypeError(f"holidays: expected dates, got {holiday!r}")
            if holiday.weekday() in days:
                hol_dates.add(holiday)
        wday_list = tuple(sorted(days))
        is_work = tuple(d in days for d in range(7))
        before = tuple(sum(is_work[:d]) for d in range(8))
        hol_sorted = tuple(sorted(hol_dates))
        hol = tuple(h.toordinal() - _MDAY_ORDINAL for h in hol_sorted)

        init = object.__setattr__
        init(self, "_workdays", wday_list)
        init(self, "_window", (window[0], window[1]))
        init(self, "_holidays", hol_sorted)
        init(self, "_tz", tz_obj)
        init(self, "_tzname", tzname)
        init(self, "_tz_eq", ("offset", shift) if shift is not None else _tz_identity(tz_obj))
        init(self, "_shift", None if shift is None else shift + _MDAY_SHIFT)
        init(self, "_ws", ws)
        init(self, "_we", we)
        init(self, "_day_us", we - ws)
        init(self, "_wday_list", wday_list)
        init(self, "_n_work", len(wday_list))
        init(self, "_is_work", is_work)
        init(self, "_before", before)
        init(self, "_hol", hol)
        init(self, "_holset", frozenset(hol))
        init(self, "_weeks", {})

    # -- read-only view -------------------------------------------------------------------

    @property
    def workdays(self) -> tuple[int, ...]:
        """Business weekdays (Monday=0), sorted."""
        return self._workdays

    @property
    def window(self) -> tuple[time, time]:
        """Daily business window in local wall time; an end of time(0) means 24:00."""
        return self._window

    @property
    def holidays(self) -> tuple[date, ...]:
        """Holidays that fall on workdays, sorted (others are dropped: they change nothing)."""
        return self._holidays

    @property
    def tz(self) -> tzinfo:
        """The calendar's time zone."""
        return self._tz

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (self._workdays, self._window, self._holidays, self._tz))

    def _key(self) -> tuple[object, ...]:
        return (self._workdays, self._ws, self._we, self._hol, self._tz_eq)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BusinessCalendar):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        names = ",".join(_DAY_NAMES[d] for d in self._workdays)
        hours = f"{_format_wall(self._ws)}-{_format_wall(self._we)}"
        holidays = ",".join(h.isoformat() for h in self._holidays)
        return (
            f"BusinessCalendar.from_strings(workdays={names!r}, hours={hours!r}, "
            f"holidays={holidays!r}, timezone={self._tzname!r})"
        )

    # -- settings ----------------------------------------------------------------------------

    @classmethod
    def from_strings(
        cls,
        *,
        workdays: str = "mon-fri",
        hours: str = "00:00-24:00",
        holidays: str = "",
        timezone: str = "UTC",
    ) -> BusinessCalendar:
        """Build a calendar from settings text; bad values raise ValueError naming the field."""
        days = _parse_workdays(workdays)
        window = _parse_hours(hours)
        holiday_dates = _parse_holidays(holidays)
        if not timezone.strip():
            raise ValueError("timezone: expected an IANA time zone name, got ''")
        return cls(workdays=days, window=window, holidays=holiday_dates, tz=timezone.strip())

    # -- public operations ------------------------------------------------------------------

    def add_hours(self, start: datetime, hours: float) -> datetime:
        """The moment an SLA of `hours` business hours from `start` runs out (UTC)."""
        try:
            us = (start - _EPOCH) // _US
        except TypeError:
            raise _aware_error("start", start) from None
        if not 0 <= hours < math.inf:
            raise ValueError(f"hours must be finite and >= 0, got {hours!r}")
        delta = round(hours * _US_PER_HOUR)
        shift = self._shift
        if shift is None:
            return _EPOCH + timedelta(0, 0, self._walk_add(start, us, delta))
        base = self._count(us + shift)
        local = self._locate(base + delta - 1) + 1 if delta else self._locate(base)
        try:
            return _EPOCH + timedelta(0, 0, local - shift)
        except OverflowError:
            raise OverflowError("date value out of range") from None

    def hours_between(self, start: datetime, end: datetime) -> float:
        """Business hours elapsed in [start, end), e.g. how long an SLA clock has run."""
        try:
            a = (start - _EPOCH) // _US
        except TypeError:
            raise _aware_error("start", start) from None
        try:
            b = (end - _EPOCH) // _US
        except TypeError:
            raise _aware_error("end", end) from None
        shift = self._shift
        if shift is not None:
            return (self._count(b + shift) - self._count(a + shift)) / _US_PER_HOUR
        if a <= b:
            return self._walk_between(start, a, b) / _US_PER_HOUR
        return -self._walk_between(end, b, a) / _US_PER_HOUR

    def is_business_time(self, moment: datetime) -> bool:
        """Whether an SLA clock runs at `moment`."""
        try:
            us = (moment - _EPOCH) // _US
        except TypeError:
            raise _aware_error("moment", moment) from None
        shift = self._shift
        if shift is not None:
            day, tod = divmod(us + shift, _US_PER_DAY)
            return self._is_work[day % 7] and self._ws <= tod < self._we and day not in self._holset
        week = self._local_mday(moment) // 7
        for index in (week, week + 1):
            first, _, _, pairs = self._week(index)
            if us < first:
                break
            for i in range(0, len(pairs), 2):
                if pairs[i] <= us < pairs[i + 1]:
                    return True
        return False

    # -- fixed-offset closed form (local µs since Monday 1969-12-29 00:00) -----------------

    def _count(self, local: int) -> int:
        """Business µs before `local`, relative to the anchor."""
        day, tod = divmod(local, _US_PER_DAY)
        week, wday = divmod(day, 7)
        days = week * self._n_work + self._before[wday]
        hol = self._hol
        if hol:
            k = bisect_left(hol, day)
            days -= k
            if k < len(hol) and hol[k] == day:
                return days * self._day_us
        if not self._is_work[wday] or tod <= self._ws:
            return days * self._day_us
        if tod >= self._we:
            return (days + 1) * self._day_us
        return days * self._day_us + tod - self._ws

    def _locate(self, index: int) -> int:
        """Local µs at which business µs number `index` (0-based, from the anchor) starts."""
        nth_day, offset = divmod(index, self._day_us)
        hol = self._hol
        week, i = divmod(nth_day, self._n_work)
        day = week * 7 + self._wday_list[i]
        if hol:
            skipped = 0
            while True:
                now_skipped = bisect_right(hol, day)
                if now_skipped == skipped:
                    break
                skipped = now_skipped
                week, i = divmod(nth_day + skipped, self._n_work)
                day = week * 7 + self._wday_list[i]
        return day * _US_PER_DAY + self._ws + offset

    # -- zones with DST: per-week interval tables -------------------------------------------

    def _local_mday(self, moment: datetime) -> int:
        return moment.astimezone(self._tz).toordinal() - _MDAY_ORDINAL

    def _wall_to_utc(self, mday: int, tod: int) -> int:
        """UTC µs of local wall time `tod` on day `mday`: gap → gap end, ambiguous → first."""
        wall = (mday * _US_PER_DAY - _MDAY_SHIFT) + tod
        try:
            naive = _NAIVE_EPOCH + timedelta(0, 0, wall)
        except OverflowError:
            raise OverflowError("date value out of range") from None
        tz = self._tz
        first = naive.replace(tzinfo=tz).utcoffset()
        second = naive.replace(tzinfo=tz, fold=1).utcoffset()
        if first is None or second is None:
            raise ValueError(f"tz {self._tzname!r} returned no UTC offset")
        early, late = wall - second // _US, wall - first // _US
        if late <= early:
            return late  # unique, or ambiguous: fold=0 is the first occurrence
        # In a gap: fold=0 (offset before) lands after it; find where the new offset begins.
        before = self._offset_at(early)
        while late - early > 1:
            middle = (early + late) // 2
            if self._offset_at(middle) == before:
                early = middle
            else:
                late = middle
        return late

    def _offset_at(self, us: int) -> timedelta | None:
        return (_EPOCH + timedelta(0, 0, us)).astimezone(self._tz).utcoffset()

    def _week(self, week: int) -> _Week:
        cached = self._weeks.get(week)
        if cached is not None:
            return cached
        first_day = week * 7
        ws, we = self._ws, self._we
        pairs: list[int] = []
        total = 0
        for wday in self._wday_list:
            day = first_day + wday
            if day in self._holset:
                continue
            a, b = self._wall_to_utc(day, ws), self._wall_to_utc(day, we)
            if b > a:
                pairs += (a, b)
                total += b - a
        result = (
            self._wall_to_utc(first_day, 0),
            self._wall_to_utc(first_day + 7, 0),
            total,
            tuple(pairs),
        )
        if len(self._weeks) >= _WEEK_CACHE_MAX:
            self._weeks.clear()
        self._weeks[week] = result
        return result

    def _walk_between(self, start: datetime, a: int, b: int) -> int:
        """Business µs in [a, b) for a <= b; `start` is the datetime of `a`."""
        total = 0
        week = self._local_mday(start) // 7
        while True:
            first, after, week_total, pairs = self._week(week)
            if first >= b:
                return total
            if a <= first and after <= b:
                total += week_total
            else:
                for i in range(0, len(pairs), 2):
                    lo, hi = max(pairs[i], a), min(pairs[i + 1], b)
                    if hi > lo:
                        total += hi - lo
            week += 1

    def _walk_add(self, start: datetime, us: int, delta: int) -> int:
        """UTC µs `delta` business µs after `us` (`start` as a datetime)."""
        week = self._local_mday(start) // 7
        if delta > (datetime.max.replace(tzinfo=UTC) - start) // _US:
            raise OverflowError("date value out of range")
        while True:
            first, after, week_total, pairs = self._week(week)
            week += 1
            if after <= us:
                continue
            if delta and us <= first and week_total < delta:
                delta -= week_total
                continue
            for i in range(0, len(pairs), 2):
                end = pairs[i + 1]
                if end <= us:
                    continue
                begin = max(pairs[i], us)
                if delta <= end - begin:
                    return begin + delta
                delta -= end - begin


def _tz_identity(tz: tzinfo) -> object:
    key = getattr(tz, "key", None)
    if isinstance(tz, ZoneInfo) and isinstance(key, str):
        return ("zone", key)
    return ("tzinfo", tz)


DEFAULT_CALENDAR: Final = BusinessCalendar()
