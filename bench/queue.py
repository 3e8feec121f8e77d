"""Benchmark the agents' queue: `tickets.queue.top(session, policy, now, 20)` over 100,000 tickets.

Run from the repository root:

    .venv/bin/python bench/queue.py [--db sqlite|postgresql|both] [--postgres-url URL]

Target: with 100,000 open waiting tickets (about 20 % Pro, due times spread uniformly over the
two weeks around "now", so some are breached and some at risk), the top-20 queue answers with a
p50 of at most 20 ms on SQLite and on PostgreSQL.

Each call runs in its own transaction (`sessions.begin()`), as an agent's `/queue` or
`supportbot tickets list --status waiting` does, so the time includes taking a pooled
connection, BEGIN, the band queries, building the entries and COMMIT. 10 warm-up calls, then
200 timed calls, with `now` moving on by 1-2 s between calls. The plans of the three band queries
(EXPLAIN QUERY PLAN on SQLite, EXPLAIN (ANALYZE, BUFFERS) on PostgreSQL) are printed after the
figures.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the standard library's `queue`, which asyncio and aiosqlite import. Run
# as a script, its own directory would come first on sys.path and shadow it: take it off.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import random  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator, Sequence  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from typing import Any  # noqa: E402

from sqlalchemy import Select, event, insert, select  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncConnection  # noqa: E402

from bench.common import (  # noqa: E402
    Database,
    Stats,
    analyze,
    database,
    each_database,
    seed_people,
    table,
    verdict,
)
from tickets import queue  # noqa: E402
from tickets.model import Plan  # noqa: E402
from tickets.policy import SlaPolicy, queue_key  # noqa: E402
from tickets.sla import BusinessCalendar  # noqa: E402
from tickets.tables import Ticket  # noqa: E402

TICKETS = 100_000
CUSTOMERS = 5_000
AGENTS = 8
PRO_SHARE = 0.20
CLAIMED_SHARE = 0.15
EMAIL_SHARE = 0.10
SPREAD = timedelta(days=7)  # due times in [now - 7 days, now + 7 days)
CHUNK = 5_000
LIMIT = 20
WARMUP = 10
CALLS = 200
TARGET_MS = 20.0


@dataclass(frozen=True)
class Seeded:
    seconds: float
    breached: int
    at_risk: int
    pro_on_track: int
    basic_on_track: int
    expected_top: list[int]  # the reference order's first LIMIT tickets at `now`


@dataclass(frozen=True)
class Result:
    kind: str
    seeded: Seeded
    stats: Stats
    statements_per_call: float
    plans: list[tuple[str, str, list[str]]]  # (band, SQL, plan lines)


async def seed(data: Database, policy: SlaPolicy, now: datetime, rng: random.Random) -> Seeded:
    """Bulk-insert the customers, agents and tickets; then ANALYZE."""
    began = time.perf_counter()
    async with data.sessions.begin() as session:
        customers, agents = await seed_people(
            session, now, rng, customers=CUSTOMERS, agents=AGENTS, pro_share=PRO_SHARE
        )
        span = int(2 * SPREAD / timedelta(microseconds=1))
        rows: list[dict[str, Any]] = []
        for n in range(TICKETS):
            customer = rng.choice(customers)
            due = now - SPREAD + timedelta(microseconds=rng.randrange(span))
            # Roughly 24 business hours before the due time; the queue reads only due_at.
            waiting = due - timedelta(hours=24)
            rows.append(
                {
                    "customer_id": customer.id,
                    "channel": "email" if rng.random() < EMAIL_SHARE else "telegram",
                    "subject": f"Question {n} about the invoice",
                    "status": "open",
                    "plan": customer.plan,
                    "assignee_id": rng.choice(agents) if rng.random() < CLAIMED_SHARE else None,
                    "waiting_since": waiting,
                    "due_at": due,
                    "opened_at": waiting - timedelta(hours=rng.randrange(0, 72)),
                    "updated_at": waiting,
                }
            )
        for start in range(0, len(rows), CHUNK):
            await session.execute(insert(Ticket), rows[start : start + CHUNK])
    await analyze(data)
    seconds = time.perf_counter() - began

    async with data.sessions() as session:
        tickets = (await session.execute(select(Ticket.id, Ticket.plan, Ticket.due_at))).all()
    cutoff = policy.risk_cutoff(now)
    breached = sum(1 for t in tickets if t.due_at <= now)
    at_risk = sum(1 for t in tickets if now < t.due_at <= cutoff)
    pro = sum(1 for t in tickets if t.due_at > cutoff and t.plan == Plan.PRO.value)
    reference = sorted(tickets, key=lambda t: queue_key(policy, Plan(t.plan), t.due_at, t.id, now))
    return Seeded(
        seconds=seconds,
        breached=breached,
        at_risk=at_risk,
        pro_on_track=pro,
        basic_on_track=len(tickets) - breached - at_risk - pro,
        expected_top=[t.id for t in reference[:LIMIT]],
    )


@contextmanager
def capture(data: Database) -> Iterator[list[tuple[str, Any]]]:
    """The SELECT statements (SQL, driver parameters) the engine sends while inside."""
    seen: list[tuple[str, Any]] = []

    def listener(
        _conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool
    ) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(data.engine.sync_engine, "before_cursor_execute", listener)
    try:
        yield seen
    finally:
        event.remove(data.engine.sync_engine, "before_cursor_execute", listener)


async def measure(
    data: Database, policy: SlaPolicy, now: datetime, seeded: Seeded, rng: random.Random
) -> tuple[Stats, float]:
    """Time WARMUP + CALLS calls of queue.top, each in its own transaction."""
    async with data.sessions.begin() as session:
        first = await queue.top(session, policy, now, LIMIT)
    if [e.ticket for e in first] != seeded.expected_top:
        raise AssertionError("queue.top disagrees with the reference order (policy.queue_key)")

    timings: list[float] = []
    moment = now
    with capture(data) as statements:
        for call in range(WARMUP + CALLS):
            moment += timedelta(seconds=1 + rng.random())
            began = time.perf_counter()
            async with data.sessions.begin() as session:
                entries = await queue.top(session, policy, moment, LIMIT)
            elapsed = time.perf_counter() - began
            if len(entries) != LIMIT:
                raise AssertionError(f"queue.top returned {len(entries)} entries")
            if call == WARMUP - 1:
                statements.clear()
            if call >= WARMUP:
                timings.append(elapsed)
    return Stats.of(timings), len(statements) / CALLS


def band_queries(policy: SlaPolicy, now: datetime) -> list[Select[Ticket, str, str | None]]:
    """The three band queries exactly as `tickets.queue.top` builds them (checked in `plans`)."""
    cutoff = policy.risk_cutoff(now)
    waiting = Ticket.due_at.is_not(None)
    bands = [
        queue._queue_select().where(waiting, Ticket.due_at <= cutoff),
        queue._queue_select().where(waiting, Ticket.due_at > cutoff, Ticket.plan == Plan.PRO.value),
        queue._queue_select().where(waiting, Ticket.due_at > cutoff, Ticket.plan != Plan.PRO.value),
    ]
    return [band.order_by(Ticket.due_at, Ticket.id).limit(LIMIT) for band in bands]


async def explain(connection: AsyncConnection, kind: str, sql: str, params: Any) -> list[str]:
    if kind == "sqlite":
        rows = (await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params)).all()
        depth: dict[int, int] = {0: 0}
        lines = []
        for row in rows:
            node, parent, _notused, detail = tuple(row)
            depth[node] = depth.get(parent, 0) + 1
            lines.append("  " * (depth[node] - 1) + str(detail))
        return lines
    rows = (await connection.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", params)).all()
    return [str(row[0]) for row in rows]


async def plans(
    data: Database, policy: SlaPolicy, now: datetime
) -> list[tuple[str, str, list[str]]]:
    """EXPLAIN each band query; band 0 is the one `queue.top` sent, captured from the driver."""
    with capture(data) as sent:
        async with data.sessions.begin() as session:
            await queue.top(session, policy, now, LIMIT)
    with capture(data) as built:
        async with data.sessions.begin() as session:
            for band in band_queries(policy, now):
                await session.execute(band)
    if sent[0][0] != built[0][0]:
        raise AssertionError("the benchmark's band queries no longer match tickets.queue.top")
    names = ["0: breached or at risk", "1: Pro", "2: everyone else"]
    result = []
    async with data.engine.connect() as connection:
        for name, (sql, params) in zip(names, built, strict=True):
            result.append((name, sql, await explain(connection, data.kind, sql, params)))
        await connection.rollback()
    return result


async def run(kind: str, postgres_url: str) -> Result:
    rng = random.Random(20_000)
    policy = SlaPolicy(calendar=BusinessCalendar())
    now = datetime.now(UTC).replace(microsecond=0)
    async with database(kind, postgres_url) as data:
        seeded = await seed(data, policy, now, rng)
        stats, statements = await measure(data, policy, now, seeded, rng)
        explained = await plans(data, policy, now)
    return Result(kind, seeded, stats, statements, explained)


def report(results: Sequence[Result]) -> None:
    print(
        f"\n{TICKETS:,} open waiting tickets, {CUSTOMERS:,} customers; "
        f"top {LIMIT}, {CALLS} calls after {WARMUP} warm-up calls, each in its own transaction\n"
    )
    print(
        table(
            ["database", "seed+ANALYZE s", "breached", "at risk", "Pro later", "Basic later"],
            [
                [
                    r.kind,
                    f"{r.seeded.seconds:.1f}",
                    f"{r.seeded.breached:,}",
                    f"{r.seeded.at_risk:,}",
                    f"{r.seeded.pro_on_track:,}",
                    f"{r.seeded.basic_on_track:,}",
                ]
                for r in results
            ],
        )
    )
    print()
    print(
        table(
            ["database", "p50 ms", "p90 ms", "p99 ms", "max ms", "SELECTs/call", "p50 ≤ 20 ms"],
            [
                [
                    r.kind,
                    f"{r.stats.p50:.2f}",
                    f"{r.stats.p90:.2f}",
                    f"{r.stats.p99:.2f}",
                    f"{r.stats.max:.2f}",
                    f"{r.statements_per_call:g}",
                    verdict(r.stats.p50 <= TARGET_MS),
                ]
                for r in results
            ],
        )
    )
    for r in results:
        for band, sql, lines in r.plans:
            print(f"\n{r.kind}, band {band}:")
            print("    " + " ".join(sql.split()))
            for line in lines:
                print("    " + line)


if __name__ == "__main__":
    sys.exit(
        each_database("Benchmark tickets.queue.top over 100,000 waiting tickets.", run, report)
    )
