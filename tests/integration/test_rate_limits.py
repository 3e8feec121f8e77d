"""Rate windows: the pure sliding-window rule as a table, then races on both databases.

Every "N per window" rule of the desk counts in one locked row per rule and holder, so requests
that arrive at the same moment cannot all count the same earlier uses. The races below run
truly concurrently on PostgreSQL (separate connections, each its own transaction); SQLite lets
one writer in at a time, so there they queue.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select

from accounts.linking import LinkResult
from accounts.tables import LinkCode
from tests import helpers
from tests.conftest import START, Clock, Database
from tests.integration.test_accounts_import import imported
from tests.integration.test_accounts_link import Codes, linker
from tests.unit.test_rate_limit_windows import THREE_AN_HOUR
from tickets import rate_limits
from tickets.desk import Desk
from tickets.policy import SlaPolicy
from tickets.rate_limits import RateRule
from tickets.rendering import Templates
from tickets.tables import OutboxRow, RateWindow


async def test_concurrent_takes_allow_exactly_the_limit(database: Database) -> None:
    async def one(holder: str) -> bool:
        async with database.sessions.begin() as session:
            verdict = await rate_limits.take(
                await session.connection(), [(THREE_AN_HOUR, holder)], START
            )
            await asyncio.sleep(0.01)  # hold the lock a little, as a real request's work does
        return verdict.allowed

    results = await asyncio.gather(*(one("ann") for _ in range(30)))
    assert sum(results) == 3
    others = await asyncio.gather(*(one(f"user{i}") for i in range(12)))
    assert all(others), "other holders have windows of their own"


async def test_a_request_counted_under_two_rules_uses_both_or_neither(database: Database) -> None:
    per_user = RateRule("per_user", 3, timedelta(hours=1))
    per_address = RateRule("per_address", 2, timedelta(hours=1))
    async with database.sessions.begin() as session:
        connection = await session.connection()
        for _ in range(2):
            assert (
                await rate_limits.take(connection, [(per_user, 1), (per_address, "a@x")], START)
            ).allowed
        refused = await rate_limits.take(connection, [(per_user, 1), (per_address, "a@x")], START)
        assert not refused.allowed and refused.tell
        assert refused.retry_at == START + timedelta(hours=1)
        # The refused request did not use up the per-user window: one more use is left there.
        assert (await rate_limits.take(connection, [(per_user, 1)], START)).allowed
        assert not (await rate_limits.take(connection, [(per_user, 1)], START)).allowed
    async with database.sessions() as session:
        rows = (await session.scalars(select(RateWindow).order_by(RateWindow.rule))).all()
    assert [(r.rule, r.holder, len(r.uses)) for r in rows] == [
        ("per_address", "a@x", 2),
        ("per_user", "1", 3),
    ]


async def test_concurrent_link_requests_for_one_address_mail_three_codes(
    database: Database, clock: Clock, tmp_path: Path
) -> None:
    """Issue 12: 15 accounts asking for a victim's address at once got 12 codes mailed."""
    await imported(database, tmp_path)
    link = linker(database, clock, Codes())
    outcomes = await asyncio.gather(
        *(link.request(5000 + i, f"User {i}", "ann@example.com") for i in range(15))
    )
    sent = [o for o in outcomes if o.result is LinkResult.SENT]
    assert len(sent) == 3
    assert all(o.result is LinkResult.TOO_MANY_REQUESTS for o in outcomes if o not in sent)
    mails = await helpers.outbox(database, OutboxRow.kind == "link_code")
    assert [m.recipient for m in mails] == ["ann@example.com"] * 3
    async with database.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(LinkCode)) == 3
    # One user racing themselves for 30 different addresses gets three codes too.
    outcomes = await asyncio.gather(
        *(link.request(7000, "Zed", f"zed{i}@example.com") for i in range(30))
    )
    assert sum(o.result is LinkResult.SENT for o in outcomes) == 3


async def test_receipts_to_one_address_hold_their_limit_across_desks(
    database: Database, policy: SlaPolicy, clock: Clock
) -> None:
    """Ten mails from ten senders who all answer to one Reply-To, taken in by four desks at
    once (as four processes would): three receipts, ten tickets."""
    desks = [Desk(database.sessions, policy, Templates(), clock=clock) for _ in range(4)]
    mails = [
        helpers.email(f"sender{i}@example.com", f"mail {i}", reply_address="list@example.org")
        for i in range(10)
    ]
    await asyncio.gather(*(desks[i % 4].receive(mail) for i, mail in enumerate(mails)))
    receipts = await helpers.outbox(database, OutboxRow.kind == "receipt")
    assert [r.recipient for r in receipts] == ["list@example.org"] * 3
    assert len(await helpers.tickets(database)) == 10
