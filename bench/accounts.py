"""Benchmark balance lookups over 100,000 accounts and 1,000,000 ledger entries.

Run from the repository root:

    .venv/bin/python bench/accounts.py [--db sqlite|postgresql|both] [--postgres-url URL]

Targets, on SQLite and on PostgreSQL:

* **balance lookup p50 ≤ 5 ms**, measured through `Billing.lookup` as the bot calls it (the
  built-in `LedgerBilling`: the account by address, balance and this month's spend in one pass
  over its entries, and its last five payments), for random accounts. The whole agent command
  behind `/balance EMAIL` (`BalanceLookups.for_agent`: the agent check, the lookup, the audit
  entry's INSERT and COMMIT, the template) is reported beside it.
* **eligibility for an account with 10,000 entries ≤ 50 ms**: the input-gathering half — the
  balance and the account's recent payments, read through the port for the busy account
  (`LedgerBilling.lookup`), which is what the refund eligibility rule takes. The rule itself is
  pure arithmetic over those inputs (`accounts/refund_rules.py`).

The data: 100,000 accounts (20 % Pro); one of them has 10,000 entries (200 top-ups over 90
days, 15 of them in the last 7 days, and 9,800 usage entries); the other 99,999 share 990,000
entries (two top-ups each, the rest usage, spread over 90 days). Each call runs in its own
session. 20 warm-up calls, then 500 timed lookups and 200 timed eligibility reads. The plan of
the lookup's one statement is printed after the figures. `BENCH_ACCOUNTS` and `BENCH_ENTRIES`
shrink the data for a quick check of the script (such figures measure nothing).
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

# Run as a script, this file's own directory comes first on sys.path, where bench/queue.py would
# shadow the standard library's `queue` (aiosqlite imports it) and this file the `accounts`
# package: take that directory off and put the repository root first.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from sqlalchemy import event, insert  # noqa: E402

from accounts.ledger_billing import LedgerBilling  # noqa: E402
from accounts.lookups import BalanceLookups, Target  # noqa: E402
from accounts.tables import Account, LedgerEntry, Payment  # noqa: E402
from bench.common import (  # noqa: E402
    Database,
    Stats,
    analyze,
    database,
    each_database,
    table,
    verdict,
)
from tickets.agents import add_agent  # noqa: E402
from tickets.model import Role  # noqa: E402
from tickets.rendering import Templates  # noqa: E402

ACCOUNTS = int(os.environ.get("BENCH_ACCOUNTS", "100000"))
ENTRIES = int(os.environ.get("BENCH_ENTRIES", "1000000"))
HEAVY_ENTRIES = 10_000
HEAVY_PAYMENTS = 200
HEAVY_RECENT = 15
SPREAD = timedelta(days=90)
CHUNK = 10_000
WARMUP = 20
LOOKUPS = 500
ELIGIBILITY_CALLS = 200
LOOKUP_TARGET_MS = 5.0
ELIGIBILITY_TARGET_MS = 50.0
AGENT = 4242


@dataclass(frozen=True)
class Result:
    kind: str
    seed_seconds: float
    lookup: Stats
    command: Stats
    eligibility: Stats
    recent_payments: int
    plan: list[str] = field(default_factory=list)


async def lookup_plan(data: Database, now: datetime) -> list[str]:
    """The plan of the one statement a balance lookup sends, as the driver got it."""
    seen: list[tuple[str, Any]] = []

    def listener(
        _conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool
    ) -> None:
        seen.append((statement, parameters))

    event.listen(data.engine.sync_engine, "before_cursor_execute", listener)
    try:
        await LedgerBilling(data.sessions).lookup(_email(1), now)
    finally:
        event.remove(data.engine.sync_engine, "before_cursor_execute", listener)
    sql, params = next((q, p) for q, p in seen if q.lstrip().upper().startswith("SELECT"))
    async with data.engine.connect() as connection:
        if data.kind == "sqlite":
            rows = (await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params)).all()
            lines = [str(tuple(row)[3]) for row in rows]
        else:
            explain = f"EXPLAIN (ANALYZE, BUFFERS) {sql}"
            lines = [str(r[0]) for r in (await connection.exec_driver_sql(explain, params)).all()]
        await connection.rollback()
    return lines


def _email(index: int) -> str:
    return f"customer{index:06d}@example.com"


async def _flush(data: Database, model: type[Any], rows: list[dict[str, Any]]) -> None:
    if rows:
        async with data.sessions.begin() as session:
            await session.execute(insert(model), rows)
        rows.clear()


async def seed(data: Database, now: datetime, rng: random.Random) -> float:
    """Insert the accounts, payments and entries; returns the seconds it took (with ANALYZE)."""
    started = time.perf_counter()
    accounts = [
        {
            "id": i + 1,
            "email": _email(i),
            "plan": "pro" if rng.random() < 0.2 else "basic",
            "external_id": f"A{i}",
            "created_at": now - SPREAD,
            "updated_at": now - SPREAD,
        }
        for i in range(ACCOUNTS)
    ]
    for start in range(0, ACCOUNTS, CHUNK):
        await _flush(data, Account, accounts[start : start + CHUNK])
    payments: list[dict[str, Any]] = []
    entries: list[dict[str, Any]] = []
    payment_id = 0
    # 1 heavy account (id 1) with HEAVY_ENTRIES; the rest share the remainder, 10 or 9 each.
    rest = ENTRIES - HEAVY_ENTRIES
    tens = rest - 9 * (ACCOUNTS - 1)
    for account in range(1, ACCOUNTS + 1):
        heavy = account == 1
        count = HEAVY_ENTRIES if heavy else (10 if account - 2 < tens else 9)
        topups = HEAVY_PAYMENTS if heavy else 2
        for n in range(count):
            if n < topups:
                if heavy and n < HEAVY_RECENT:
                    at = now - timedelta(days=6, minutes=n * 7)
                else:
                    at = now - timedelta(days=7, seconds=1) - SPREAD * rng.random() * 0.9
                payment_id += 1
                amount = Decimal(rng.randrange(500, 20_000)) / 100
                payments.append(
                    {
                        "id": payment_id,
                        "account_id": account,
                        "external_id": f"P{payment_id}",
                        "purpose": "topup",
                        "amount_usd": amount,
                        "crypto_amount": str(amount),
                        "currency": "USDT",
                        "chain": "tron",
                        "wallet": f"TWallet{account}x{n}",
                        "tx_hash": f"0x{payment_id:064x}",
                        "paid_at": at,
                    }
                )
                entries.append(
                    {
                        "account_id": account,
                        "kind": "topup",
                        "amount": amount,
                        "at": at,
                        "payment_id": payment_id,
                        "note": "",
                    }
                )
            else:
                entries.append(
                    {
                        "account_id": account,
                        "kind": "usage",
                        "amount": -Decimal(rng.randrange(1, 100_000)) / 1_000_000,
                        "at": now - SPREAD * rng.random(),
                        "payment_id": None,
                        "note": "",
                    }
                )
            if len(entries) >= CHUNK:
                await _flush(data, Payment, payments)
                await _flush(data, LedgerEntry, entries)
    await _flush(data, Payment, payments)
    await _flush(data, LedgerEntry, entries)
    async with data.sessions.begin() as session:
        await add_agent(session, AGENT, Role.AGENT, "Bench", at=now, actor="bench")
    await analyze(data)
    return time.perf_counter() - started


async def measure(data: Database, now: datetime, rng: random.Random) -> Result:
    billing = LedgerBilling(data.sessions)
    lookups = BalanceLookups(data.sessions, billing, Templates(), clock=lambda: now)

    async def timed(calls: int, job: Any) -> list[float]:
        seconds = []
        for index in range(WARMUP + calls):
            started = time.perf_counter()
            await job()
            if index >= WARMUP:
                seconds.append(time.perf_counter() - started)
        return seconds

    async def lookup() -> None:
        found = await billing.lookup(_email(rng.randrange(ACCOUNTS)), now)
        assert found is not None

    async def command() -> None:
        text = await lookups.for_agent(AGENT, Target(None, _email(rng.randrange(ACCOUNTS))))
        assert "Balance" in text

    recent: list[int] = []

    async def eligibility() -> None:
        found = await billing.lookup(_email(0), now)
        assert found is not None
        recent.append(sum(1 for p in found.payments if p.paid_at > now - timedelta(days=7)))

    lookup_times = await timed(LOOKUPS, lookup)
    command_times = await timed(LOOKUPS, command)
    eligibility_times = await timed(ELIGIBILITY_CALLS, eligibility)
    return Result(
        data.kind,
        0.0,
        Stats.of(lookup_times),
        Stats.of(command_times),
        Stats.of(eligibility_times),
        recent[-1],
    )


async def run(kind: str, postgres_url: str) -> Result:
    rng = random.Random(7)
    now = datetime.now(UTC).replace(microsecond=0)
    async with database(kind, postgres_url) as data:
        seconds = await seed(data, now, rng)
        plan = await lookup_plan(data, now)
        print("\n".join(f"    {line}" for line in plan), flush=True)
        result = await measure(data, now, rng)
    return Result(
        kind,
        seconds,
        result.lookup,
        result.command,
        result.eligibility,
        result.recent_payments,
        plan,
    )


def report(results: Sequence[Result]) -> None:
    print(
        f"\n{ACCOUNTS:,} accounts, {ENTRIES:,} ledger entries; one account with "
        f"{HEAVY_ENTRIES:,} entries ({HEAVY_RECENT} payments in the last 7 days)\n"
    )
    rows = []
    for r in results:
        for name, stats, target in (
            ("Billing.lookup (balance lookup)", r.lookup, LOOKUP_TARGET_MS),
            ("/balance EMAIL command (audited)", r.command, None),
            ("eligibility inputs, 10,000 entries", r.eligibility, ELIGIBILITY_TARGET_MS),
        ):
            rows.append(
                [
                    f"{r.kind} · {name}",
                    f"{stats.p50:.2f}",
                    f"{stats.p90:.2f}",
                    f"{stats.p99:.2f}",
                    f"{stats.max:.2f}",
                    "—" if target is None else f"≤ {target:g}",
                    "—" if target is None else verdict(stats.p50 <= target),
                ]
            )
    print(table(["what", "p50 ms", "p90 ms", "p99 ms", "max ms", "target p50", "verdict"], rows))
    for r in results:
        print(
            f"{r.kind}: seeding and ANALYZE took {r.seed_seconds:.0f} s; the eligibility read "
            f"found {r.recent_payments} payments of the last 7 days"
        )
    for r in results:
        print(f"\n{r.kind}: plan of the balance lookup's statement")
        for line in r.plan:
            print(f"    {line}")


if __name__ == "__main__":
    sys.exit(
        each_database(
            "Benchmark balance lookups over 100,000 accounts, 1,000,000 entries.", run, report
        )
    )
