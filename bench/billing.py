"""Benchmark the Billing port: an HTTP lookup on loopback, and what plan sync adds to intake.

Run from the repository root:

    .venv/bin/python bench/billing.py [--db sqlite|postgresql|both] [--postgres-url URL]

Targets:

* **a lookup through the HTTP adapter on loopback, p50 ≤ 5 ms**: `HttpBilling.lookup` (httpx,
  a kept-open connection, bearer token, the JSON checked field by field into an
  `AccountSummary` with exact decimals) against the contract's reference server
  (`tests/billing_server.py`, aiohttp) running in a thread of its own, so the client's event
  loop does not also carry the server. The account has 7 payments of the last 7 days.
  50 warm-up calls, then 1,000 timed.
* **plan sync adds ≤ 1 ms p50 to intake, on SQLite and on PostgreSQL**: one mail at a time from
  a new sender (so each creates a customer: the path plan sync adds a statement to), stored by
  `Desk.receive` as the IMAP intake calls it, into a database of 100,000 accounts (a third of
  the senders have one, a fifth of those Pro). 600 such mails are stored by a desk without plan
  sync and 600 by one with it (`AddressPlans`), interleaved in blocks of 50 so that load on the
  shared machine falls on both alike; the figure is the difference of the p50s.
"""

from __future__ import annotations

import asyncio
import random
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from sqlalchemy import func, insert, select  # noqa: E402

from accounts.http_billing import HttpBilling, HttpBillingConfig  # noqa: E402
from accounts.plans import AddressPlans  # noqa: E402
from accounts.tables import Account  # noqa: E402
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
from tests.billing_server import TOKEN, BillingServer  # noqa: E402
from tickets.desk import Desk  # noqa: E402
from tickets.model import Channel, CustomerRef, IncomingMessage  # noqa: E402
from tickets.policy import SlaPolicy  # noqa: E402
from tickets.rendering import Templates  # noqa: E402
from tickets.sla import BusinessCalendar  # noqa: E402
from tickets.tables import Ticket  # noqa: E402

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
LOOKUP_WARMUP = 50
LOOKUPS = 1000
LOOKUP_TARGET_MS = 5.0
ACCOUNTS = 100_000
MAILS = 600
BLOCK = 50
SYNC_TARGET_MS = 1.0


# -- the HTTP lookup ------------------------------------------------------------------------------


class ServerThread:
    """The reference server on its own event loop in a thread."""

    def __init__(self) -> None:
        self.server = BillingServer(clock=lambda: NOW)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> BillingServer:
        self.server.account("A1", "pia.pro@example.com", plan="pro", pro_since=NOW.isoformat())
        for day in range(7):
            paid = NOW - timedelta(days=day, hours=1)
            self.server.payment("A1", f"P{day}", "10.5", paid, wallet=f"TWallet{day}")
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self.server

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


async def http_lookups() -> Stats:
    with ServerThread() as server:
        billing = HttpBilling(HttpBillingConfig(server.url, TOKEN, timeout=5.0))
        try:
            seconds = []
            for call in range(LOOKUP_WARMUP + LOOKUPS):
                started = time.perf_counter()
                found = await billing.lookup("pia.pro@example.com", NOW)
                if call >= LOOKUP_WARMUP:
                    seconds.append(time.perf_counter() - started)
                assert found is not None
                assert len(found.payments) == 7
        finally:
            await billing.close()
        server.seen.clear()
    return Stats.of(seconds)


# -- plan sync on intake --------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncResult:
    kind: str
    without: Stats
    with_sync: Stats
    pro_tickets: int

    @property
    def added(self) -> float:
        return self.with_sync.p50 - self.without.p50


async def seed(data: Database, rng: random.Random) -> None:
    rows = [
        {
            "email": f"customer{i:06d}@example.com",
            "plan": "pro" if rng.random() < 0.2 else "basic",
            "external_id": f"A{i}",
            "created_at": NOW,
            "updated_at": NOW,
        }
        for i in range(ACCOUNTS)
    ]
    async with data.sessions.begin() as session:
        for low in range(0, len(rows), 10_000):
            await session.execute(insert(Account), rows[low : low + 10_000])
    await analyze(data)


def mail(sender: str, number: int) -> IncomingMessage:
    return IncomingMessage(
        customer=CustomerRef(name="Customer", email=sender),
        channel=Channel.EMAIL,
        text=f"Question number {number}",
        external_id=f"<m{number}-{sender}>",
        dedup_key=("mail", f"<m{number}-{sender}>"),
        subject="A question",
        auth="pass",
    )


async def plan_sync(kind: str, postgres_url: str) -> SyncResult:
    rng = random.Random(11)
    async with database(kind, postgres_url) as data:
        await seed(data, rng)
        policy = SlaPolicy(calendar=BusinessCalendar())
        desks = {
            False: Desk(data.sessions, policy, Templates(), clock=lambda: NOW),
            True: Desk(data.sessions, policy, Templates(), clock=lambda: NOW, plans=AddressPlans()),
        }
        times: dict[bool, list[float]] = {False: [], True: []}
        owners = rng.sample(range(ACCOUNTS), MAILS)  # each account address writes once
        for block in range(MAILS // BLOCK):
            for synced in (False, True):
                for index in range(BLOCK):
                    number = block * BLOCK + index
                    # A third of the senders have an account (of those, a fifth are Pro).
                    if number % 3 == 0:
                        sender = f"customer{owners.pop():06d}@example.com"
                    else:
                        sender = f"stranger{number}-{int(synced)}@example.net"
                    started = time.perf_counter()
                    await desks[synced].receive(mail(sender, number * 2 + synced))
                    times[synced].append(time.perf_counter() - started)
        async with data.sessions() as session:
            pro = await session.scalar(select(func.count()).where(Ticket.plan == "pro"))
    return SyncResult(kind, Stats.of(times[False]), Stats.of(times[True]), int(pro or 0))


async def main() -> int:
    args = arguments("Benchmark the Billing port: HTTP lookups and plan sync on intake.")
    for label, value in await machine(args.kinds, args.postgres_url):
        print(f"{label}: {value}")
    load = Path("/proc/loadavg").read_text(encoding="ascii").strip()  # noqa: ASYNC240
    print(f"load average before the run: {load}")
    print("HTTP lookups on loopback …", flush=True)
    lookup = await http_lookups()
    results = []
    for kind in args.kinds:
        print(f"plan sync on intake, {kind} (seeding {ACCOUNTS:,} accounts) …", flush=True)
        results.append(await plan_sync(kind, args.postgres_url))
    rows = [
        [
            "HttpBilling.lookup (loopback)",
            f"{lookup.p50:.2f}",
            f"{lookup.p90:.2f}",
            f"{lookup.p99:.2f}",
            f"p50 ≤ {LOOKUP_TARGET_MS:g}",
            verdict(lookup.p50 <= LOOKUP_TARGET_MS),
        ]
    ]
    for r in results:
        rows.append([f"{r.kind} · intake, no plan sync", f"{r.without.p50:.2f}",
                     f"{r.without.p90:.2f}", f"{r.without.p99:.2f}", "—", "—"])  # fmt: skip
        rows.append([f"{r.kind} · intake, plan sync", f"{r.with_sync.p50:.2f}",
                     f"{r.with_sync.p90:.2f}", f"{r.with_sync.p99:.2f}", "—", "—"])  # fmt: skip
        rows.append([f"{r.kind} · added by plan sync (p50)", f"{r.added:.2f}", "", "",
                     f"≤ {SYNC_TARGET_MS:g}", verdict(r.added <= SYNC_TARGET_MS)])  # fmt: skip
    print()
    print(table(["what", "p50 ms", "p90 ms", "p99 ms", "target", "verdict"], rows))
    for r in results:
        print(f"{r.kind}: {r.pro_tickets} of the synced mails' tickets came out Pro")
    met = lookup.p50 <= LOOKUP_TARGET_MS and all(r.added <= SYNC_TARGET_MS for r in results)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(launch(main))
