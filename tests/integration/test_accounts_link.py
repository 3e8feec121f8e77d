"""Linking codes and balance lookups against the real databases; the pure rules as tables."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from accounts.billing import (
    AccountSummary,
    Billing,
    BillingError,
    BillingWrite,
    MonthSpends,
    PaymentLine,
    load_billing,
)
from accounts.http_billing import enqueue_write
from accounts.importer import import_file
from accounts.ledger_billing import LedgerBilling
from accounts.linking import (
    MAX_ATTEMPTS,
    Linker,
    LinkResult,
)
from accounts.lookups import BalanceLookups, NoAccount, Target, identity_notes
from accounts.tables import AccountLink, LinkCode
from tests import helpers
from tests.conftest import START, Clock, Database
from tests.integration.test_accounts_import import CSV
from tickets.agents import add_agent
from tickets.desk import Desk
from tickets.model import Role
from tickets.months import Month
from tickets.outbox import Failed, Outcome
from tickets.rendering import Templates
from tickets.tables import Customer

ANN = 1001  # Telegram user ids
EVE = 1002
AGENT = 9001

# -- pure rules ------------------------------------------------------------------------------


# -- against the databases -------------------------------------------------------------------


class Codes:
    """Hands out known codes, so tests can type them like the customer would."""

    def __init__(self) -> None:
        self.made: list[str] = []

    def __call__(self) -> str:
        self.made.append(f"{100000 + len(self.made)}")
        return self.made[-1]


@pytest.fixture
async def imported(database: Database, tmp_path: Path) -> Database:
    path = tmp_path / "export.csv"
    path.write_text(CSV, encoding="utf-8")
    await import_file(database.sessions, path, at=START)
    return database


def linker(database: Database, clock: Clock, codes: Codes) -> Linker:
    return Linker(
        database.sessions,
        LedgerBilling(database.sessions),
        Templates(),
        secret="s3cret",
        support_address="support@example.net",
        clock=clock,
        code_maker=codes,
    )


async def code_rows(database: Database) -> list[LinkCode]:
    return list(await helpers.rows(database, LinkCode))


async def test_code_links_and_only_its_hash_is_stored(imported: Database, clock: Clock) -> None:
    codes = Codes()
    link = linker(imported, clock, codes)
    sent = await link.request(ANN, "Ann", "Ann@Example.com")
    assert sent.result is LinkResult.SENT
    [row] = await code_rows(imported)
    assert codes.made[0] not in row.code_hash and len(row.code_hash) == 64
    [mail] = await helpers.outbox(imported)
    assert (mail.route, mail.recipient, mail.kind) == ("email", "ann@example.com", "link_code")
    assert codes.made[0] in mail.payload["text"] and mail.payload["automatic"] is True

    clock.advance(minutes=14)
    linked = await link.confirm(ANN, "Ann", codes.made[0])
    assert linked.result is LinkResult.LINKED
    async with imported.sessions() as session:
        customer = await session.scalar(select(Customer.id).where(Customer.telegram_id == ANN))
        assert customer is not None
        notes = await identity_notes(session, [customer])
    assert notes[customer] == "👤 ann@example.com · linked by email code"
    again = await link.confirm(ANN, "Ann", codes.made[0])
    assert again.result is LinkResult.NO_CODE  # used up
    actions = [a.action for a in await helpers.audit(imported)]
    assert actions[-3:] == ["link_requested", "link", "refused:link"]


async def test_unknown_address_gets_the_same_answer_and_no_mail(
    imported: Database, clock: Clock
) -> None:
    codes = Codes()
    link = linker(imported, clock, codes)
    known = await link.request(ANN, "Ann", "ann@example.com")
    unknown = await link.request(EVE, "Eve", "nobody@example.com")
    assert known.result is unknown.result is LinkResult.SENT
    assert [m.recipient for m in await helpers.outbox(imported)] == ["ann@example.com"]
    # Whatever Eve types, the answer is the one a wrong code for a real account gets.
    wrong = await link.confirm(EVE, "Eve", codes.made[1])
    assert (wrong.result, wrong.attempts_left) == (LinkResult.WRONG_CODE, MAX_ATTEMPTS - 1)


async def test_expired_code_is_refused(imported: Database, clock: Clock) -> None:
    codes = Codes()
    link = linker(imported, clock, codes)
    await link.request(ANN, "Ann", "ann@example.com")
    clock.advance(minutes=15)
    assert (await link.confirm(ANN, "Ann", codes.made[0])).result is LinkResult.EXPIRED
    assert not await helpers.rows(imported, AccountLink)


async def test_five_wrong_attempts_spend_the_code(imported: Database, clock: Clock) -> None:
    codes = Codes()
    link = linker(imported, clock, codes)
    await link.request(ANN, "Ann", "ann@example.com")
    lefts = [(await link.confirm(ANN, "Ann", "999999")).attempts_left for _ in range(5)]
    assert lefts == [4, 3, 2, 1, 0]
    final = await link.confirm(ANN, "Ann", codes.made[0])
    assert final.result is LinkResult.NO_ATTEMPTS_LEFT
    assert not await helpers.rows(imported, AccountLink)
    refusals = [a for a in await helpers.audit(imported) if a.action == "refused:link"]
    assert len(refusals) == 6 and refusals[-1].actor == f"telegram:{ANN}"


async def test_a_new_request_replaces_the_old_code(imported: Database, clock: Clock) -> None:
    codes = Codes()
    link = linker(imported, clock, codes)
    await link.request(ANN, "Ann", "ann@example.com")
    await link.request(ANN, "Ann", "ann@example.com")
    assert (await link.confirm(ANN, "Ann", codes.made[0])).result is LinkResult.WRONG_CODE
    assert (await link.confirm(ANN, "Ann", codes.made[1])).result is LinkResult.LINKED


async def test_requests_are_limited_per_user_and_per_address(
    imported: Database, clock: Clock
) -> None:
    codes = Codes()
    link = linker(imported, clock, codes)
    for _ in range(3):
        assert (await link.request(ANN, "Ann", "ann@example.com")).result is LinkResult.SENT
        clock.advance(minutes=1)
    fourth = await link.request(ANN, "Ann", "bob@example.org")
    assert fourth.result is LinkResult.TOO_MANY_REQUESTS
    assert fourth.retry_at == START + timedelta(hours=1)
    # Another user asking for Ann's address hits the per-address limit.
    other = await link.request(EVE, "Eve", "ann@example.com")
    assert other.result is LinkResult.TOO_MANY_REQUESTS
    # Unknown addresses count the same, so the limit cannot tell them apart either.
    for _ in range(3):
        await link.request(EVE + 1, "Zed", "ghost@example.com")
    ghost = await link.request(EVE + 2, "Yan", "ghost@example.com")
    assert ghost.result is LinkResult.TOO_MANY_REQUESTS
    assert len(await helpers.outbox(imported)) == 3  # only Ann's three codes were mailed
    clock.advance(hours=1)
    assert (await link.request(ANN, "Ann", "ann@example.com")).result is LinkResult.SENT


async def test_without_mail_there_is_no_linking(imported: Database, clock: Clock) -> None:
    link = Linker(imported.sessions, LedgerBilling(imported.sessions), Templates(), secret="s",
                  support_address=None, clock=clock)  # fmt: skip
    outcome = await link.request(ANN, "Ann", "ann@example.com")
    assert outcome.result is LinkResult.NO_MAIL
    assert not await helpers.outbox(imported) and not await code_rows(imported)


async def test_agent_lookup_by_address_and_refusals_are_audited(
    imported: Database, clock: Clock
) -> None:
    async with imported.sessions.begin() as session:
        await add_agent(session, AGENT, Role.AGENT, "Sam", at=START, actor="test")
    lookups = BalanceLookups(
        imported.sessions, LedgerBilling(imported.sessions), Templates(), clock=clock
    )
    text = await lookups.for_agent(AGENT, Target(None, "ann@example.com"))
    assert "Balance: $48.749999" in text and "from wallet TWalletAnn1" in text
    assert "Plan: PRO" in text and "Spent this month: $1.250001" in text
    # The refunds work's eligibility summary: the balance (the top-up of 4 days ago covers it)
    # and the unused Pro upgrade.
    assert "Refundable now: $67.749999 (balance $48.749999)" in text
    with pytest.raises(NoAccount, match=r"no account has the address ghost@example\.com"):
        await lookups.for_agent(AGENT, Target(None, "ghost@example.com"))
    entries = [(a.action, a.details.get("email")) for a in await helpers.audit(imported)]
    assert entries[-2:] == [
        ("balance_lookup", "ann@example.com"),
        ("refused:balance", "ghost@example.com"),
    ]


# -- the Billing port ------------------------------------------------------------------------


class BillingOfRecord:
    """A deployment's own billing system, answering one address."""

    local = False

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def lookup(
        self,
        email: str,
        now: datetime,
        *,
        month: Month | None = None,
        session: AsyncSession | None = None,
    ) -> AccountSummary | None:
        if email != "vip@example.com":
            return None
        payment = PaymentLine(
            paid_at=now - timedelta(days=1),
            purpose="topup",
            amount_usd=Decimal("1000"),
            crypto_amount="1000",
            currency="USDT",
            chain="tron",
            wallet="TVipWallet",
            tx_hash="0xvip",
            ref="vip-payment-1",
        )
        return AccountSummary(
            email=email,
            plan="pro",
            pro_since=None,
            balance=Decimal("777.77"),
            month_spend=Decimal("12"),
            payments=(payment,),
            ref="vip-1",
            as_of=now,
        )

    async def lookup_account(
        self,
        ref: str,
        now: datetime,
        *,
        month: Month | None = None,
        session: AsyncSession | None = None,
    ) -> AccountSummary | None:
        return await self.lookup("vip@example.com", now) if ref == "vip-1" else None

    async def history(
        self, summary: AccountSummary, covering: Decimal, *, session: AsyncSession | None = None
    ) -> tuple[PaymentLine, ...]:
        return summary.payments

    async def month_spends(self, month: Month, now: datetime) -> MonthSpends:
        return MonthSpends(month, True, now, ())

    async def record(self, session: AsyncSession, write: BillingWrite) -> int | None:
        enqueue_write(session, write)
        return None

    async def send(self, write: BillingWrite) -> Outcome:
        return Failed("this test's billing system takes no writes")

    async def close(self) -> None:
        pass


def billing_of_record(sessions: async_sessionmaker[AsyncSession]) -> Billing:
    return BillingOfRecord(sessions)


def not_billing(sessions: async_sessionmaker[AsyncSession]) -> object:
    return object()


async def test_billing_port_swap(imported: Database, clock: Clock) -> None:
    billing = load_billing(
        "tests.integration.test_accounts_link:billing_of_record", imported.sessions
    )
    async with imported.sessions.begin() as session:
        await add_agent(session, AGENT, Role.AGENT, "Sam", at=START, actor="test")
    lookups = BalanceLookups(imported.sessions, billing, Templates(), clock=clock)
    text = await lookups.for_agent(AGENT, Target(None, "vip@example.com"))
    assert "Balance: $777.77" in text and "TVipWallet" in text
    # The ledger's accounts are not what this deployment answers from.
    with pytest.raises(NoAccount):
        await lookups.for_agent(AGENT, Target(None, "ann@example.com"))
    # A code for an account only the billing system knows links to a ledger account made for it.
    codes = Codes()
    link = Linker(imported.sessions, billing, Templates(), secret="s", clock=clock,
                  support_address="support@example.net", code_maker=codes)  # fmt: skip
    assert (await link.request(ANN, "Ann", "vip@example.com")).result is LinkResult.SENT
    assert (await link.confirm(ANN, "Ann", codes.made[0])).result is LinkResult.LINKED
    assert "Balance: $777.77" in await lookups.for_customer(ANN)


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("nowhere.at.all:factory", "cannot import"),
        ("accounts.billing:missing", "has no function"),
        ("tests.integration.test_accounts_link:not_billing", "lacks the Billing methods"),
        ("justaname", "expected module:function"),
    ],
)
async def test_bad_billing_factories(database: Database, path: str, problem: str) -> None:
    with pytest.raises(BillingError, match=problem):
        load_billing(path, database.sessions)


async def test_identity_of_email_senders_follows_their_latest_verdict(
    imported: Database, desk: Desk
) -> None:
    first = await desk.receive(helpers.email("Ann@example.com", "hi", auth="pass"))
    stranger = await desk.receive(helpers.email("someone@example.net", "hello", auth="pass"))
    async with imported.sessions() as session:
        ann = (await helpers.ticket(imported, first.ticket)).customer_id
        other = (await helpers.ticket(imported, stranger.ticket)).customer_id
        notes = await identity_notes(session, [ann, other])
    assert notes == {ann: "👤 ann@example.com · matched by an authenticated sender address"}
    await desk.receive(helpers.email("ann@example.com", "again", auth="fail"))
    async with imported.sessions() as session:
        notes = await identity_notes(session, [ann])
    assert "NOT verified" in notes[ann]
