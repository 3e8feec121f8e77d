"""A calendar month's uptime, from a figure, a file of 1-minute checks, or an Instatus export.

Everything here is pure: callers read the files and pass their text in. Parsing refuses a bad
file as a whole with an `UptimeError` that names the file and the line (or JSON field), so a
broken export can never credit anyone.

How the figure is computed (README, "SLA credits"):

* The month is [1st 00:00 UTC, next 1st 00:00 UTC).
* Checks file: each minute of the month is one slot. A minute is *up* when it has at least one
  check and every check in it is ok, *down* when a check in it failed, and *unobserved* when it
  has no check at all; unobserved minutes count as down (the service must show it was up).
  Minutes whose start lies in a maintenance window are left out of the month entirely.
* Instatus: every incident that is not merely degraded performance is downtime from `started`
  to `resolved` (or to the month's end while unresolved); maintenances that took place are left
  out of the month, and so is any downtime inside them.
* uptime = up / (month − maintenance), truncated to 4 decimals (so a figure below 99.5 % is
  never shown as 99.5 %); a month that is all maintenance is 100 %.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

from tickets.errors import SupportbotError
from tickets.months import InvalidMonth, Month

PLACES = Decimal("0.0001")
MINUTE = timedelta(minutes=1)
OK_WORDS = {"1": True, "ok": True, "up": True, "true": True, "0": False, "down": False}
OK_WORDS |= {"fail": False, "false": False}
# Instatus impacts that are not an outage; anything else (or none given) is downtime.
NOT_DOWN = frozenset({"OPERATIONAL", "DEGRADEDPERFORMANCE", "UNDERMAINTENANCE"})
# Instatus maintenance statuses of a window that took (or is taking) place.
HAPPENED = frozenset({"INPROGRESS", "COMPLETED"})


class UptimeError(SupportbotError):
    """Uptime data that cannot be used; the message names the file and the line or field."""


def credit_month(text: str) -> Month:
    """`YYYY-MM`, as the credits command takes it; anything else is an `UptimeError`."""
    try:
        return Month.parse(text)
    except InvalidMonth:
        raise UptimeError(f"expected a month as YYYY-MM, such as 2026-03, got {text!r}") from None


@dataclass(frozen=True)
class Window:
    """A span of time [start, end): a maintenance window or an incident."""

    start: datetime
    end: datetime


@dataclass(frozen=True)
class Check:
    """One result of the 1-minute availability check."""

    at: datetime
    ok: bool


@dataclass(frozen=True)
class Uptime:
    """A month's uptime and how it was arrived at."""

    percent: Decimal
    source: str
    detail: str = ""
    # False when the data does not reach the month's end yet (the automatic run waits).
    complete: bool = True

    def below(self, promise: Decimal) -> bool:
        """Whether the month fell short of the promise."""
        return self.percent < promise


def given(text: str) -> Uptime:
    """An uptime typed by an operator, a percentage from 0 to 100."""
    try:
        percent = Decimal(text.strip().removesuffix("%"))
    except InvalidOperation:
        raise UptimeError(f"expected an uptime percentage such as 99.3, got {text!r}") from None
    if not percent.is_finite() or not 0 <= percent <= 100:
        raise UptimeError(f"expected an uptime percentage from 0 to 100, got {text!r}")
    return Uptime(percent=percent, source="given")


def _percent(up: int, measured: int) -> Decimal:
    if measured <= 0:
        return Decimal(100)
    exact = Fraction(up * 100, measured)
    return (Decimal(exact.numerator) / Decimal(exact.denominator)).quantize(
        PLACES, rounding=ROUND_DOWN
    )


def parse_time(raw: str) -> datetime:
    """ISO 8601 with an offset or `Z`; a time without one is read as UTC."""
    value = datetime.fromisoformat(raw.strip())
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _rows(text: str, source: str, header: Sequence[str]) -> Iterable[tuple[int, list[str]]]:
    """CSV rows with their line numbers; blank lines, `#` comments and a header line skipped."""
    lines = text.splitlines()
    for number, row in zip(range(1, len(lines) + 1), csv.reader(lines), strict=True):
        cells = [cell.strip() for cell in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if [c.lower() for c in cells] == list(header):
            continue
        if len(cells) != len(header):
            raise UptimeError(
                f"{source} line {number}: expected {len(header)} fields "
                f"({','.join(header)}), got {len(cells)}"
            )
        yield number, cells


def _time_field(source: str, number: int, name: str, raw: str) -> datetime:
    try:
        return parse_time(raw)
    except ValueError:
        raise UptimeError(
            f"{source} line {number}: {name} {raw!r} is not an ISO 8601 time "
            "such as 2026-03-01T00:00:00Z"
        ) from None


def parse_checks(text: str, source: str = "checks file") -> list[Check]:
    """The CSV `timestamp,ok` lines of a 1-minute checker (ok: 1/0, true/false, up/down)."""
    checks = []
    for number, (stamp, ok) in _rows(text, source, ("timestamp", "ok")):
        at = _time_field(source, number, "timestamp", stamp)
        if ok.lower() not in OK_WORDS:
            raise UptimeError(
                f"{source} line {number}: ok {ok!r} is not one of 1/0, true/false, up/down, ok/fail"
            )
        checks.append(Check(at, OK_WORDS[ok.lower()]))
    return checks


def parse_windows(text: str, source: str = "maintenance file") -> list[Window]:
    """The CSV `start,end` lines of a maintenance file; each window must end after it starts."""
    windows = []
    for number, (start_raw, end_raw) in _rows(text, source, ("start", "end")):
        start = _time_field(source, number, "start", start_raw)
        end = _time_field(source, number, "end", end_raw)
        if end <= start:
            raise UptimeError(f"{source} line {number}: the window ends before it starts")
        windows.append(Window(start, end))
    return windows


def from_checks(
    checks: Sequence[Check],
    month: Month,
    maintenance: Sequence[Window] = (),
    *,
    source: str = "checks file",
) -> Uptime:
    """The month's uptime from 1-minute checks, maintenance minutes left out, gaps counted down."""
    start, end = month.start, month.end
    minutes = (end - start) // MINUTE
    status: dict[int, bool] = {}
    latest: datetime | None = None
    for check in checks:
        if not start <= check.at < end:
            continue
        slot = (check.at - start) // MINUTE
        status[slot] = status.get(slot, True) and check.ok
        latest = check.at if latest is None or check.at > latest else latest
    if latest is None:
        raise UptimeError(f"{source} has no check in {month}")
    excluded = {
        slot
        for window in maintenance
        for slot in _slots(window, start, minutes)  # minutes starting inside the window
    }
    measured = minutes - len(excluded)
    up = sum(1 for slot, ok in status.items() if ok and slot not in excluded)
    down = sum(1 for slot, ok in status.items() if not ok and slot not in excluded)
    unobserved = measured - up - down
    detail = (
        f"{up:,} of {measured:,} minutes up; {down:,} down; {unobserved:,} without a check "
        f"counted as down; {len(excluded):,} maintenance minutes left out"
    )
    return Uptime(
        percent=_percent(up, measured),
        source=source,
        detail=detail,
        complete=latest >= end - MINUTE,
    )


def _slots(window: Window, start: datetime, minutes: int) -> range:
    first = max(0, -((start - window.start) // MINUTE))  # ceil((window.start - start) / minute)
    last = min(minutes, -((start - window.end) // MINUTE))
    return range(first, max(first, last))


def _field(where: str, item: dict[str, Any], name: str, *, optional: bool = False) -> Any:
    if name not in item or item[name] is None:
        if optional:
            return None
        raise UptimeError(f"{where}.{name} is missing")
    return item[name]


def _instatus_time(where: str, item: dict[str, Any], name: str, optional: bool = False) -> Any:
    raw = _field(where, item, name, optional=optional)
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise UptimeError(f"{where}.{name} must be an ISO 8601 time string, got {raw!r}")
    try:
        return parse_time(raw)
    except ValueError:
        raise UptimeError(f"{where}.{name} {raw!r} is not an ISO 8601 time") from None


def parse_instatus(text: str, source: str = "Instatus export") -> tuple[list[Window], list[Window]]:
    """Incidents (downtime) and maintenances that took place, from an Instatus-style export.

    The export is `{"incidents": [...], "maintenances": [...]}` as Instatus's API lists them
    (`GET /v1/:page_id/incidents`, `GET /v1/:page_id/maintenances`), or just the incidents list.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise UptimeError(
            f"{source} line {error.lineno} column {error.colno}: not JSON ({error.msg})"
        ) from None
    if isinstance(data, list):
        data = {"incidents": data}
    if not isinstance(data, dict):
        raise UptimeError(f"{source}: expected an object with incidents and maintenances")
    incidents: list[Window] = []
    for where, item in _items(data, "incidents", source):
        started = _instatus_time(where, item, "started")
        resolved = _instatus_time(where, item, "resolved", optional=True)
        impact = str(item.get("impact") or "").upper()
        if resolved is not None and resolved < started:
            raise UptimeError(f"{where}.resolved is before its start")
        if impact in NOT_DOWN:
            continue
        incidents.append(Window(started, resolved or datetime.max.replace(tzinfo=UTC)))
    maintenances: list[Window] = []
    for where, item in _items(data, "maintenances", source):
        start = _instatus_time(where, item, "start")
        duration = _field(where, item, "duration")
        try:
            minutes = int(duration)
        except (TypeError, ValueError):
            raise UptimeError(f"{where}.duration {duration!r} is not a number of minutes") from None
        if minutes < 0:
            raise UptimeError(f"{where}.duration must not be negative")
        if str(item.get("status") or "").upper() in HAPPENED:
            maintenances.append(Window(start, start + timedelta(minutes=minutes)))
    return incidents, maintenances


def _items(data: dict[str, Any], key: str, source: str) -> Iterable[tuple[str, dict[str, Any]]]:
    listed = data.get(key) or []
    if not isinstance(listed, list):
        raise UptimeError(f"{source}: {key} must be a list")
    for index, item in enumerate(listed):
        where = f"{source}: {key}[{index}]"
        if not isinstance(item, dict):
            raise UptimeError(f"{where} must be an object")
        yield where, item


def from_incidents(
    incidents: Sequence[Window],
    month: Month,
    maintenance: Sequence[Window] = (),
    *,
    source: str = "Instatus export",
) -> Uptime:
    """The month's uptime from incident spans, to the second, maintenance left out."""
    start, end = month.start, month.end
    total = int((end - start).total_seconds())
    held = _union(maintenance, start, end)
    outages = _union(incidents, start, end)
    maintenance_s = _length(held)
    down_s = _length(outages) - _overlap(outages, held)
    measured = total - maintenance_s
    detail = (
        f"{len(outages)} outage span(s), {_minutes(down_s)} down; "
        f"{_minutes(maintenance_s)} of maintenance left out"
    )
    return Uptime(
        percent=_percent(measured - down_s, measured), source=source, detail=detail, complete=True
    )


def _minutes(seconds: int) -> str:
    return f"{Decimal(seconds) / 60:.1f} min"


def _union(windows: Iterable[Window], start: datetime, end: datetime) -> list[tuple[int, int]]:
    """Merged spans clipped to [start, end), in seconds from `start`."""
    spans = sorted(
        (
            max(0, int((w.start - start).total_seconds())),
            int((min(w.end, end) - start).total_seconds()),
        )
        for w in windows
        if w.end > start and w.start < end
    )
    merged: list[tuple[int, int]] = []
    for low, high in spans:
        if merged and low <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        elif high > low:
            merged.append((low, high))
    return merged


def _length(spans: Iterable[tuple[int, int]]) -> int:
    return sum(high - low for low, high in spans)


def _overlap(a: Sequence[tuple[int, int]], b: Sequence[tuple[int, int]]) -> int:
    return sum(max(0, min(ah, bh) - max(al, bl)) for al, ah in a for bl, bh in b)
