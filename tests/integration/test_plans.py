"""Plan sync on both databases: who gets which plan, which tickets move, who is told."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import update

from accounts.importer import import_file
from accounts.ledger_billing import LedgerBilling
from accounts.lookups import identity_notes
from accounts.plans import AddressPlans, PlanRefresh, sync_plans
from accounts.refund_desk import RefundDesk
from accounts.tables import Account
from tests import helpers
from tests import refund_data as data
from tests.conftest import START, Clock, Database
from tests.integration.test_accounts_import import COLUMNS
from tickets import queue
from tickets.agents import add_agent
from tickets.desk import Desk
from tickets.model import Role
from tickets.policy import SlaPolicy
from tickets.rendering import Templates
from tickets.tables import AuditEntry, OutboxRow, SlaAlert, Ticket


def ledger(tmp_path: Path) -> Path:
    """A billing export in which Pia and Ann are Pro and Bob is Basic."""
    path = tmp_path / "ledger.csv"
    path.write_text(
        f"{COLUMNS}\n"
        "account,A1,pia.pro@example.com,pro,2026-11-20T10:00:00Z,,,,,,,,,,,\n"
        "account,A2,ann@example.com,pro,2026-11-20T10:00:00Z,,,,,,,,,,,\n"
        "account,A3,bob@example.org,basic,,,,,,,,,,,,\n"
        "payment,P1,,,,A1,topup,50.00,50,USDT,tron,TWalletPia,0xaaa,2026-11-20T09:00:00Z,,\n",
        encoding="utf-8",
    )
    return path


def plan_desk(database: Database, policy: SlaPolicy, clock: Clock) -> Desk:
    return Desk(database.sessions, policy, Templates(), clock=clock, plans=AddressPlans())


async def test_a_new_email_customer_starts_on_their_addresses_plan(
    database: Database, policy: SlaPolicy, clock: Clock, tmp_path: Path
) -> None:
    await import_file(database.sessions, ledger(tmp_path), at=START)
    desk = plan_desk(database, policy, clock)
    basic = await desk.receive(helpers.telegram(1, "first", name="Bob"))
    clock.advance(minutes=5)
    # DMARC failed: the plan still follows the address (money would need proof; see below).
    forged = await desk.receive(helpers.email("Pia.Pro@example.com", "hi", auth="fail"))
    clock.advance(minutes=5)
    many = await desk.receive_many(  # a batch reads its senders ahead: the same rule
        [helpers.email("ann@example.com", "a"), helpers.email("nobody@example.net", "b")]
    )
    plans = {t.id: t.plan for t in await helpers.tickets(database)}
    ann, nobody = (i.ticket for i in many if not isinstance(i, Exception))
    assert plans == {basic.ticket: "basic", forged.ticket: "pro", ann: "pro", nobody: "basic"}
    forger = (await helpers.ticket(database, forged.ticket)).customer_id
    async with database.sessions() as session:
        order = [e.ticket for e in await queue.top(session, policy, clock(), 10)]
        notes = await identity_notes(session, [forger])
    assert order == [forged.ticket, ann, basic.ticket, nobody]
    assert "NOT verified" in next(iter(notes.values())), "the card says so"
    async with database.sessions.begin() as session:
        await add_agent(session, 9, Role.AGENT, "Sam", at=clock(), actor="test")
        await data.imported(session, at=clock())
    panel = await RefundDesk(database.sessions, Templates(), clock=clock).panel(forged.ticket, 9)
    assert not panel.can_confirm and "NOT verified" in panel.text


async def test_sync_follows_the_link_first_then_the_address_and_leaves_closed_tickets(
    database: Database, desk: Desk, clock: Clock
) -> None:
    linked = await desk.receive(helpers.telegram(5, "linked"))
    mailed = await desk.receive(helpers.email("carol@example.org", "mail"))
    closed = await desk.receive(helpers.email("dan@example.org", "old"))
    async with database.sessions.begin() as session:
        await add_agent(session, 9, Role.AGENT, "Sam", at=clock(), actor="test")
    await desk.close(closed.ticket, 9)
    async with database.sessions.begin() as session:
        pro = await data.account(session, "carol@example.org", at=clock(), plan="pro")
        basic = await data.account(session, "other@example.org", at=clock())
        dan = await data.account(session, "dan@example.org", at=clock(), plan="pro")
        first = await helpers_customer(session, linked.ticket)
        await data.link(session, basic, first, at=clock())  # linked to a Basic account
        await session.execute(
            update(Ticket).where(Ticket.id == mailed.ticket).values(updated_at=clock())
        )
        session.add(
            SlaAlert(
                ticket_id=mailed.ticket,
                wait_started_at=(await session.get(Ticket, mailed.ticket)).waiting_since,  # type: ignore[union-attr]
                kind="risk",
                created_at=clock(),
            )
        )
        moved = await sync_plans(
            session,
            Templates(),
            at=clock(),
            reason="the billing import x.csv",
            accounts=[pro.id, basic.id, dan.id],
        )
    assert [(c.ticket, c.old, c.new) for c in moved] == [(mailed.ticket, "basic", "pro")]
    assert (await helpers.ticket(database, closed.ticket)).plan == "basic", "history stays"
    [notice] = await helpers.outbox(
        database, OutboxRow.payload["event"].as_string() == "plan_changed"
    )
    assert notice.ticket_id == mailed.ticket and notice.payload["restate"] is True
    assert notice.payload["at_risk"] is True and notice.payload["plan"] == "pro"
    assert notice.payload["text"].startswith(f"⭐ #{mailed.ticket} is now PRO (was BASIC)")
    [entry] = await helpers.rows(database, AuditEntry, AuditEntry.action == "plan_change")
    assert entry.details == {
        "customer_id": entry.details["customer_id"],
        "old": "basic",
        "new": "pro",
        "reason": "the billing import x.csv",
    }
    # Again: nothing differs, nothing moves, nobody is told twice.
    async with database.sessions.begin() as session:
        assert (
            await sync_plans(session, Templates(), at=clock(), reason="x", accounts=[pro.id]) == []
        )


async def helpers_customer(session: object, number: int) -> int:
    ticket = await session.get(Ticket, number)  # type: ignore[attr-defined]
    assert ticket is not None
    return int(ticket.customer_id)


async def test_an_import_moves_open_tickets_and_a_reimport_moves_nothing(
    database: Database, desk: Desk, tmp_path: Path
) -> None:
    waiting = await desk.receive(helpers.email("pia.pro@example.com", "before the import"))
    assert (await helpers.ticket(database, waiting.ticket)).plan == "basic"
    report = await import_file(database.sessions, ledger(tmp_path), at=START)
    assert report.tickets_moved == 1 and "1 open ticket(s) moved" in report.summary()
    assert (await helpers.ticket(database, waiting.ticket)).plan == "pro"
    again = await import_file(database.sessions, ledger(tmp_path), at=START + timedelta(hours=1))
    assert again.tickets_moved == 0 and not again.changed
    imports = [e for e in await helpers.audit(database) if e.action == "accounts_import"]
    assert [e.details["tickets_moved"] for e in imports] == [1, 0]


async def test_the_periodic_refresh_catches_a_plan_changed_behind_the_desks_back(
    database: Database, desk: Desk, clock: Clock, tmp_path: Path
) -> None:
    await import_file(database.sessions, ledger(tmp_path), at=START)
    ticket = await desk.receive(helpers.email("bob@example.org", "question"))
    refresh = PlanRefresh(
        database.sessions, LedgerBilling(database.sessions), Templates(), clock=clock
    )
    assert await refresh.run_once() == []
    async with database.sessions.begin() as session:  # an upgrade written straight in
        await session.execute(
            update(Account).where(Account.email == "bob@example.org").values(plan="pro")
        )
    [change] = await refresh.run_once()
    assert (change.ticket, change.new) == (ticket.ticket, "pro")
    assert (await helpers.ticket(database, ticket.ticket)).plan == "pro"
