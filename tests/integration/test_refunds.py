"""Refund execution, approval and payouts against both databases (no Telegram)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from accounts.ledger import balance
from accounts.payouts import PayoutDesk
from accounts.refund_desk import PlanChanged, RefundDesk, RefundStatus
from accounts.refund_plans import RefundRefused
from accounts.refund_rules import RefundScope
from accounts.tables import Account, LedgerEntry, Payout, Refund
from supportbot import db
from tests import helpers
from tests import refund_data as data
from tests.conftest import Clock, Database
from tickets.agents import add_agent
from tickets.desk import Desk
from tickets.errors import InvalidAction, NotAllowed, NotFound
from tickets.model import Role
from tickets.rendering import Templates
from tickets.tables import AuditEntry, OutboxRow, Ticket

AGENT, ADMIN, ADMIN2 = 1001, 1002, 1003


async def setup(
    database: Database, desk: Desk, clock: Clock, *, linked: bool = True, pro: bool = False
) -> tuple[int, int]:
    """A Telegram customer with a ticket, an account with two top-ups; (ticket, account id)."""
    now = clock()
    intake = await desk.receive(helpers.telegram(501, "I want my money back", name="Ann"))
    async with database.sessions.begin() as session:
        for tid, role, name in (
            (AGENT, Role.AGENT, "Sam"),
            (ADMIN, Role.ADMIN, "Ada"),
            (ADMIN2, Role.ADMIN, "Ike"),
        ):
            await add_agent(session, tid, role, name, at=now, actor="test")
        owner = await data.account(
            session,
            "ann@example.org",
            at=now - timedelta(days=30),
            plan="pro" if pro else "basic",
            pro_since=now - timedelta(days=2) if pro else None,
        )
        await data.payment(session, owner, "30", at=now - timedelta(days=3), wallet="TOld")
        await data.payment(session, owner, "20", at=now - timedelta(days=1), wallet="TNew")
        await data.usage(session, owner, "5", at=now - timedelta(hours=5))
        if pro:
            await data.payment(
                session,
                owner,
                "19",
                at=now - timedelta(days=2),
                purpose="pro_upgrade",
                wallet="bc1up",
                currency="BTC",
                chain="bitcoin",
            )
        await data.imported(session, at=now)
        if linked:
            ticket = await session.get(Ticket, intake.ticket)
            assert ticket is not None
            await data.link(session, owner, ticket.customer_id, at=now)
        account_id = owner.id
    return intake.ticket, account_id


def refunds_of(database: Database, clock: Clock, above: str = "100") -> RefundDesk:
    return RefundDesk(database.sessions, Templates(), clock=clock, approval_above=Decimal(above))


async def test_confirm_executes_debits_pays_out_and_tells_the_customer(
    database: Database, desk: Desk, clock: Clock
) -> None:
    number, account_id = await setup(database, desk, clock)
    refunds = refunds_of(database, clock)
    panel = await refunds.panel(number, AGENT)
    assert panel.plan.total == Decimal(45) and panel.can_confirm and not panel.needs_approval
    assert "TNew" in panel.text and "TOld" in panel.text and "Total: $45.00" in panel.text

    result = await refunds.confirm(number, AGENT, panel.plan.fingerprint)
    assert result.status is RefundStatus.EXECUTED and result.total == Decimal(45)
    again = await refunds.confirm(number, AGENT, panel.plan.fingerprint)  # a double tap
    assert again.repeated and again.refund_id == result.refund_id

    payouts = await helpers.rows(database, Payout)
    assert [(p.wallet, p.amount_usd, p.status) for p in payouts] == [
        ("TNew", Decimal(20), "pending"),
        ("TOld", Decimal(25), "pending"),
    ]
    async with database.sessions() as session:
        assert await balance(session, account_id) == Decimal(0)
    debits = await helpers.rows(database, LedgerEntry, LedgerEntry.kind == "refund")
    assert sum(d.amount for d in debits) == Decimal(-45)
    [notice] = await helpers.outbox(database, OutboxRow.kind == "notice")
    assert notice.route == "telegram" and notice.recipient == "501"
    assert "$20.00 in USDT on tron to TNew" in notice.payload["text"]
    actions = [e.action for e in await helpers.audit(database)]
    assert actions.count("refund_execute") == 1 and "refund_confirm" in actions


async def test_two_confirmations_at_once_give_one_refund(
    database: Database, desk: Desk, clock: Clock
) -> None:
    number, _ = await setup(database, desk, clock)
    panel = await refunds_of(database, clock).panel(number, AGENT)
    # Two agents, two engines: separate connections and transactions, as two processes.
    other = db.create_engine(database.url)
    try:
        first = refunds_of(database, clock)
        second = RefundDesk(db.session_factory(other), Templates(), clock=clock)
        results = await asyncio.gather(
            first.confirm(number, AGENT, panel.plan.fingerprint),
            second.confirm(number, ADMIN, panel.plan.fingerprint),
        )
    finally:
        await other.dispose()
    assert {r.refund_id for r in results} == {results[0].refund_id}
    assert sorted(r.repeated for r in results) == [False, True]
    assert len(await helpers.rows(database, Refund)) == 1
    assert len(await helpers.rows(database, Payout)) == 2
    assert len(await helpers.rows(database, LedgerEntry, LedgerEntry.kind == "refund")) == 2


async def test_a_changed_plan_is_refused_with_the_new_panel(
    database: Database, desk: Desk, clock: Clock
) -> None:
    number, account_id = await setup(database, desk, clock)
    refunds = refunds_of(database, clock)
    panel = await refunds.panel(number, AGENT)
    async with database.sessions.begin() as session:  # the customer spends meanwhile
        owner = await session.get(Account, account_id)
        assert owner is not None
        await data.usage(session, owner, "10", at=clock())
    with pytest.raises(PlanChanged) as changed:
        await refunds.confirm(number, AGENT, panel.plan.fingerprint)
    assert changed.value.panel is not None and changed.value.panel.plan.total == Decimal(35)
    clock.advance(days=4)  # the older top-up ages out as well
    async with database.sessions.begin() as session:
        await data.imported(session, at=clock())
    with pytest.raises(PlanChanged):
        await refunds.confirm(number, AGENT, changed.value.panel.plan.fingerprint)
    assert await helpers.rows(database, Refund) == []
    assert await helpers.rows(database, Payout) == []
    refused = [e for e in await helpers.audit(database) if e.action == "refused:refund_confirm"]
    assert len(refused) == 2


async def test_bad_input_is_refused_changes_nothing_and_is_audited(
    database: Database, desk: Desk, clock: Clock
) -> None:
    number, _ = await setup(database, desk, clock, linked=False)
    refunds = refunds_of(database, clock)
    with pytest.raises(RefundRefused, match="no account matches"):
        await refunds.panel(number, AGENT)  # an unknown customer: no account, no email match
    with pytest.raises(NotFound):
        await refunds.panel(999, AGENT)
    with pytest.raises(NotAllowed):
        await refunds.panel(number, 4242)  # not an agent
    stranger = await desk.receive(helpers.email("nobody@example.org", "refund", auth="pass"))
    with pytest.raises(RefundRefused, match=r"no account matches .*\(nobody@example.org\)"):
        await refunds.panel(stranger.ticket, AGENT)  # an email no account is registered with
    with pytest.raises(RefundRefused, match="does not name"):
        await refunds.confirm(number, AGENT, "' or 1=1 --")
    with pytest.raises(NotFound):
        await refunds.approve(77, ADMIN)
    assert await helpers.rows(database, Refund) == []
    reasons = [e.action for e in await helpers.audit(database) if e.action.startswith("refused")]
    assert len(reasons) == 6


async def test_nothing_to_refund_and_already_refunded(
    database: Database, desk: Desk, clock: Clock
) -> None:
    number, _ = await setup(database, desk, clock)
    refunds = refunds_of(database, clock)
    panel = await refunds.panel(number, AGENT)
    await refunds.confirm(number, AGENT, panel.plan.fingerprint)
    after = await refunds.panel(number, AGENT)
    assert after.plan.total == 0 and not after.can_confirm
    assert "already refunded" in after.text and "Nothing to refund" in after.text
    with pytest.raises(PlanChanged):  # an old panel of a different plan
        await refunds.confirm(number, AGENT, "0123456789ab")
    with pytest.raises(RefundRefused, match="nothing is refundable"):
        await refunds.confirm(number, AGENT, after.plan.fingerprint)
    assert len(await helpers.rows(database, Payout)) == 2


async def test_above_the_limit_an_admin_other_than_the_requester_approves(
    database: Database, desk: Desk, clock: Clock
) -> None:
    number, account_id = await setup(database, desk, clock, pro=True)
    refunds = refunds_of(database, clock, above="50")
    panel = await refunds.panel(number, ADMIN)
    assert panel.plan.total == Decimal(64) and panel.needs_approval and panel.plan.includes_upgrade
    held = await refunds.confirm(number, ADMIN, panel.plan.fingerprint)
    assert held.status is RefundStatus.AWAITING_APPROVAL
    assert await helpers.rows(database, Payout) == []

    with pytest.raises(NotAllowed, match="only an admin"):
        await refunds.approve(held.refund_id, AGENT)
    with pytest.raises(NotAllowed, match="second admin"):
        await refunds.approve(held.refund_id, ADMIN)
    done = await refunds.approve(held.refund_id, ADMIN2)
    assert done.status is RefundStatus.EXECUTED
    assert (await refunds.approve(held.refund_id, ADMIN2)).repeated

    payouts = await helpers.rows(database, Payout)
    assert [(p.wallet, p.amount_usd) for p in payouts] == [
        ("TNew", Decimal(20)),
        ("TOld", Decimal(25)),
        ("bc1up", Decimal(19)),
    ]
    async with database.sessions() as session:
        account = await session.get(Account, account_id)
        assert account is not None and account.plan == "basic"
        assert await balance(session, account_id) == Decimal(0), "the upgrade is not debited"
    refused = [e for e in await helpers.audit(database) if e.action == "refused:refund_approve"]
    assert (
        len(refused) == 2 and refused[0].details["reason"] == "only an admin can approve a refund"
    )


async def test_a_held_refund_whose_plan_changed_is_voided(
    database: Database, desk: Desk, clock: Clock
) -> None:
    number, _ = await setup(database, desk, clock)
    refunds = refunds_of(database, clock, above="10")
    panel = await refunds.panel(number, AGENT)
    held = await refunds.confirm(number, AGENT, panel.plan.fingerprint)
    clock.advance(days=4)  # the older top-up ages out
    async with database.sessions.begin() as session:
        await data.imported(session, at=clock())
    with pytest.raises(PlanChanged):
        await refunds.approve(held.refund_id, ADMIN)
    [refund] = await helpers.rows(database, Refund)
    assert refund.status == "refused" and await helpers.rows(database, Payout) == []


async def test_unverified_identity_needs_the_agent_to_vouch(
    database: Database, desk: Desk, clock: Clock
) -> None:
    intake = await desk.receive(helpers.email("bob@example.org", "refund please", auth="fail"))
    async with database.sessions.begin() as session:
        await add_agent(session, AGENT, Role.AGENT, "Sam", at=clock(), actor="test")
        owner = await data.account(session, "bob@example.org", at=clock() - timedelta(days=9))
        await data.payment(session, owner, "15", at=clock() - timedelta(days=1))
        await data.imported(session, at=clock())
    refunds = refunds_of(database, clock)
    panel = await refunds.panel(intake.ticket, AGENT)
    assert panel.identity.value == "unverified" and not panel.can_confirm
    assert "NOT verified" in panel.text
    with pytest.raises(RefundRefused, match="not verified"):
        await refunds.confirm(intake.ticket, AGENT, panel.plan.fingerprint)
    vouched = await refunds.panel(intake.ticket, AGENT, verified=True)
    assert vouched.can_confirm
    result = await refunds.confirm(intake.ticket, AGENT, vouched.plan.fingerprint, verified=True)
    assert result.status is RefundStatus.EXECUTED
    [notice] = await helpers.outbox(database, OutboxRow.kind == "notice")
    assert notice.route == "email" and notice.recipient == "bob@example.org"
    assert notice.payload["subject_line"].startswith(f"[#{intake.ticket}]")


async def test_payouts_are_marked_sent_once_and_overdue_ones_alert_once(
    database: Database, desk: Desk, clock: Clock
) -> None:
    number, _ = await setup(database, desk, clock)
    refunds = refunds_of(database, clock)
    panel = await refunds.panel(number, AGENT)
    await refunds.confirm(number, AGENT, panel.plan.fingerprint)
    payouts = PayoutDesk(database.sessions, Templates(), clock=clock)
    first, second = await helpers.rows(database, Payout)

    with pytest.raises(NotAllowed):
        await payouts.mark_sent(first.id, "0xfeedbeef01", telegram_id=AGENT)
    with pytest.raises(InvalidAction, match="transaction hash"):
        await payouts.mark_sent(first.id, "<b>", telegram_id=ADMIN)
    with pytest.raises(NotFound):
        await payouts.mark_sent(999, "0xfeedbeef01", telegram_id=ADMIN)
    text = await payouts.mark_sent(first.id, "0xfeedbeef01", telegram_id=ADMIN)
    assert "0xfeedbeef01" in text and "Telegram" in text
    with pytest.raises(InvalidAction, match="already marked sent"):
        await payouts.mark_sent(first.id, "0xother0002", telegram_id=ADMIN)
    notices = await helpers.outbox(database, OutboxRow.kind == "notice")
    assert "Transaction hash: 0xfeedbeef01" in notices[-1].payload["text"]

    assert await payouts.alert_overdue() == 0
    clock.advance(days=5, seconds=1)
    assert await payouts.alert_overdue() == 1  # only the pending one
    assert await payouts.alert_overdue() == 0, "alerted once"
    [alert] = await helpers.outbox(
        database,
        OutboxRow.route == "agents",
        OutboxRow.payload["event"].as_string() == "payout_overdue",
    )
    assert f"Payout {second.id}" in alert.payload["text"]
    refused = [e for e in await helpers.audit(database) if e.action == "refused:payout_sent"]
    assert len(refused) == 4


async def test_eligibility_summary_for_balance(
    database: Database, desk: Desk, clock: Clock
) -> None:
    _number, account_id = await setup(database, desk, clock, pro=True)
    async with database.sessions() as session:
        account = await session.get(Account, account_id)
        assert account is not None
    text = await refunds_of(database, clock).eligibility(account)
    assert text is not None
    assert text.startswith("Refundable now: $64.00 (balance $45.00).")
    assert "Pro upgrade" in text


async def test_customer_notice_goes_by_email_with_threading(
    database: Database, desk: Desk, clock: Clock
) -> None:
    intake = await desk.receive(
        helpers.email("carol@example.org", "refund", auth="pass", external_id="<c1@example.org>")
    )
    async with database.sessions.begin() as session:
        await add_agent(session, AGENT, Role.AGENT, "Sam", at=clock(), actor="test")
        owner = await data.account(session, "carol@example.org", at=clock() - timedelta(days=9))
        await data.payment(session, owner, "15", at=clock() - timedelta(days=1), wallet="0xC")
        await data.imported(session, at=clock())
    refunds = refunds_of(database, clock)
    panel = await refunds.panel(intake.ticket, AGENT)
    assert panel.identity.value == "authenticated" and panel.can_confirm
    await refunds.confirm(intake.ticket, AGENT, panel.plan.fingerprint)
    [notice] = await helpers.outbox(database, OutboxRow.kind == "notice")
    assert notice.payload["in_reply_to"] == "<c1@example.org>"
    assert notice.payload["message_id"].startswith(f"<notice-{intake.ticket}-")
    async with database.sessions() as session:
        audit = (
            await session.scalars(select(AuditEntry).where(AuditEntry.action == "refund_execute"))
        ).one()
    assert audit.details["total"] == "15.000000" and audit.ticket_id == intake.ticket


async def test_the_agent_chooses_everything_only_the_upgrade_or_only_the_balance(
    database: Database, desk: Desk, clock: Clock
) -> None:
    number, account_id = await setup(database, desk, clock, pro=True)
    refunds = refunds_of(database, clock)
    panel = await refunds.panel(number, AGENT)
    assert [(p.scope.value, p.total) for p in panel.options] == [
        ("all", Decimal(64)),
        ("upgrade", Decimal(19)),
        ("balance", Decimal(45)),
    ]
    balance_only = panel.options[2]
    result = await refunds.confirm(
        number, AGENT, balance_only.fingerprint, scope=RefundScope.BALANCE
    )
    assert result.status is RefundStatus.EXECUTED and result.total == Decimal(45)
    async with database.sessions() as session:
        account = await session.get(Account, account_id)
        assert account is not None and account.plan == "pro", "Pro stays"
        assert await balance(session, account_id) == Decimal(0)
    after = await refunds.panel(number, AGENT)
    assert [(p.scope.value, p.total) for p in after.options] == [("all", Decimal(19))]
    upgrade = await refunds.confirm(
        number, AGENT, after.options[0].fingerprint, scope=RefundScope.ALL
    )
    assert upgrade.total == Decimal(19)
    async with database.sessions() as session:
        account = await session.get(Account, account_id)
        assert account is not None and account.plan == "basic"
    [first, second] = await helpers.rows(database, Refund)
    assert (first.scope, first.includes_pro_upgrade) == ("balance", False)
    assert (second.scope, second.includes_pro_upgrade) == ("all", True)
    again = await refunds.confirm(
        number, AGENT, balance_only.fingerprint, scope=RefundScope.BALANCE
    )  # a late second tap on the first choice finds the first refund
    assert again.repeated and again.refund_id == first.id


async def test_money_never_moves_on_a_stale_ledger(
    database: Database, desk: Desk, clock: Clock
) -> None:
    number, _ = await setup(database, desk, clock)
    refunds = refunds_of(database, clock)
    panel = await refunds.panel(number, AGENT)
    assert panel.can_confirm and "data as of " in panel.text
    clock.advance(hours=1, seconds=1)  # the last import is now older than BILLING_MAX_AGE
    stale = await refunds.panel(number, AGENT)
    assert not stale.can_confirm and stale.options == ()
    assert "older than BILLING_MAX_AGE (60 min)" in stale.text
    assert "import a fresh billing export" in stale.text
    with pytest.raises(RefundRefused, match=r"as of .* \(60 min old\), older than BILLING_MAX"):
        await refunds.confirm(number, AGENT, panel.plan.fingerprint)
    async with database.sessions.begin() as session:
        await data.imported(session, at=clock())  # a fresh import: the same plan goes ahead
    done = await refunds.confirm(number, AGENT, panel.plan.fingerprint)
    assert done.status is RefundStatus.EXECUTED


async def test_an_admin_refunds_the_whole_balance_outside_the_window_with_a_second_admin(
    database: Database, desk: Desk, clock: Clock
) -> None:
    number, account_id = await setup(database, desk, clock)
    async with database.sessions.begin() as session:
        owner = await session.get(Account, account_id)
        assert owner is not None
        await data.payment(
            session, owner, "100", at=clock() - timedelta(days=60), wallet="TAncient"
        )
    refunds = refunds_of(database, clock, above="1000")
    with pytest.raises(NotAllowed, match="only an admin"):
        await refunds.full(number, AGENT, "the service was down all month")
    with pytest.raises(RefundRefused, match="needs a reason"):
        await refunds.full(number, ADMIN, "  ")
    held = await refunds.full(number, ADMIN, "the promise was broken: the API was down for days")
    assert held.status is RefundStatus.AWAITING_APPROVAL and held.total == Decimal(145)
    assert "second admin" in held.text and "TAncient" in held.text
    assert await helpers.rows(database, Payout) == []
    with pytest.raises(NotAllowed, match="second admin"):
        await refunds.approve(held.refund_id, ADMIN)
    done = await refunds.approve(held.refund_id, ADMIN2)
    assert done.status is RefundStatus.EXECUTED
    payouts = await helpers.rows(database, Payout)
    assert [(p.wallet, p.amount_usd) for p in payouts] == [
        ("TNew", Decimal(20)),
        ("TOld", Decimal(30)),
        ("TAncient", Decimal(95)),
    ], "the balance of $145, newest first, each part to its own wallet"
    async with database.sessions() as session:
        assert await balance(session, account_id) == Decimal(0)
    trail = {e.action: e.details for e in await helpers.audit(database)}
    assert trail["refund_confirm"]["reason"] == "the promise was broken: the API was down for days"
    assert trail["refund_confirm"]["scope"] == "full"
    assert trail["refund_approve"]["reason"] == trail["refund_confirm"]["reason"]
    [refund] = await helpers.rows(database, Refund)
    assert refund.requested_by != refund.approved_by and refund.scope == "full"
