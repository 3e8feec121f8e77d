"""SLA credits on real ledgers, on SQLite and PostgreSQL: who gets what, once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from accounts.credits import (
    CreditPlan,
    LineStatus,
    NoticeRoutes,
    apply_credits,
    plan_credits,
)
from accounts.ledger import balance
from accounts.tables import LedgerEntry, LedgerImport, SlaCredit
from accounts.uptime import given
from mail.smtp import SmtpSender
from supportbot import db
from tests import helpers
from tests.conftest import Clock, Database
from tests.ledger_data import Entry, add_account
from tests.mailservers import SUPPORT, SmtpServer, smtp_server_fixture  # noqa: F401 - a fixture
from tickets.desk import Desk
from tickets.model import Route
from tickets.months import Month
from tickets.outbox_worker import OutboxWorker
from tickets.rendering import Templates
from tickets.tables import AuditEntry, OutboxRow

MARCH = Month(2026, 3)
NOW = datetime(2026, 4, 3, 8, 0, tzinfo=UTC)
ROUTES = NoticeRoutes(telegram=True, email=True, mail_domain="support.example.com")


def mar(day: int, hour: int = 12) -> datetime:
    return datetime(2026, 3, day, hour, tzinfo=UTC)


FEB = datetime(2026, 2, 10, tzinfo=UTC)
APR = datetime(2026, 4, 1, tzinfo=UTC)  # the first instant after March


# -- the policy, pure ----------------------------------------------------------------------------


# -- on the databases ----------------------------------------------------------------------------


async def march_ledgers(
    database: Database, *, ann_telegram_id: int = 7001, final: bool = True
) -> dict[str, int]:
    """Pro and Basic accounts around March 2026, each a case of the rules; `final`: an export
    made after March ended was imported (the month's data is final)."""
    async with database.sessions.begin() as s:
        if final:
            s.add(LedgerImport(at=APR + timedelta(minutes=1), source="april.csv", actor="test"))
        return {
            # usage, and usage given back: 30 + 20 - 5 = 45 → $0.45
            "ann": await add_account(
                s,
                "ann@example.com",
                [
                    Entry(FEB, "topup", "100"),
                    Entry(mar(5), "usage", "-30"),
                    Entry(mar(20), "usage", "-20"),
                    Entry(mar(21), "usage", "5"),
                ],
                telegram_id=ann_telegram_id,
            ),
            # empty at the month's start, tops up and spends it all: $50 → $0.50
            "bob": await add_account(
                s,
                "bob@example.com",
                [
                    Entry(FEB, "topup", "10"),
                    Entry(FEB, "usage", "-10"),
                    Entry(mar(3), "topup", "50"),
                    Entry(mar(4), "usage", "-50"),
                ],
            ),
            # never above zero in March
            "cat": await add_account(
                s,
                "cat@example.com",
                [Entry(FEB, "topup", "5"), Entry(FEB, "usage", "-5"), Entry(APR, "topup", "9")],
            ),
            # a refund empties it; nothing was spent: no credit
            "eve": await add_account(
                s, "eve@example.com", [Entry(FEB, "topup", "20"), Entry(mar(2), "refund", "-20")]
            ),
            # adjustments are not spend; 112.50 of usage → $1.125 (to the micro-dollar)
            "fay": await add_account(
                s,
                "fay@example.com",
                [
                    Entry(FEB, "topup", "500"),
                    Entry(datetime(2026, 3, 1, tzinfo=UTC), "usage", "-100"),  # the first instant
                    Entry(mar(9), "adjustment", "-10"),
                    Entry(mar(10), "adjustment", "4"),
                    Entry(mar(31, 23), "usage", "-12.50"),
                    Entry(APR, "usage", "-300"),  # April's
                ],
            ),
            # Basic: nothing, however much it spent
            "gus": await add_account(
                s,
                "gus@example.com",
                [Entry(FEB, "topup", "1000"), Entry(mar(5), "usage", "-900")],
                plan="basic",
            ),
            # Pro only from April: nothing for March
            "hal": await add_account(
                s,
                "hal@example.com",
                [Entry(FEB, "topup", "100"), Entry(mar(5), "usage", "-100")],
                pro_since=APR,
            ),
            # Pro from mid-March: the whole month counts; no date known counts as Pro
            "ivy": await add_account(
                s,
                "ivy@example.com",
                [Entry(FEB, "topup", "300"), Entry(mar(2), "usage", "-250")],
                pro_since=mar(15),
            ),
            "jon": await add_account(
                s,
                "jon@example.com",
                [Entry(mar(2), "topup", "80"), Entry(mar(2, 13), "usage", "-80")],
                pro_since=None,
            ),
        }


EXPECTED = [
    ("ann@example.com", "45", "0.45", LineStatus.TO_CREDIT),
    ("bob@example.com", "50", "0.50", LineStatus.TO_CREDIT),
    ("eve@example.com", "0", "0.00", LineStatus.NOTHING),
    ("fay@example.com", "112.50", "1.125", LineStatus.TO_CREDIT),
    ("ivy@example.com", "250", "2.50", LineStatus.TO_CREDIT),
    ("jon@example.com", "80", "0.80", LineStatus.TO_CREDIT),
]


CREDITED = [("ann", "0.45"), ("bob", "0.50"), ("fay", "1.125"), ("ivy", "2.50"), ("jon", "0.80")]


def summary(plan: CreditPlan) -> list[tuple[str, Decimal, Decimal, LineStatus]]:
    return [(line.email, line.net_spend, line.amount, line.status) for line in plan.lines]


async def test_preview_lists_pro_accounts_with_money_their_spend_and_credit(
    database: Database,
) -> None:
    await march_ledgers(database)
    async with database.sessions() as session:
        plan = await plan_credits(session, MARCH, given("99.2"))
    assert summary(plan) == [
        (email, Decimal(spend), Decimal(credit), status)
        for email, spend, credit, status in EXPECTED
    ]
    assert plan.total() == Decimal("5.375")


async def test_no_credits_when_uptime_kept_the_promise(database: Database) -> None:
    await march_ledgers(database)
    async with database.sessions() as session:
        plan = await plan_credits(session, MARCH, given("99.5"))
    assert plan.lines == () and not plan.applies
    applied = await apply_credits(
        database.sessions, plan, templates=Templates(), routes=ROUTES, at=NOW, actor="test"
    )
    assert applied.credited == () and await helpers.rows(database, SlaCredit) == []


async def plan(database: Database) -> CreditPlan:
    async with database.sessions() as session:
        return await plan_credits(session, MARCH, given("99"))


async def apply(
    database: Database, plan: CreditPlan, routes: NoticeRoutes = ROUTES, batch: int = 100
) -> int:
    applied = await apply_credits(
        database.sessions,
        plan,
        templates=Templates(),
        routes=routes,
        at=NOW,
        actor="test",
        batch=batch,
    )
    return len(applied.credited)


async def test_apply_credits_tells_customers_and_agents_and_is_idempotent(
    database: Database,
) -> None:
    ids = await march_ledgers(database)
    async with database.sessions() as session:
        plan = await plan_credits(session, MARCH, given("99.2"))
    assert await apply(database, plan) == 5

    credits = await helpers.rows(database, SlaCredit)
    assert sorted((c.account_id, c.month, c.amount, c.uptime) for c in credits) == sorted(
        (ids[name], "2026-03", Decimal(amount), "99.2") for name, amount in CREDITED
    )
    entries = await helpers.rows(database, LedgerEntry, LedgerEntry.kind == "credit")
    assert {e.id for e in entries} == {c.ledger_entry_id for c in credits}
    assert all(e.at == NOW and e.note.startswith("SLA credit for 2026-03") for e in entries)
    async with database.sessions() as session:
        assert await balance(session, ids["ann"]) == Decimal("55.45")
        assert await balance(session, ids["eve"]) == Decimal(0)

    # Ann is linked to a Telegram chat; the others are told at their account's address.
    notices = await helpers.outbox(database, OutboxRow.route != "agents")
    by_recipient = {row.recipient: row for row in notices}
    assert sorted(by_recipient) == sorted(
        ["7001", "bob@example.com", "fay@example.com", "ivy@example.com", "jon@example.com"]
    )
    ann = by_recipient["7001"]
    assert ann.route == "telegram" and ann.kind == "notice"
    text = ann.payload["text"]
    assert "SLA credit for March 2026" in text and "was 99.2 %" in text
    assert "Credit: $0.45" in text and "New balance: $55.45" in text
    bob = by_recipient["bob@example.com"]
    assert (
        bob.route == "email" and bob.payload["subject_line"] == "SLA credit for March 2026: $0.50"
    )
    assert bob.payload["message_id"].endswith("@support.example.com>")
    assert bob.payload["automatic"] is True and "New balance: $0.50" in bob.payload["text"]
    [agents] = await helpers.outbox(database, OutboxRow.route == "agents")
    assert agents.payload["text"].startswith(
        "💸 SLA credits for March 2026 (uptime 99.2 %, given): 5 Pro accounts credited, "
        "$5.375 in all."
    )
    assert "Customers told: 1 by Telegram, 4 by email." in agents.payload["text"]
    audited = await helpers.rows(database, AuditEntry, AuditEntry.action == "sla_credit")
    assert sorted(a.details["account_id"] for a in audited) == sorted(
        ids[n] for n in ("ann", "bob", "fay", "ivy", "jon")
    )

    # Again, from the stale plan and from a fresh one: nobody is credited twice.
    assert await apply(database, plan) == 0
    async with database.sessions() as session:
        again = await plan_credits(session, MARCH, given("98"))
    assert [line.status for line in again.lines] == [
        LineStatus.CREDITED,
        LineStatus.CREDITED,
        LineStatus.NOTHING,
        LineStatus.CREDITED,
        LineStatus.CREDITED,
        LineStatus.CREDITED,
    ]
    assert again.lines[0].amount == Decimal("0.45")  # what was credited, not recomputed
    assert await apply(database, again) == 0
    assert len(await helpers.rows(database, SlaCredit)) == 5
    assert len(await helpers.rows(database, LedgerEntry, LedgerEntry.kind == "credit")) == 5
    assert len(await helpers.outbox(database)) == 6


async def test_without_a_customer_channel_nobody_is_told_but_credits_apply(
    database: Database,
) -> None:
    await march_ledgers(database)
    async with database.sessions() as session:
        plan = await plan_credits(session, MARCH, given("99"))
    assert await apply(database, plan, NoticeRoutes(telegram=False, email=False)) == 5
    [agents] = await helpers.outbox(database)
    assert agents.route == "agents"
    assert "0 by Telegram, 0 by email, 5 not told (no reachable channel)" in agents.payload["text"]


@pytest.mark.parametrize("batch", [1, 2, 100])
async def test_concurrent_runs_credit_each_account_once(database: Database, batch: int) -> None:
    await march_ledgers(database)
    other = db.create_engine(database.url)
    try:
        second = Database(database.kind, database.url, other, db.session_factory(other))
        plans = await asyncio.gather(plan(database), plan(second))
        done = await asyncio.gather(
            apply(database, plans[0], batch=batch), apply(second, plans[1], batch=batch)
        )
    finally:
        await other.dispose()
    assert sum(done) == 5  # however the two runs interleave
    assert len(await helpers.rows(database, SlaCredit)) == 5
    assert len(await helpers.rows(database, LedgerEntry, LedgerEntry.kind == "credit")) == 5
    customer_notices = await helpers.outbox(database, OutboxRow.route != "agents")
    assert len(customer_notices) == 5
    async with database.sessions() as session:
        per_account = (
            await session.execute(
                select(LedgerEntry.account_id, func.count())
                .where(LedgerEntry.kind == "credit")
                .group_by(LedgerEntry.account_id)
            )
        ).all()
    assert len(per_account) == 5 and {count for _, count in per_account} == {1}


async def test_an_email_notice_reaches_the_mail_server(
    database: Database, desk: Desk, clock: Clock, smtp_server: SmtpServer
) -> None:
    await march_ledgers(database)
    async with database.sessions() as session:
        plan = await plan_credits(session, MARCH, given("99.2"))
    routes = NoticeRoutes(telegram=False, email=True, mail_domain="example.org")
    assert await apply(database, plan, routes) == 5
    sender = SmtpSender(smtp_server.settings(), SUPPORT, clock=clock, timeout=5)
    try:
        worker = OutboxWorker(database.sessions, {Route.EMAIL: sender}, desk, clock=clock)
        while await worker.run_once():
            pass
    finally:
        await sender.close()
    received = {r.rcpt_tos: r.message for r in smtp_server.received}
    assert len(received) == 5
    bob = received[("bob@example.com",)]
    assert bob["Subject"] == "SLA credit for March 2026: $0.50"
    assert bob["Auto-Submitted"] == "auto-generated"
    assert bob["Message-ID"].startswith("<sla-credit-2026-03-")
    body = bob.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "Credit: $0.50" in text and "New balance: $0.50" in text and "bob@example.com" in text
