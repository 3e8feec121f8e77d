"""Benchmark what the operator's port and retention cost (issue 14, points 2 and 3).

Run from the repository root:

    .venv/bin/python bench/retention.py [--db sqlite|postgresql|both] [--postgres-url URL]

Seeded: 100,000 waiting tickets (a fifth Pro, due times spread over two weeks around "now"),
200,000 outbox rows (150,000 delivered 40 days ago, 40,000 delivered yesterday, 10,000 pending)
and 200,000 inbound dedup keys (150,000 of them 40 days old).

* **A `/metrics` scrape's database part** (`tickets.vitals.read_vitals`: the four aggregates),
  100 calls after 5 warm-up calls. Target: p50 ≤ 100 ms, so a scrape every 15 s costs well under
  1 % of a core.
* **One retention pass** (`tickets.retention.prune_once`, 1,000 rows per statement, the
  production pause of 50 ms between statements): rows forgotten per second, and the longest
  single statement (how long it can hold up other writers on SQLite). Target: the 300,000 old
  rows go in one pass of under 5 minutes, no statement over 1 s.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

# bench/queue.py shadows the standard library's `queue` (which aiosqlite imports) when this
# directory is first on sys.path, as it is for a script run from it: take it off.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import random  # noqa: E402

from sqlalchemy import event, insert  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker  # noqa: E402

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
from tickets.policy import SlaPolicy  # noqa: E402
from tickets.retention import Pruned, prune_once  # noqa: E402
from tickets.sla import BusinessCalendar  # noqa: E402
from tickets.tables import InboundKey, OutboxRow, Ticket  # noqa: E402
from tickets.vitals import read_vitals  # noqa: E402

TICKETS = 100_000
OUTBOX = (150_000, 40_000, 10_000)  # delivered long ago, delivered lately, pending
KEYS = (150_000, 50_000)  # old, young
SCRAPES = 100
SCRAPE_TARGET_MS = 100.0
PASS_TARGET_S = 300.0
STATEMENT_TARGET_S = 1.0
CHUNK = 10_000


@dataclass(frozen=True)
class Result:
    kind: str
    scrape: Stats
    pruned: Pruned
    pass_seconds: float
    longest_statement: float


async def seed(data: Database, now: datetime, rng: random.Random) -> None:
    sessions = data.sessions
    async with sessions.begin() as session:
        people, _ = await seed_people(session, now, rng, customers=5_000, agents=2, pro_share=0.2)
    rows = []
    for n in range(TICKETS):
        customer, plan = people[n % len(people)]
        due = now + timedelta(hours=rng.uniform(-7 * 24, 7 * 24))
        rows.append(
            {
                "customer_id": customer,
                "channel": "telegram",
                "subject": "",
                "status": "open",
                "plan": plan,
                "waiting_since": due - timedelta(days=1),
                "due_at": due,
                "opened_at": due - timedelta(days=1),
                "updated_at": due - timedelta(days=1),
            }
        )
    await _insert(sessions, Ticket, rows)
    old, recent, pending = OUTBOX
    rows = []
    for n in range(old + recent + pending):
        done = n < old + recent
        at = now - timedelta(days=40 if n < old else 1, seconds=n % 3600)
        rows.append(
            {
                "route": ("telegram", "agents", "email")[n % 3],
                "recipient": str(n % 5000),
                "kind": "receipt",
                "payload": {"text": "Your ticket number is 1"},
                "status": "delivered" if done else "pending",
                "attempts": 1 if done else 0,
                "available_at": at,
                "created_at": at,
                "delivered_at": at if done else None,
            }
        )
    await _insert(sessions, OutboxRow, rows)
    rows = [
        {
            "source": "telegram",
            "key": f"{n % 5000}:{n}",
            "received_at": now - timedelta(days=40 if n < KEYS[0] else 1),
        }
        for n in range(sum(KEYS))
    ]
    await _insert(sessions, InboundKey, rows)
    await analyze(data)


async def _insert(
    sessions: async_sessionmaker[AsyncSession], model: type, rows: list[dict[str, object]]
) -> None:
    for start in range(0, len(rows), CHUNK):
        async with sessions.begin() as session:
            await session.execute(insert(model), rows[start : start + CHUNK])


async def run(kind: str, postgres_url: str) -> Result:
    now = datetime(2026, 12, 8, 12, 0, tzinfo=UTC)
    rng = random.Random(14)
    policy = SlaPolicy(calendar=BusinessCalendar())
    async with database(kind, postgres_url) as data:
        await seed(data, now, rng)
        for _ in range(5):
            await read_vitals(data.sessions, policy, now)
        times = []
        for _ in range(SCRAPES):
            started = time.perf_counter()
            vitals = await read_vitals(data.sessions, policy, now)
            times.append(time.perf_counter() - started)
        assert sum(vitals.waiting.values()) == TICKETS
        longest = 0.0
        starts: dict[int, float] = {}

        @event.listens_for(data.engine.sync_engine, "before_cursor_execute")
        def before(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
            starts[id(cursor)] = time.perf_counter()

        @event.listens_for(data.engine.sync_engine, "after_cursor_execute")
        def after(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
            nonlocal longest
            if statement.lstrip().upper().startswith("DELETE"):
                longest = max(longest, time.perf_counter() - starts.pop(id(cursor), 0.0))

        started = time.perf_counter()
        pruned = await prune_once(data.sessions, now=now)
        seconds = time.perf_counter() - started
    assert (pruned.outbox, pruned.inbound_keys) == (OUTBOX[0], KEYS[0]), pruned
    return Result(kind, Stats.of(times), pruned, seconds, longest)


def report(results: list[Result]) -> None:
    print(f"\n{TICKETS:,} waiting tickets; /metrics' database reads, {SCRAPES} calls\n")
    print(
        table(
            ["database", "p50 ms", "p90 ms", "p99 ms", "max ms", f"p50 ≤ {SCRAPE_TARGET_MS:g} ms"],
            [
                [
                    r.kind,
                    f"{r.scrape.p50:.1f}",
                    f"{r.scrape.p90:.1f}",
                    f"{r.scrape.p99:.1f}",
                    f"{r.scrape.max:.1f}",
                    verdict(r.scrape.p50 <= SCRAPE_TARGET_MS),
                ]
                for r in results
            ],
        )
    )
    print(f"\none retention pass: {OUTBOX[0]:,} old outbox rows and {KEYS[0]:,} old keys\n")
    print(
        table(
            [
                "database",
                "outbox",
                "keys",
                "pass s",
                "rows/s",
                "longest DELETE ms",
                "target",
            ],
            [
                [
                    r.kind,
                    f"{r.pruned.outbox:,}",
                    f"{r.pruned.inbound_keys:,}",
                    f"{r.pass_seconds:.1f}",
                    f"{r.pruned.total / r.pass_seconds:,.0f}",
                    f"{r.longest_statement * 1000:.0f}",
                    verdict(
                        r.pass_seconds <= PASS_TARGET_S
                        and r.longest_statement <= STATEMENT_TARGET_S
                    ),
                ]
                for r in results
            ],
        )
    )


if __name__ == "__main__":
    sys.exit(each_database("Benchmark /metrics' database reads and a retention pass.", run, report))
