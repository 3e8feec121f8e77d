"""A customer's plan follows the account they are identified with, everywhere, at once.

The account a customer is identified with is the one linked to them (by code, or by an agent's
`/account`), else the lowest-numbered account whose address is one of theirs (the same rule as
`accounts.ledger.owner_of_customer`). `sync_plans` gives every customer of some accounts that
account's plan and moves their open tickets with it, in the caller's transaction: the queue
reads the new tier at once, and an agents' notice per moved ticket restates its card and topic
title (`restate`). The triggers: a new email customer starts on their address's plan
(`AddressPlans`, called by the intake), `/link`, an import, a refund of the upgrade, a billing
answer that differs from the desk's mirror (`MirroredBilling`), and `PlanRefresh`, which looks at
the accounts behind open tickets every few minutes.

A plan is not proof of identity: an email sender whose mail did not pass SPF/DKIM/DMARC gets the
plan of the address they wrote from, as the customer of that address; money still waits for
proof (see docs/decisions.md, "Plans").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, literal, or_, select, union, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from accounts.billing import (
    AccountSummary,
    Billing,
    BillingUnavailable,
    BillingWrite,
    MonthSpends,
    PaymentLine,
)
from accounts.ledger import address_account, tied_account
from accounts.tables import Account, AccountLink
from tickets import audit
from tickets.model import OutboxKind, OutboxStatus, Plan, TicketStatus
from tickets.months import Month
from tickets.notices import notify_agents
from tickets.outbox import Outcome
from tickets.periodic import run_every
from tickets.ports import Clock, Renderer
from tickets.tables import Customer, CustomerEmail, OutboxRow, SlaAlert, Ticket, customers, tickets

log = logging.getLogger(__name__)

CHUNK = 500
REFRESH_SECONDS = 300.0
REFRESH_CONCURRENCY = 4
accounts_table = cast(Table, Account.__table__)


@dataclass(frozen=True)
class PlanChange:
    """An open ticket that moved to another tier."""

    ticket: int
    customer_id: int
    old: str
    new: str


@dataclass(frozen=True)
class _Facts:
    """What an agents' notice shows of a ticket (`tickets.notices.TicketFacts`)."""

    id: int
    plan: str
    channel: str
    subject: str
    due_at: datetime | None


def wanted_plan() -> Any:
    """The plan of the account a customer (of a query over `Customer`) is identified with."""
    return func.coalesce(
        tied_account(Account.plan), address_account(Account.plan), literal(Plan.BASIC.value)
    )


def _customers_of(account_ids: Sequence[int]) -> Any:
    linked = select(AccountLink.customer_id).where(AccountLink.account_id.in_(account_ids))
    by_address = (
        select(CustomerEmail.customer_id)
        .join(Account, Account.email == CustomerEmail.address)
        .where(Account.id.in_(account_ids))
    )
    return union(linked, by_address)


async def sync_plans(
    session: AsyncSession,
    templates: Renderer,
    *,
    at: datetime,
    reason: str,
    accounts: Iterable[int] = (),
    customers: Iterable[int] = (),
    actor: str = "system",
) -> list[PlanChange]:
    """Give the customers of these accounts (and these customers) their account's plan, and
    move their open tickets with it; each moved ticket is audited and its agents told."""
    affected = set(customers)
    account_ids = sorted(set(accounts))
    for low in range(0, len(account_ids), CHUNK):
        found = await session.scalars(_customers_of(account_ids[low : low + CHUNK]))
        affected.update(found)
    changes: list[PlanChange] = []
    ordered = sorted(affected)
    for low in range(0, len(ordered), CHUNK):
        changes.extend(await _sync_chunk(session, templates, ordered[low : low + CHUNK], at))
    if changes:
        await _tell(session, templates, changes, at=at, reason=reason, actor=actor)
    return changes


async def _sync_chunk(
    session: AsyncSession, templates: Renderer, customer_ids: list[int], at: datetime
) -> list[PlanChange]:
    rows = (
        await session.execute(
            select(Customer.id, Customer.plan, wanted_plan().label("wanted")).where(
                Customer.id.in_(customer_ids)
            )
        )
    ).all()
    wanted = {row.id: str(row.wanted) for row in rows}
    stale = [
        {"customer": row.id, "new_plan": str(row.wanted)} for row in rows if row.plan != row.wanted
    ]
    if stale:
        await session.execute(_SAVE_CUSTOMER_PLAN, stale)
    tickets = await session.execute(
        select(Ticket.id, Ticket.customer_id, Ticket.plan)
        .where(Ticket.customer_id.in_(customer_ids), Ticket.status == TicketStatus.OPEN.value)
        .order_by(Ticket.id)  # every writer locks tickets in id order
        .with_for_update()
    )
    changes = [
        PlanChange(t.id, t.customer_id, t.plan, wanted[t.customer_id])
        for t in tickets
        if t.plan != wanted.get(t.customer_id, t.plan)
    ]
    if changes:
        await session.execute(
            _SAVE_TICKET_PLAN,
            [{"ticket": c.ticket, "new_plan": c.new, "at": at} for c in changes],
        )
    return changes


_SAVE_CUSTOMER_PLAN = (
    update(customers)
    .where(customers.c.id == bindparam("customer"))
    .values(plan=bindparam("new_plan"))
)
_SAVE_TICKET_PLAN = (
    update(tickets)
    .where(tickets.c.id == bindparam("ticket"))
    .values(plan=bindparam("new_plan"), updated_at=bindparam("at"))
)


async def _tell(
    session: AsyncSession,
    templates: Renderer,
    changes: list[PlanChange],
    *,
    at: datetime,
    reason: str,
    actor: str,
) -> None:
    """An audit entry and an agents' notice per moved ticket; the notice restates its place."""
    numbers = [c.ticket for c in changes]
    rows = await session.execute(
        select(
            Ticket.id,
            Ticket.channel,
            Ticket.subject,
            Ticket.due_at,
            Ticket.waiting_since,
        ).where(Ticket.id.in_(numbers))
    )
    facts = {row.id: row for row in rows}
    risky = set(
        await session.scalars(
            select(SlaAlert.ticket_id)
            .join(Ticket, Ticket.id == SlaAlert.ticket_id)
            .where(
                SlaAlert.ticket_id.in_(numbers),
                SlaAlert.kind == "risk",
                SlaAlert.wait_started_at == Ticket.waiting_since,
            )
        )
    )
    for change in changes:
        row = facts[change.ticket]
        ticket = _Facts(row.id, change.new, row.channel, row.subject or "", row.due_at)
        notify_agents(
            session,
            templates,
            "plan_changed",
            at=at,
            ticket=ticket,
            old=change.old,
            new=change.new,
            reason=reason,
            restate=True,
            at_risk=change.ticket in risky,
        )
        audit.record(
            session,
            at=at,
            action="plan_change",
            actor=actor,
            ticket_id=change.ticket,
            customer_id=change.customer_id,
            old=change.old,
            new=change.new,
            reason=reason,
        )


# -- the intake: a new email customer starts on their address's plan --------------------------

_PLAN_OF_ADDRESS = select(accounts_table.c.plan).where(
    accounts_table.c.email == bindparam("address")
)


class AddressPlans:
    """`tickets.ports.AccountPlans`: the plan of the account an address belongs to."""

    async def plan_of_address(self, connection: AsyncConnection, address: str) -> str | None:
        """One indexed read, only when a customer is created from an email address."""
        found = await connection.scalar(_PLAN_OF_ADDRESS, {"address": address})
        return str(found) if found is not None else None


# -- the mirror of a billing system the desk does not hold itself -----------------------------


async def pending_downgrade(session: AsyncSession, account_ref: str | None) -> bool:
    """Whether the desk's downgrade of this account still waits to reach the billing system."""
    if account_ref is None:
        return False
    found = await session.scalar(
        select(OutboxRow.id)
        .where(
            OutboxRow.recipient == account_ref,
            OutboxRow.kind == OutboxKind.BILLING_DOWNGRADE.value,
            OutboxRow.status == OutboxStatus.PENDING.value,
        )
        .limit(1)
    )
    return found is not None


async def mirror_rows(session: AsyncSession, email: str, ref: str | None) -> list[Account]:
    """The desk's rows of an account the billing system names by address and id (locked)."""
    clauses = [Account.email == email]
    if ref:
        clauses.append(Account.external_id == ref)
    query = select(Account).where(or_(*clauses)).order_by(Account.id).with_for_update()
    return list((await session.scalars(query)).all())


async def mirror_account(
    session: AsyncSession, summary: AccountSummary, at: datetime
) -> tuple[int, bool]:
    """The desk's row of an account the billing system answered for, made or brought up to
    date; and whether its plan changed. A downgrade the desk decided and has not delivered yet
    wins over an answer that still says Pro."""
    rows = await mirror_rows(session, summary.email, summary.ref)
    account = next((a for a in rows if summary.ref and a.external_id == summary.ref), None)
    account = account or next((a for a in rows if a.email == summary.email), None)
    plan = summary.plan
    if plan == Plan.PRO.value and await pending_downgrade(session, summary.ref):
        plan = Plan.BASIC.value
    if account is None:
        account = Account(
            email=summary.email,
            plan=plan,
            pro_since=summary.pro_since,
            external_id=summary.ref,
            created_at=at,
            updated_at=at,
        )
        session.add(account)
        await session.flush()
        return account.id, plan != Plan.BASIC.value
    changed = account.plan != plan
    wanted: dict[str, Any] = {"plan": plan, "pro_since": summary.pro_since}
    if summary.ref and account.external_id is None:
        wanted["external_id"] = summary.ref
    if account.email != summary.email and not any(a.email == summary.email for a in rows):
        wanted["email"] = summary.email
    if any(getattr(account, k) != v for k, v in wanted.items()):
        for key, value in wanted.items():
            setattr(account, key, value)
        account.updated_at = at
    return account.id, changed


class MirroredBilling:
    """A billing system the desk does not hold: every answer updates the desk's mirror of the
    account, and a plan that changed moves the account's customers and tickets at once."""

    local = False

    def __init__(
        self,
        inner: Billing,
        sessions: async_sessionmaker[AsyncSession],
        templates: Renderer,
        *,
        clock: Clock,
        wakeup: Callable[[], None] | None = None,
    ) -> None:
        self.inner = inner
        self._sessions = sessions
        self._templates = templates
        self._clock = clock
        self._wakeup = wakeup or (lambda: None)

    async def lookup(
        self,
        email: str,
        now: datetime,
        *,
        month: Month | None = None,
        session: AsyncSession | None = None,
    ) -> AccountSummary | None:
        """The billing system's answer, mirrored (see the class)."""
        return await self._mirrored(await self.inner.lookup(email, now, month=month))

    async def lookup_account(
        self,
        ref: str,
        now: datetime,
        *,
        month: Month | None = None,
        session: AsyncSession | None = None,
    ) -> AccountSummary | None:
        """The billing system's answer for an account id, mirrored."""
        return await self._mirrored(await self.inner.lookup_account(ref, now, month=month))

    async def _mirrored(self, summary: AccountSummary | None) -> AccountSummary | None:
        if summary is None:
            return None
        now = self._clock()
        async with self._sessions.begin() as session:
            account_id, changed = await mirror_account(session, summary, now)
            moved = []
            if changed:
                moved = await sync_plans(
                    session,
                    self._templates,
                    at=now,
                    reason=f"the billing system says {summary.plan.upper()}",
                    accounts=[account_id],
                )
        if moved:
            self._wakeup()
        return replace(summary, account_id=account_id)

    async def history(
        self, summary: AccountSummary, covering: Decimal, *, session: AsyncSession | None = None
    ) -> tuple[PaymentLine, ...]:
        """The inner adapter's."""
        return await self.inner.history(summary, covering)

    async def month_spends(self, month: Month, now: datetime) -> MonthSpends:
        """The inner adapter's."""
        return await self.inner.month_spends(month, now)

    async def record(self, session: AsyncSession, write: BillingWrite) -> int | None:
        """The inner adapter's (an outbox row)."""
        return await self.inner.record(session, write)

    async def send(self, write: BillingWrite) -> Outcome:
        """The inner adapter's."""
        return await self.inner.send(write)

    async def close(self) -> None:
        """The inner adapter's."""
        await self.inner.close()


def following(
    billing: Billing,
    sessions: async_sessionmaker[AsyncSession],
    templates: Renderer,
    *,
    clock: Clock,
    wakeup: Callable[[], None] | None = None,
) -> Billing:
    """The billing the desk works with: the ledger as it is, anything else mirrored."""
    if billing.local:
        return billing
    return MirroredBilling(billing, sessions, templates, clock=clock, wakeup=wakeup)


# -- the periodic refresh ---------------------------------------------------------------------


async def open_ticket_identities(session: AsyncSession) -> tuple[list[int], list[str]]:
    """The customers with open tickets, and the addresses to ask the billing system about:
    each one's linked account, else every address of theirs."""
    open_customers = select(Ticket.customer_id).where(Ticket.status == TicketStatus.OPEN.value)
    customers = sorted(set(await session.scalars(open_customers.distinct())))
    if not customers:
        return [], []
    linked = await session.execute(
        select(AccountLink.customer_id, Account.email)
        .join(Account, Account.id == AccountLink.account_id)
        .where(AccountLink.customer_id.in_(open_customers))
    )
    emails = {customer: email for customer, email in linked}
    addresses = await session.execute(
        select(CustomerEmail.customer_id, CustomerEmail.address).where(
            CustomerEmail.customer_id.in_(open_customers)
        )
    )
    wanted = set(emails.values())
    wanted.update(address for customer, address in addresses if customer not in emails)
    return customers, sorted(wanted)


class PlanRefresh:
    """Every few minutes: the accounts behind open tickets are read again, and their plans
    followed (an upgrade bought while a ticket waits moves it up within minutes)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        billing: Billing,
        templates: Renderer,
        *,
        clock: Clock,
        interval: float = REFRESH_SECONDS,
        wakeup: Callable[[], None] | None = None,
    ) -> None:
        self._sessions = sessions
        self._billing = billing
        self._templates = templates
        self._clock = clock
        self.interval = interval
        self._wakeup = wakeup or (lambda: None)

    async def run(self, stop: asyncio.Event) -> None:
        """Refresh at start and then every interval until `stop`; a failure waits for the next."""
        failed = "plan refresh failed; trying again later"
        await run_every(self.interval, self.run_once, stop, log=log, failed=failed)

    async def run_once(self) -> list[PlanChange]:
        """Read the accounts behind open tickets again and follow their plans."""
        now = self._clock()
        async with self._sessions() as session:
            customers, addresses = await open_ticket_identities(session)
        if not customers:
            return []
        if not self._billing.local:
            limit = asyncio.Semaphore(REFRESH_CONCURRENCY)

            async def read(address: str) -> None:
                async with limit:
                    try:
                        await self._billing.lookup(address, now)  # mirrored and followed
                    except BillingUnavailable as error:
                        log.warning("plan refresh: %s: %s", address, error)

            await asyncio.gather(*(read(a) for a in addresses))
        async with self._sessions.begin() as session:
            changes = await sync_plans(
                session, self._templates, at=now, reason="plan refresh", customers=customers
            )
        if changes:
            self._wakeup()
        return changes
