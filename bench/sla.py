"""Benchmark tickets.sla: BusinessCalendar.add_hours(t, 24) and hours_between calls per second.

Run from the repository root:

    .venv/bin/python bench/sla.py            # table
    .venv/bin/python bench/sla.py --markdown # the same as a markdown section, with the machine

Target: add_hours(t, 24) >= 100,000 calls/s on the default calendar and on a 09:00-17:00
calendar with 20 holidays, for 200,000 start moments spread over a year (precomputed before
timing).  Each figure is the best of 3 runs; it includes the Python loop around the call.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from bench.common import cpu_model  # noqa: E402
from tickets.sla import DEFAULT_CALENDAR, BusinessCalendar  # noqa: E402

TARGET = 100_000
MOMENTS = 200_000
RUNS = 3
HOLIDAYS_2026 = (
    "2026-01-01,2026-01-06,2026-02-16,2026-04-03,2026-04-06,2026-05-01,2026-05-14,"
    "2026-05-25,2026-06-04,2026-07-03,2026-08-14,2026-09-07,2026-10-05,2026-10-26,"
    "2026-11-11,2026-11-26,2026-12-24,2026-12-25,2026-12-28,2026-12-31"
)


def calendars() -> list[tuple[str, BusinessCalendar, bool]]:
    """(label, calendar, whether the target applies)."""
    return [
        ("default: Mon-Fri 00:00-24:00 UTC", DEFAULT_CALENDAR, True),
        (
            "Mon-Fri 09:00-17:00 UTC, 20 holidays",
            BusinessCalendar.from_strings(hours="09:00-17:00", holidays=HOLIDAYS_2026),
            True,
        ),
        (
            "Mon-Fri 09:00-17:00 Europe/Berlin, 20 holidays (DST path, info)",
            BusinessCalendar.from_strings(
                hours="09:00-17:00", holidays=HOLIDAYS_2026, timezone="Europe/Berlin"
            ),
            False,
        ),
    ]


def moments(count: int) -> tuple[list[datetime], list[datetime]]:
    """Start moments spread over 2026 (µs resolution) and ends 0-14 days after each."""
    rng = random.Random(2026)
    year_start = datetime(2026, 1, 1, tzinfo=UTC)
    year_us = (datetime(2027, 1, 1, tzinfo=UTC) - year_start) // timedelta(microseconds=1)
    starts = [year_start + timedelta(microseconds=rng.randrange(year_us)) for _ in range(count)]
    ends = [s + timedelta(microseconds=rng.randrange(14 * 86_400_000_000)) for s in starts]
    return starts, ends


def best_rate(run: Callable[[], None], calls: int) -> float:
    """Calls per second of the fastest of RUNS runs."""
    best = float("inf")
    for _ in range(RUNS):
        began = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - began)
    return calls / best


def measure(
    calendar: BusinessCalendar, starts: Sequence[datetime], ends: Sequence[datetime]
) -> tuple[float, float]:
    add_hours = calendar.add_hours
    hours_between = calendar.hours_between

    def run_add() -> None:
        for start in starts:
            add_hours(start, 24)

    def run_between() -> None:
        for start, end in zip(starts, ends, strict=True):
            hours_between(start, end)

    for start in starts[:2000]:  # sanity: the two operations agree
        assert hours_between(start, add_hours(start, 24)) == 24
    return best_rate(run_add, len(starts)), best_rate(run_between, len(starts))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--markdown", action="store_true", help="print a markdown section")
    args = parser.parse_args()

    starts, ends = moments(MOMENTS)
    rows: list[tuple[str, float, float, str]] = []
    for label, calendar, has_target in calendars():
        add_rate, between_rate = measure(calendar, starts, ends)
        verdict = ("met" if add_rate >= TARGET else "MISSED") if has_target else "n/a"
        rows.append((label, add_rate, between_rate, verdict))

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    machine = (
        f"{cpus} CPUs (nproc), {cpu_model()}, "
        f"{platform.python_implementation()} {platform.python_version()}, {platform.system()}"
    )
    header = ("calendar", "add_hours(t, 24) calls/s", "hours_between calls/s", "≥100k/s target")
    if args.markdown:
        print(f"## SLA calendar (`tickets/sla.py`) — {datetime.now(UTC).date().isoformat()}\n")
        print("Command: `.venv/bin/python bench/sla.py --markdown`  ")
        print(f"Machine: {machine}  ")
        print(f"Workload: {MOMENTS:,} start moments spread over 2026, best of {RUNS} runs.\n")
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join(["---", "---:", "---:", "---"]) + "|")
        for label, add_rate, between_rate, verdict in rows:
            print(f"| {label} | {add_rate:,.0f} | {between_rate:,.0f} | {verdict} |")
    else:
        print(f"machine: {machine}")
        print(f"{MOMENTS:,} start moments over 2026, best of {RUNS} runs\n")
        print(f"{header[0]:<66} {header[1]:>26} {header[2]:>22}  {header[3]}")
        for label, add_rate, between_rate, verdict in rows:
            print(f"{label:<66} {add_rate:>26,.0f} {between_rate:>22,.0f}  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
