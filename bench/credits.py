"""Benchmark the SLA credit preview: `plan_credits` over 100,000 accounts and 1,000,000 entries.

Run from the repository root:

    .venv/bin/python bench/credits.py [--db sqlite|postgresql|both] [--postgres-url URL]

No target is set for it (the issue asks for none). The ledger: 100,000 accounts, 40 % of them
Pro, ten entries each (three before March 2026: a top-up and two usages; seven in March: a
top-up, five usages and one refund, adjustment or usage given back), so the preview reads the
opening balances of 40,000 Pro accounts and their 280,000 March entries. The preview runs
`supportbot credits --month 2026-03 --uptime 99` does: 1 warm-up, then 3 timed runs, each in
its own session. Then `apply_credits` writes the first 1,000 credits (a transaction each, with
the ledger entry, the SlaCredit row, the customer notice and the audit entry), to give a rate.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py is named like the standard library's `queue`, which aiosqlite imports: run as a
# script from bench/, this directory would shadow it. Take it off sys.path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import random  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from decimal import Decimal  # noqa: E402
from typing import Any  # noqa: E402

from sqlalchemy import insert  # noqa: E402

from accounts.credits import CreditPlan, NoticeRoutes, apply_credits, plan_credits  # noqa: E402
from accounts.tables import Account, LedgerEntry  # noqa: E402
from accounts.uptime import given  # noqa: E402
from bench.common import Database, analyze, arguments, database, launch, machine, table  # noqa: E402
from tickets.months import Month  # noqa: E402
from tickets.rendering import Templates  # noqa: E402

ACCOUNTS = 100_000
PRO_SHARE = 0.4
MARCH = Month(2026, 3)
CHUNK = 10_000


def _ledger(rng: random.Random, account_id: int) -> list[dict[str, Any]]:
    before = MARCH.start - timedelta(days=20)
    rows = [
        (before, "topup", Decimal(rng.randrange(20, 500))),
        (before + timedelta(days=1), "usage", -Decimal(rng.randrange(1, 500)) / 100),
        (before + timedelta(days=2), "usage", -Decimal(rng.randrange(1, 500)) / 100),
        (MARCH.start + timedelta(days=1), "topup", Decimal(rng.randrange(10, 100))),
    ]
    for day in range(5):
        at = MARCH.start + timedelta(days=3 + day * 5, seconds=rng.randrange(86_400))
        rows.append((at, "usage", -Decimal(rng.randrange(1, 5_000)) / 100))
    other = rng.choice([("refund", "-5"), ("adjustment", "2.5"), ("usage", "1.25")])
    rows.append((MARCH.start + timedelta(days=28), other[0], Decimal(other[1])))
    return [
        {"account_id": account_id, "kind": kind, "amount": amount, "at": at, "note": ""}
        for at, kind, amount in rows
    ]


async def _fill(target: Database) -> float:
    rng = random.Random(7)
    started = time.perf_counter()
    now = datetime(2026, 1, 1, tzinfo=UTC)
    async with target.sessions.begin() as session:
        for low in range(1, ACCOUNTS + 1, CHUNK):
            await session.execute(
                insert(Account),
                [
                    {
                        "id": i,
                        "email": f"customer{i}@example.com",
                        "plan": "pro" if rng.random() < PRO_SHARE else "basic",
                        "pro_since": now,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for i in range(low, min(low + CHUNK, ACCOUNTS + 1))
                ],
            )
    for low in range(1, ACCOUNTS + 1, CHUNK // 10):
        entries = [
            row for i in range(low, min(low + CHUNK // 10, ACCOUNTS + 1)) for row in _ledger(rng, i)
        ]
        async with target.sessions.begin() as session:
            await session.execute(insert(LedgerEntry), entries)
    await analyze(target)
    return time.perf_counter() - started


async def _preview(target: Database) -> tuple[float, CreditPlan]:
    async with target.sessions() as session:
        started = time.perf_counter()
        plan = await plan_credits(session, MARCH, given("99"))
        return time.perf_counter() - started, plan


async def _measure(kind: str, postgres_url: str) -> list[str]:
    async with database(kind, postgres_url) as target:
        filled = await _fill(target)
        await _preview(target)  # warm-up
        runs = [await _preview(target) for _ in range(3)]
        times = sorted(seconds for seconds, _ in runs)
        plan = runs[-1][1]
        first = CreditPlan(plan.month, plan.uptime, plan.lines[:1_000])
        started = time.perf_counter()
        applied = await apply_credits(
            target.sessions,
            first,
            templates=Templates(),
            routes=NoticeRoutes(telegram=False, email=True),
            at=datetime(2026, 4, 2, tzinfo=UTC),
            actor="bench",
        )
        applying = time.perf_counter() - started
        return [
            kind,
            f"{filled:.0f} s",
            f"{len(plan.lines):,}",
            f"{times[0]:.2f} s",
            f"{times[1]:.2f} s",
            f"{len(applied.credited) / applying:.0f}/s",
        ]


async def main() -> int:
    args = arguments(__doc__.splitlines()[0] if __doc__ else "")
    rows = [await _measure(kind, args.postgres_url) for kind in args.kinds]
    print(
        table(["database", "fill", "lines", "preview best", "preview median", "apply rate"], rows)
    )
    for name, value in await machine(args.kinds, args.postgres_url):
        print(f"{name}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(launch(main))
