"""Benchmark refund eligibility: the refund plan of one busy account inside a big database.

Run from the repository root:

    .venv/bin/python bench/refunds.py [--db sqlite|postgresql|both] [--postgres-url URL]

Target: for an account with 10,000 ledger entries and 300 payments (a third of them already
refunded, and a Pro upgrade), the refund plan as the panel makes it — the account read through
the built-in ledger's Billing port (balance, the recent payments, `as_of`), those payments
matched to their payouts, and the pure `plan_refund` — answers with a p50 of at most
50 ms, in a database of 100,000 accounts and 1,000,000 ledger entries, on SQLite and on
PostgreSQL. Each call runs in its own transaction and loads the account row first, as the
refund panel does. 10 warm-up calls, then 200 timed calls.
"""

from __future__ import annotations

import itertools
import random
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

# bench/queue.py is named like the standard library's `queue` (which aiosqlite imports): run as a
# script, this directory would come first on sys.path and shadow it, so take it off.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from sqlalchemy import insert, select  # noqa: E402

from accounts.ledger_billing import LedgerBilling  # noqa: E402
from accounts.money import cents  # noqa: E402
from accounts.refund_plans import plan_of, read_account  # noqa: E402
from accounts.refund_rules import RefundScope  # noqa: E402
from accounts.tables import Account, LedgerEntry, Payment, Payout, Refund  # noqa: E402
from bench.common import (  # noqa: E402
    Database,
    Stats,
    analyze,
    arguments,
    database,
    launch,
    machine,
    table,
    verdict,
)

ACCOUNTS = 100_000
LEDGER = 1_000_000
BUSY_ENTRIES = 10_000
BUSY_PAYMENTS = 300
CHUNK = 10_000
WARMUP = 10
CALLS = 200
TARGET_MS = 50.0
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Result:
    kind: str
    seed_seconds: float
    stats: Stats
    total: Decimal
    parts: int


async def _chunks(data: Database, model: type, rows: Iterable[dict[str, object]]) -> None:
    source = iter(rows)
    while chunk := list(itertools.islice(source, CHUNK)):
        async with data.sessions.begin() as session:
            await session.execute(insert(model), chunk)


async def seed(data: Database, rng: random.Random) -> int:
    """Accounts, a payment each, ledger entries; one busy account. Returns its id."""
    old = NOW - timedelta(days=400)
    await _chunks(
        data,
        Account,
        [
            {
                "email": f"user{n}@example.org",
                "plan": "pro" if n == 0 else "basic",
                "pro_since": NOW - timedelta(days=3) if n == 0 else None,
                "created_at": old,
                "updated_at": old,
            }
            for n in range(ACCOUNTS)
        ],
    )
    async with data.sessions() as session:
        busy = await session.scalar(select(Account.id).where(Account.email == "user0@example.org"))
    assert busy is not None
    payments: list[dict[str, object]] = []
    for n in range(BUSY_PAYMENTS):
        paid_at = NOW - timedelta(hours=rng.uniform(1, 24 * 60))
        payments.append(_payment(busy, f"busy-{n}", "topup", paid_at, rng))
    payments.append(_payment(busy, "busy-upgrade", "pro_upgrade", NOW - timedelta(days=3), rng))
    for n in range(1, ACCOUNTS):
        paid_at = NOW - timedelta(days=rng.uniform(0, 90))
        payments.append(_payment(busy + n, f"p-{n}", "topup", paid_at, rng))
    await _chunks(data, Payment, payments)
    async with data.sessions.begin() as session:
        busy_payments = (
            await session.execute(
                select(Payment.id, Payment.amount_usd, Payment.paid_at)
                .where(Payment.account_id == busy, Payment.purpose == "topup")
                .order_by(Payment.id)
            )
        ).all()
        refund = Refund(
            account_id=busy,
            key="bench-earlier",
            status="executed",
            total=Decimal(1),
            created_at=old,
        )
        session.add(refund)
        await session.flush()
        refund_id = refund.id
    await _chunks(
        data,
        Payout,
        [
            {
                "refund_id": refund_id,
                "payment_id": p.id,
                "amount_usd": p.amount_usd,
                "currency": "USDT",
                "chain": "tron",
                "wallet": "TRefunded",
                "status": "sent",
                "created_at": old,
            }
            for p in busy_payments[::3]
        ],
    )
    entries: list[dict[str, object]] = [
        {
            "account_id": busy,
            "kind": "topup" if i < len(busy_payments) else "usage",
            "amount": busy_payments[i].amount_usd if i < len(busy_payments) else Decimal("-0.01"),
            "at": busy_payments[i].paid_at
            if i < len(busy_payments)
            else NOW - timedelta(minutes=rng.uniform(1, 60 * 24 * 60)),
            "payment_id": busy_payments[i].id if i < len(busy_payments) else None,
            "note": "",
        }
        for i in range(BUSY_ENTRIES)
    ]
    others: Iterable[dict[str, object]] = (
        {
            "account_id": busy + rng.randrange(1, ACCOUNTS),
            "kind": "usage",
            "amount": Decimal("-0.25"),
            "at": NOW - timedelta(minutes=rng.uniform(1, 60 * 24 * 90)),
            "payment_id": None,
            "note": "",
        }
        for _ in range(LEDGER - BUSY_ENTRIES)
    )
    await _chunks(data, LedgerEntry, itertools.chain(entries, others))
    await analyze(data)
    return busy


def _payment(
    account: int, external: str, purpose: str, paid_at: datetime, rng: random.Random
) -> dict[str, object]:
    amount = Decimal(19) if purpose == "pro_upgrade" else Decimal(rng.randrange(5, 200))
    return {
        "account_id": account,
        "external_id": external,
        "purpose": purpose,
        "amount_usd": amount,
        "crypto_amount": str(amount),
        "currency": "USDT",
        "chain": "tron",
        "wallet": f"T{external}",
        "tx_hash": f"0x{external}",
        "paid_at": paid_at,
    }


async def run(kind: str, postgres_url: str) -> Result:
    rng = random.Random(7)
    async with database(kind, postgres_url) as data:
        began = time.perf_counter()
        busy = await seed(data, rng)
        seeded = time.perf_counter() - began
        timings: list[float] = []
        plan = None
        billing = LedgerBilling(data.sessions)
        for call in range(WARMUP + CALLS):
            now = NOW + timedelta(seconds=call)
            start = time.perf_counter()
            async with data.sessions.begin() as session:
                account = await session.get(Account, busy)
                assert account is not None
                reading = await read_account(billing, account.email, now, session=session)
                plan = await plan_of(session, account, reading, now, RefundScope.ALL, local=True)
            if call >= WARMUP:
                timings.append(time.perf_counter() - start)
        assert plan is not None
        return Result(kind, seeded, Stats.of(timings), plan.total, len(plan.payouts))


async def main() -> int:
    args = arguments(__doc__.splitlines()[0] if __doc__ else "refund eligibility")
    for label, value in await machine(args.kinds, args.postgres_url):
        print(f"{label}: {value}")
    results = []
    for kind in args.kinds:
        print(
            f"running on {kind} (seeding {ACCOUNTS:,} accounts, {LEDGER:,} entries) …", flush=True
        )
        results.append(await run(kind, args.postgres_url))
    print()
    print(
        table(
            ["database", "seed s", "p50 ms", "p90 ms", "p99 ms", "max ms", "target", "plan"],
            [
                [
                    r.kind,
                    f"{r.seed_seconds:.0f}",
                    f"{r.stats.p50:.1f}",
                    f"{r.stats.p90:.1f}",
                    f"{r.stats.p99:.1f}",
                    f"{r.stats.max:.1f}",
                    f"p50 ≤ {TARGET_MS:.0f}: {verdict(r.stats.p50 <= TARGET_MS)}",
                    f"{cents(r.total)} in {r.parts} payouts",
                ]
                for r in results
            ],
        )
    )
    return 0 if all(r.stats.p50 <= TARGET_MS for r in results) else 1


if __name__ == "__main__":
    sys.exit(launch(main))
