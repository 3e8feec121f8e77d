"""Benchmark `/search` (issue 15, point 1): `TicketSearch.search` over 1,000,000 messages.

Run from the repository root:

    .venv/bin/python bench/search.py [--db sqlite|postgresql|both] [--postgres-url URL]

Target: over 1,000,000 messages (100,000 tickets of 10,000 customers, 10 messages each), a search
answers with a p50 of at most 50 ms on SQLite and on PostgreSQL.

The messages are 6-20 words drawn from a 20,000-word vocabulary with Zipf-like frequencies
(exponent 1.1), so a few words are in most messages and most words in few. Seeding is bulk
inserts through the migrated schema: on SQLite the FTS5 triggers index each row as it is written
(as in production); on PostgreSQL the GIN indexes are dropped for the load and built again after
it, as migration 0013 builds them over existing rows. Then ANALYZE.

The timed mix, in one list shuffled (each call its own session, as an agent's `/search`):
40 % a rare word (frequency ranks 5,000-20,000), 30 % a middling word (500-5,000), 10 % two
middling words, 10 % a customer's address, 10 % `#N`. Words of the top 100 ranks (in a third of
the messages or more: stop words, in effect) are timed separately and reported beside the
target, not in it. 20 warm-up calls, then 400 timed calls; the plans are printed after.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py would shadow the standard library's `queue` (which aiosqlite imports) if this
# script's own directory stayed first on sys.path: take it off.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import itertools  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from typing import Any  # noqa: E402

from sqlalchemy import insert, select, text  # noqa: E402

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
from tickets.search import QueryKind, SearchQuery, TicketSearch, parse_query  # noqa: E402
from tickets.tables import CustomerEmail, Message, Ticket  # noqa: E402

MESSAGES = 1_000_000
TICKETS = 100_000
CUSTOMERS = 10_000
VOCABULARY = 20_000
ZIPF = 1.1
CHUNK = 10_000
WARMUP = 20
CALLS = 400
COMMON_CALLS = 40
TARGET_MS = 50.0
AGENT_ID = 500  # seed_people's first agent


def word(rank: int) -> str:
    """The vocabulary's word of a rank: distinct, pronounceable enough, never a number."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    out = ""
    n = rank + 26
    while n:
        n, r = divmod(n, 26)
        out = letters[r] + out
    return "q" + out


@dataclass(frozen=True)
class Result:
    kind: str
    seed_seconds: float
    mix: Stats
    by_class: dict[str, Stats]
    common: Stats
    plans: list[tuple[str, list[str]]]


async def seed(data: Database, now: datetime, rng: random.Random) -> float:
    began = time.perf_counter()
    weights = list(itertools.accumulate(1 / (r + 1) ** ZIPF for r in range(VOCABULARY)))
    words = [word(r) for r in range(VOCABULARY)]
    if data.kind == "postgresql":
        async with data.engine.begin() as connection:
            await connection.execute(text("DROP INDEX ix_messages_search"))
            await connection.execute(text("DROP INDEX ix_tickets_search"))
    async with data.sessions.begin() as session:
        customers, _agents = await seed_people(
            session, now, rng, customers=CUSTOMERS, agents=2, pro_share=0.2
        )
        await session.execute(
            insert(CustomerEmail),
            [{"customer_id": c.id, "address": f"customer{c.id}@example.org"} for c in customers],
        )
        tickets = []
        for n in range(TICKETS):
            customer = customers[n % CUSTOMERS]
            opened = now - timedelta(minutes=TICKETS - n)
            tickets.append(
                {
                    "customer_id": customer.id,
                    "channel": "telegram",
                    "subject": " ".join(rng.choices(words, cum_weights=weights, k=4)),
                    "status": "closed",
                    "plan": customer.plan,
                    "opened_at": opened,
                    "closed_at": opened,
                    "updated_at": opened,
                }
            )
        for start in range(0, TICKETS, CHUNK):
            await session.execute(insert(Ticket), tickets[start : start + CHUNK])
    per_ticket = MESSAGES // TICKETS
    for start in range(0, MESSAGES, CHUNK * 5):
        rows: list[dict[str, Any]] = []
        for m in range(start, min(start + CHUNK * 5, MESSAGES)):
            rows.append(
                {
                    "ticket_id": m // per_ticket + 1,
                    "direction": "in" if m % 2 == 0 else "out",
                    "channel": "telegram",
                    "text": " ".join(rng.choices(words, cum_weights=weights, k=rng.randint(6, 20))),
                    "attachments": [],
                    "counts_for_sla": True,
                    "created_at": now,
                }
            )
        async with data.sessions.begin() as session:
            for part in range(0, len(rows), CHUNK):
                await session.execute(insert(Message), rows[part : part + CHUNK])
    if data.kind == "postgresql":
        async with data.engine.begin() as connection:
            await connection.execute(text("SET maintenance_work_mem = '512MB'"))
            await connection.execute(
                text(
                    "CREATE INDEX ix_messages_search ON messages "
                    "USING gin (to_tsvector('simple', left(text, 100000)))"
                )
            )
            await connection.execute(
                text(
                    "CREATE INDEX ix_tickets_search ON tickets "
                    "USING gin (to_tsvector('simple', subject))"
                )
            )
    await analyze(data)
    return time.perf_counter() - began


def queries(rng: random.Random) -> list[tuple[str, SearchQuery]]:
    def one(cls: str, raw: str) -> tuple[str, SearchQuery]:
        parsed = parse_query(raw)
        assert parsed is not None
        return cls, parsed

    mix = []
    for n in range(WARMUP + CALLS):
        pick = n % 10
        if pick < 4:
            mix.append(one("rare word", word(rng.randrange(5_000, VOCABULARY))))
        elif pick < 7:
            mix.append(one("middling word", word(rng.randrange(500, 5_000))))
        elif pick == 7:
            pair = f"{word(rng.randrange(500, 5_000))} {word(rng.randrange(500, 5_000))}"
            mix.append(one("two words", pair))
        elif pick == 8:
            mix.append(one("address", f"customer{rng.randrange(1, CUSTOMERS)}@example.org"))
        else:
            mix.append(one("#N", f"#{rng.randrange(1, TICKETS)}"))
    rng.shuffle(mix)
    return mix


async def timed(search: TicketSearch, query: SearchQuery) -> float:
    began = time.perf_counter()
    await search.search(query, AGENT_ID)
    return time.perf_counter() - began


async def run(kind: str, postgres_url: str) -> Result:
    rng = random.Random(15_001)
    now = datetime.now(UTC).replace(microsecond=0)
    async with database(kind, postgres_url) as data:
        seconds = await seed(data, now, rng)
        agent = AGENT_ID
        search = TicketSearch(data.sessions)
        # the first answer is checked against a plain scan of what the seed wrote
        probe = word(7_000)
        found = [t.number for t in await search.search(SearchQuery(QueryKind.TEXT, probe), agent)]
        async with data.sessions() as session:
            texts = (
                await session.execute(
                    select(Message.ticket_id, Message.text)
                    .where(Message.text.like(f"%{probe}%"))
                    .order_by(Message.ticket_id.desc())
                )
            ).all()
            subjects = (
                await session.execute(select(Ticket.id).where(Ticket.subject.like(f"%{probe}%")))
            ).all()
        expected = {t for t, body in texts if probe in body.split()} | {t for (t,) in subjects}
        if found != sorted(expected, reverse=True)[:10]:
            raise AssertionError(f"search disagrees with a scan: {found} vs {sorted(expected)}")

        mix = queries(rng)
        timings: dict[str, list[float]] = {}
        everything: list[float] = []
        for n, (cls, query) in enumerate(mix):
            elapsed = await timed(search, query)
            if n >= WARMUP:
                timings.setdefault(cls, []).append(elapsed)
                everything.append(elapsed)
        common = [
            await timed(search, SearchQuery(QueryKind.TEXT, word(rng.randrange(0, 100))))
            for _ in range(COMMON_CALLS)
        ]
        plans = await explain(data, word(9_000))
    return Result(
        kind,
        seconds,
        Stats.of(everything),
        {k: Stats.of(v) for k, v in sorted(timings.items())},
        Stats.of(common),
        plans,
    )


async def explain(data: Database, probe: str) -> list[tuple[str, list[str]]]:
    if data.kind == "sqlite":
        sql = (
            "SELECT m.ticket_id FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid "
            f"WHERE messages_fts MATCH '\"{probe}\"' ORDER BY messages_fts.rowid DESC LIMIT 200"
        )
        prefix = "EXPLAIN QUERY PLAN "
    else:
        sql = (
            "SELECT ticket_id FROM messages WHERE to_tsvector('simple', left(text, 100000)) "
            f"@@ plainto_tsquery('simple', '{probe}') ORDER BY id DESC LIMIT 200"
        )
        prefix = "EXPLAIN (ANALYZE, BUFFERS) "
    async with data.engine.connect() as connection:
        rows = (await connection.exec_driver_sql(prefix + sql)).all()
    return [(sql, [" | ".join(str(c) for c in row) for row in rows])]


def report(results: list[Result]) -> None:
    print(
        f"\n{MESSAGES:,} messages in {TICKETS:,} tickets of {CUSTOMERS:,} customers; "
        f"{CALLS} timed searches after {WARMUP} warm-up searches\n"
    )
    rows = []
    for r in results:
        rows.append(
            [
                r.kind,
                "the mix",
                f"{r.mix.count}",
                f"{r.mix.p50:.2f}",
                f"{r.mix.p90:.2f}",
                f"{r.mix.p99:.2f}",
                f"{r.mix.max:.2f}",
                verdict(r.mix.p50 <= TARGET_MS),
            ]
        )
        for cls, s in [*r.by_class.items(), ("(top-100 word, not in the mix)", r.common)]:
            rows.append(
                [
                    r.kind,
                    cls,
                    f"{s.count}",
                    f"{s.p50:.2f}",
                    f"{s.p90:.2f}",
                    f"{s.p99:.2f}",
                    f"{s.max:.2f}",
                    "",
                ]
            )
    print(
        table(
            ["database", "queries", "n", "p50 ms", "p90 ms", "p99 ms", "max ms", "p50 ≤ 50 ms"],
            rows,
        )
    )
    print()
    print(
        table(
            ["database", "seed + index + ANALYZE s"],
            [[r.kind, f"{r.seed_seconds:.0f}"] for r in results],
        )
    )
    for r in results:
        for sql, lines in r.plans:
            print(f"\n{r.kind}: {sql}")
            for line in lines:
                print("    " + line)


if __name__ == "__main__":
    sys.exit(each_database("Benchmark /search over 1,000,000 messages.", run, report))
