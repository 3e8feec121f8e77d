"""The running service with its billing behind HTTP (the reference server), on both databases.

Refunds read the account through the adapter and write back through the outbox (faults on the
way, applied once); stale, malformed or unreachable data moves no money; a refusal for good is
reported to the agents; an upgrade bought while a ticket waits moves it up.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from accounts.credit_run import MonthlyCredits
from accounts.credits import NoticeRoutes
from accounts.http_billing import HttpBilling, HttpBillingConfig, write_sender
from accounts.tables import Account, AccountLink, Payout, Refund
from tests import helpers
from tests import refund_data as data
from tests.billing_server import TOKEN, BillingServer, Fault
from tests.conftest import Clock, Database
from tests.integration.test_credit_run import instatus
from tests.mailservers import eventually
from tests.telegram_harness import Desk, running_desk
from tickets.desk import Desk as TicketDesk
from tickets.model import Route
from tickets.outbox_worker import OutboxWorker
from tickets.ports import utcnow
from tickets.rendering import Templates
from tickets.tables import OutboxRow


@asynccontextmanager
async def billed_desk(
    database: Database, *, refresh_seconds: int = 5
) -> AsyncIterator[tuple[Desk, BillingServer, int]]:
    """A billing service where Ann (ann@example.org, A1) has $45 from two recent top-ups, the
    service pointed at it, Ann's chat tied to her account, and her first ticket."""
    now = utcnow()
    billing = BillingServer()
    ann = billing.account("A1", "ann@example.org")
    billing.payment("A1", "P-old", "30", now - timedelta(days=3), wallet="TOld")
    billing.payment("A1", "P-new", "20", now - timedelta(days=1), wallet="TNew")
    ann.balance -= Decimal(5)
    await billing.start()
    extra = {
        "BILLING_URL": billing.url,
        "BILLING_TOKEN": TOKEN,
        "BILLING_TIMEOUT_SECONDS": "1",
        "BILLING_RETRIES": "1",
        "PLAN_REFRESH_SECONDS": str(refresh_seconds),
    }
    try:
        async with running_desk(database, extra=extra) as desk:
            user = desk.server.add_user("Ann")
            async with database.sessions.begin() as session:
                customer = await data.telegram_customer(session, user.id, "Ann", at=now)
                mirror = Account(
                    email="ann@example.org",
                    plan="basic",
                    external_id="A1",
                    created_at=now,
                    updated_at=now,
                )
                session.add(mirror)
                await session.flush()
                session.add(
                    AccountLink(
                        customer_id=customer.id, account_id=mirror.id, method="code", linked_at=now
                    )
                )
            await desk.server.user_sends(user, text="I would like my money back, please.")
            await desk.wait_customer(user, "ticket number")
            [ticket] = await helpers.tickets(database)
            yield desk, billing, ticket.id
    finally:
        await billing.stop()


@pytest.mark.slow
async def test_a_refund_reads_through_http_and_is_written_back_once_despite_faults(
    database: Database,
) -> None:
    async with billed_desk(database) as (desk, billing, number):
        await desk.server.user_sends(desk.agent, chat=desk.group, text=f"/balance {number}")
        shown = await desk.wait_group("💰 ann@example.org")
        assert "Balance: $45.00" in (shown.text or "") and "Data as of: " in (shown.text or "")
        assert "from wallet TNew" in (shown.text or "")

        # The first write attempt meets a 503; the second is applied but its answer is lost.
        billing.fail(Fault(status=503, path="/refunds"), Fault(lost_answer=True, path="/refunds"))
        await desk.server.user_sends(desk.agent, chat=desk.group, text=f"/refund {number}")
        panel = await desk.wait_group(f"💸 Refund for #{number}")
        assert "data as of " in (panel.text or "") and "Total: $45.00" in (panel.text or "")
        assert [b["text"] for b in panel.buttons()] == ["✅ Confirm refund of $45.00"]
        await desk.server.press_button(desk.agent, panel, panel.callback_data()[0])
        await desk.wait_group("✅ Refund 1 done: $45.00")

        async def delivered() -> list[OutboxRow]:
            rows = await helpers.outbox(database, OutboxRow.route == "billing")
            return list(rows) if rows and rows[0].status == "delivered" else []

        [row] = await eventually(delivered, within=30)
    posts = billing.calls("POST", "/v1/accounts/{account_id}/refunds")
    assert [p.status for p in posts] == [503, 500, 200], "retried, then replayed"
    assert {p.headers["Idempotency-Key"] for p in posts} == {row.payload["key"]}
    assert [kind for kind, _a, _b in billing.applied] == ["refunds"], "applied once"
    assert billing.accounts["A1"].balance == Decimal(0)
    assert posts[0].body["payouts"] == [
        {"payment_id": "P-new", "purpose": "topup", "amount_usd": "20.000000",
         "currency": "USDT", "chain": "tron", "wallet": "TNew"},
        {"payment_id": "P-old", "purpose": "topup", "amount_usd": "25.000000",
         "currency": "USDT", "chain": "tron", "wallet": "TOld"},
    ]  # fmt: skip
    payouts = await helpers.rows(database, Payout)
    assert [(p.wallet, p.amount_usd) for p in payouts] == [("TNew", 20), ("TOld", 25)]
    [execute] = [e for e in await helpers.audit(database) if e.action == "refund_execute"]
    assert execute.details["billing"] == "outbox"


async def test_stale_malformed_changed_or_missing_data_moves_no_money(database: Database) -> None:
    # No periodic plan refresh here: it could take the faults meant for the confirmation.
    async with billed_desk(database, refresh_seconds=3600) as (desk, billing, number):
        await desk.server.user_sends(desk.agent, chat=desk.group, text=f"/refund {number}")
        panel = await desk.wait_group(f"💸 Refund for #{number}")
        confirm = panel.callback_data()[0]

        billing.fail(Fault(body=b'{"id": "A1", "plan": "pro"}'))  # the re-read is malformed
        press = await desk.server.press_button(desk.agent, panel, confirm)
        answer = await desk.server.wait_for(lambda: desk.server.callback_answer(press))
        assert "malformed data (account.payments: expected a list, got None)" in (answer.text or "")
        assert answer.show_alert

        billing.accounts["A1"].balance -= Decimal(10)  # the customer spent meanwhile
        press = await desk.server.press_button(desk.agent, panel, confirm)
        await desk.server.wait_for(lambda: desk.server.callback_answer(press))
        changed = await desk.wait_group("⚠️ what is refundable changed since the panel")
        assert "Total: $35.00" in (changed.text or ""), "the new amounts are shown"

        billing.as_of = utcnow() - timedelta(hours=2)  # the billing service's data is old
        await desk.server.user_sends(desk.agent, chat=desk.group, text=f"/refund {number}")
        stale = await desk.wait_group("older than BILLING_MAX_AGE (60 min)")
        assert stale.buttons() == [], "no Confirm on stale data"

        billing.as_of = None
        billing.fail(Fault(status=503), Fault(status=503))  # one try and one retry
        await desk.server.user_sends(desk.agent, chat=desk.group, text=f"/refund {number}")
        await desk.wait_group("cannot read ann@example.org from the billing system")
    assert await helpers.rows(database, Refund) == []
    assert billing.calls("POST", "/v1/accounts/{account_id}/refunds") == []
    refused = [e.action for e in await helpers.audit(database) if e.action.startswith("refused")]
    assert refused == ["refused:refund_confirm", "refused:refund_confirm", "refused:refund_panel"]


async def test_a_write_refused_for_good_is_reported_to_the_agents(database: Database) -> None:
    async with billed_desk(database) as (desk, billing, number):
        billing.fail(Fault(status=422, path="/refunds"))
        await desk.server.user_sends(desk.agent, chat=desk.group, text=f"/refund {number}")
        panel = await desk.wait_group(f"💸 Refund for #{number}")
        await desk.server.press_button(desk.agent, panel, panel.callback_data()[0])
        told = await desk.wait_group("The billing system did not take a write for good", within=20)
        assert "refund 1" in (told.text or "") and "HTTP 422" in (told.text or "")
    [row] = await helpers.outbox(database, OutboxRow.route == "billing")
    assert row.status == "failed" and row.attempts == 1
    assert billing.applied == []


@pytest.mark.slow
async def test_an_upgrade_bought_while_a_ticket_waits_moves_it_up(database: Database) -> None:
    async with billed_desk(database) as (desk, billing, number):
        assert (await helpers.ticket(database, number)).plan == "basic"
        billing.accounts["A1"].plan = "pro"  # bought in the billing system, not through us
        billing.accounts["A1"].pro_since = utcnow().isoformat()
        await desk.wait_group(f"#{number} is now PRO (was BASIC)", within=20)
        assert (await helpers.ticket(database, number)).plan == "pro"


async def test_sla_credits_come_from_and_go_back_to_the_billing_service(
    database: Database, desk: TicketDesk, clock: Clock, tmp_path: Path
) -> None:
    billing = BillingServer(clock=lambda: datetime(2026, 4, 3, tzinfo=UTC))
    billing.account("A1", "ann@example.org", plan="pro", spends={"2026-03": Decimal("45.5")})
    billing.account("A2", "bob@example.org", plan="pro", spends={"2026-03": Decimal("0")})
    billing.months["2026-03"] = {"complete": False}
    await billing.start()
    adapter = HttpBilling(HttpBillingConfig(billing.url, TOKEN, timeout=1))
    try:
        run = MonthlyCredits(
            database.sessions,
            Templates(),
            instatus(tmp_path / "instatus.json", 4),
            NoticeRoutes(telegram=False, email=False),
            billing=adapter,
            clock=clock,
        )
        assert await run.run_once(datetime(2026, 4, 3, 7, 0, tzinfo=UTC)) is None, "not final"
        billing.months["2026-03"]["complete"] = True
        applied = await run.run_once(datetime(2026, 4, 3, 8, 0, tzinfo=UTC))
        assert applied is not None and [(c.email, c.amount) for c in applied.credited] == [
            ("ann@example.org", Decimal("0.455"))
        ]
        [row] = await helpers.outbox(database, OutboxRow.route == "billing")
        assert row.kind == "billing_credit" and row.recipient == "A1"
        worker = OutboxWorker(
            database.sessions, {Route.BILLING: write_sender(adapter.send)}, desk, clock=clock
        )
        assert await worker.run_once() == 1
    finally:
        await adapter.close()
        await billing.stop()
    [(kind, account, body)] = billing.applied
    assert (kind, account, body["amount"], body["month"]) == (
        "credits",
        "A1",
        "0.455000",
        "2026-03",
    )
    assert billing.accounts["A1"].balance == Decimal("0.455")
    mirrors = await helpers.rows(database, Account)
    assert [(m.email, m.external_id) for m in mirrors] == [
        ("ann@example.org", "A1"),
        ("bob@example.org", "A2"),
    ]
