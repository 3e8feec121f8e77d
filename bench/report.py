"""Benchmark the monthly SLA report over 100,000 tickets with their responses.

Run from the repository root:

    .venv/bin/python bench/report.py [--db sqlite|postgresql|both] [--postgres-url URL]

Target: the text report of a month in which 100,000 tickets were answered (about 150,000
responses: every ticket has a first response, half of them a second one) takes at most 2 s on
SQLite and on PostgreSQL. "The text report" is what `/report 2026-10` and
`supportbot report --month 2026-10` do before the chart: `tickets.reports.monthly.load` (read the
month's responses and the waits open at its end, build the `MonthlyReport`) and render the
text that fits one Telegram message. The chart (`render_png`) is measured on its own: once cold
(the first call in the process imports matplotlib) and then warm; so is the CSV of all rows.

Data: 100,000 tickets, 5,000 customers (20 % Pro), 8 agents, 10 % email. Waits start uniformly
over October 2026 and last 0.05-60 business hours (exponential, mean 7; about 3 % over 24 h),
answered at `calendar.add_hours(start, hours)`, so some answers land in November. 1,000 more
tickets are still waiting, 400 of them past due at the month's end. 1 warm-up report, then 5
timed ones; each reads the database afresh.
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# bench/queue.py shadows the standard library's `queue` (which aiosqlite imports) when this
# directory is first on sys.path, as it is for a script: take it off, put the repository on.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from sqlalchemy import insert  # noqa: E402

from bench.common import (  # noqa: E402
    CpuMeter,
    Database,
    Stats,
    analyze,
    database,
    each_database,
    seed_people,
    table,
    verdict,
)
from bot.reports import telegram_text  # noqa: E402
from tickets.policy import SlaPolicy  # noqa: E402
from tickets.rendering import Templates  # noqa: E402
from tickets.reports import monthly  # noqa: E402
from tickets.reports.chart import render_png  # noqa: E402
from tickets.reports.figures import Month, nearest_rank  # noqa: E402
from tickets.sla import BusinessCalendar  # noqa: E402
from tickets.tables import Message, Response, Ticket  # noqa: E402

TICKETS = 100_000
WAITING = 1_000
CUSTOMERS = 5_000
AGENTS = 8
PRO_SHARE = 0.20
EMAIL_SHARE = 0.10
SECOND_RESPONSE_SHARE = 0.5
CHUNK = 5_000
MONTH = Month(2026, 10)
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)  # October is complete
RUNS = 5
TARGET_S = 2.0


@dataclass(frozen=True)
class Seeded:
    seconds: float
    responses_in_month: int
    p50: float
    p90: float


@dataclass(frozen=True)
class Result:
    kind: str
    seeded: Seeded
    report: Stats
    cpu_per_report_s: float
    text_chars: int
    breaches: int
    chart_cold_s: float
    chart_warm_s: float
    chart_bytes: int
    csv_s: float
    cpu_busy: float | None


def _hours(rng: random.Random) -> float:
    return round(min(60.0, max(0.05, rng.expovariate(1 / 7))), 4)


async def seed(data: Database, policy: SlaPolicy, rng: random.Random) -> Seeded:
    """Bulk-insert customers, agents, tickets, answers and responses; then ANALYZE."""
    began = time.perf_counter()
    calendar = policy.calendar
    start, end = MONTH.start_in(policy.calendar.tz), MONTH.next().start_in(policy.calendar.tz)
    month_us = int((end - start) / timedelta(microseconds=1))
    in_month: list[float] = []
    async with data.sessions.begin() as session:
        customers, agents = await seed_people(
            session, start, rng, customers=CUSTOMERS, agents=AGENTS, pro_share=PRO_SHARE
        )
        tickets: list[dict[str, Any]] = []
        answers: list[tuple[int, str, str, int, datetime, datetime, float]] = []
        for n in range(TICKETS + WAITING):
            customer = rng.choice(customers)
            channel = "email" if rng.random() < EMAIL_SHARE else "telegram"
            since = start + timedelta(microseconds=rng.randrange(month_us))
            ticket: dict[str, Any] = {
                "id": n + 1,
                "customer_id": customer.id,
                "channel": channel,
                "subject": f"Question {n}",
                "status": "open",
                "plan": customer.plan,
                "opened_at": since,
                "updated_at": since,
            }
            if n >= TICKETS:  # still waiting: 40 % of these were due before the month's end
                since = end - timedelta(days=3 if n % 5 < 2 else 0, hours=rng.randrange(1, 20))
                ticket.update(opened_at=since, waiting_since=since, due_at=policy.due_at(since))
            else:
                for _ in range(2 if rng.random() < SECOND_RESPONSE_SHARE else 1):
                    hours = _hours(rng)
                    answered = calendar.add_hours(since, hours)
                    agent = rng.choice(agents)
                    answers.append((n + 1, customer.plan, channel, agent, since, answered, hours))
                    if answered < end:
                        in_month.append(hours)
                    since = answered + timedelta(hours=rng.randrange(1, 48))
            tickets.append(ticket)
        for first in range(0, len(tickets), CHUNK):
            await session.execute(insert(Ticket), tickets[first : first + CHUNK])
        messages = [
            {
                "id": index + 1,
                "ticket_id": ticket_id,
                "direction": "out",
                "channel": channel,
                "author_agent_id": agent,
                "text": "Thanks, it is sorted.",
                "attachments": [],
                "created_at": answered,
                "delivery": "delivered",
                "delivered_at": answered,
            }
            for index, (ticket_id, _, channel, agent, _, answered, _) in enumerate(answers)
        ]
        for first in range(0, len(messages), CHUNK):
            await session.execute(insert(Message), messages[first : first + CHUNK])
        responses = [
            {
                "ticket_id": ticket_id,
                "message_id": index + 1,
                "agent_id": agent,
                "plan": plan,
                "channel": channel,
                "waiting_since": since,
                "answered_at": answered,
                "business_hours": hours,
            }
            for index, (ticket_id, plan, channel, agent, since, answered, hours) in enumerate(
                answers
            )
        ]
        for first in range(0, len(responses), CHUNK):
            await session.execute(insert(Response), responses[first : first + CHUNK])
    if data.kind == "postgresql":  # explicit ids were inserted: move the sequences on
        async with data.engine.begin() as connection:
            for name in ("tickets", "messages"):
                await connection.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                    f"(SELECT max(id) FROM {name}))"
                )
    await analyze(data)
    if data.kind == "postgresql":
        # A month-old table has been vacuumed by autovacuum long since; fresh bulk inserts have
        # not, and without the visibility map PostgreSQL cannot use the covering index alone.
        async with data.engine.connect() as connection:
            auto = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await auto.exec_driver_sql("VACUUM ANALYZE responses")
    in_month.sort()
    return Seeded(
        seconds=time.perf_counter() - began,
        responses_in_month=len(in_month),
        p50=nearest_rank(in_month, 50) or 0.0,
        p90=nearest_rank(in_month, 90) or 0.0,
    )


async def run(kind: str, postgres_url: str) -> Result:
    rng = random.Random(20_261_031)
    policy = SlaPolicy(calendar=BusinessCalendar())
    templates = Templates()
    async with database(kind, postgres_url) as data:
        seeded = await seed(data, policy, rng)
        report, _ = await monthly.load(data.sessions, policy, NOW, MONTH)
        text = telegram_text(templates, report)
        if (report.overall.responses, report.overall.p50, report.overall.p90) != (
            seeded.responses_in_month,
            seeded.p50,
            seeded.p90,
        ):
            raise AssertionError("the report disagrees with the seeded data")
        timings: list[float] = []
        meter = CpuMeter()
        meter.start()
        for _ in range(RUNS):
            began = time.perf_counter()
            report, _ = await monthly.load(data.sessions, policy, NOW, MONTH)
            text = telegram_text(templates, report)
            timings.append(time.perf_counter() - began)
        used = meter.stop()
        busy = used.machine_busy
        began = time.perf_counter()
        png = render_png(report)
        cold = time.perf_counter() - began
        began = time.perf_counter()
        render_png(report)
        warm = time.perf_counter() - began
        began = time.perf_counter()
        _, rows = await monthly.load(data.sessions, policy, NOW, MONTH, rows=True)
        monthly.csv_text(rows, policy)
        csv_s = time.perf_counter() - began
    return Result(
        kind,
        seeded,
        Stats.of(timings),
        used.process_seconds / RUNS,
        len(text),
        report.breaches,
        cold,
        warm,
        len(png),
        csv_s,
        busy,
    )


def report(results: list[Result]) -> None:
    print(
        f"\n{TICKETS:,} answered tickets (+{WAITING:,} still waiting), {CUSTOMERS:,} customers; "
        f"report of {MONTH} (complete), {RUNS} timed runs after 1 warm-up\n"
    )
    print(
        table(
            ["database", "seed s", "responses in month", "p50 h", "p90 h", "breaches"],
            [
                [
                    r.kind,
                    f"{r.seeded.seconds:.0f}",
                    f"{r.seeded.responses_in_month:,}",
                    f"{r.seeded.p50:.2f}",
                    f"{r.seeded.p90:.2f}",
                    f"{r.breaches:,}",
                ]
                for r in results
            ],
        )
    )
    print()
    print(
        table(
            [
                "database",
                "text p50 s",
                "text max s",
                "CPU s/report",
                "machine busy",
                "≤ 2 s",
                "text chars",
            ],
            [
                [
                    r.kind,
                    f"{r.report.p50 / 1000:.2f}",
                    f"{r.report.max / 1000:.2f}",
                    f"{r.cpu_per_report_s:.2f}",
                    "—" if r.cpu_busy is None else f"{100 * r.cpu_busy:.0f} %",
                    verdict(r.report.p50 / 1000 <= TARGET_S),
                    str(r.text_chars),
                ]
                for r in results
            ],
        )
    )
    print()
    print(
        table(
            ["database", "chart cold s", "chart warm s", "PNG KiB", "CSV s (all rows)"],
            [
                [
                    r.kind,
                    f"{r.chart_cold_s:.2f}",
                    f"{r.chart_warm_s:.2f}",
                    f"{r.chart_bytes / 1024:.0f}",
                    f"{r.csv_s:.2f}",
                ]
                for r in results
            ],
        )
    )


if __name__ == "__main__":
    sys.exit(each_database("Benchmark the monthly SLA report over 100,000 tickets.", run, report))
