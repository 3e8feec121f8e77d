"""SLA credits: who gets 1 % of their net spend back when a month's uptime fell short.

The rules (README "SLA credits", docs/decisions.md):

* Only a month whose uptime is below 99.5 % gives credits.
* An account counts as Pro for the month when it is on Pro now and became Pro before the month
  ended (`pro_since` unknown counts as Pro). An upgrade refunded since is back on Basic: nothing.
* It must have had a positive balance at some time in the month: the balance at the month's
  start, or after any of its entries within the month (in time order), above zero.
* Net spend = what its `usage` entries in the month took from the balance, less usage given back
  (positive `usage` entries), never below zero. Top-ups, refunds, credits and adjustments are
  not spend.
* The credit is 1 % of that, rounded half-even to the cent; one that rounds to $0.00 is not given.
* Once per account and month, enforced by the UNIQUE(account_id, month) of `sla_credits`: an
  account's credit (that row first, then its ledger entry, notice and audit entry) is written in
  one transaction, with a batch of other accounts in account order; re-runs and concurrent runs
  find the row there (PostgreSQL makes them wait for it to commit) and credit nothing twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import case, func, literal, or_, select, type_coerce, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from accounts.ledger import balance
from accounts.money import Money, cents
from accounts.tables import Account, AccountLink, LedgerEntry, SlaCredit
from accounts.uptime import Month, Uptime
from tickets import audit
from tickets.errors import SupportbotError
from tickets.model import OutboxKind, Route
from tickets.notices import notify_agents
from tickets.outbox import enqueue
from tickets.ports import Renderer
from tickets.tables import Customer

PROMISE = Decimal("99.5")
RATE = Decimal("0.01")
CENT = Decimal("0.01")
ZERO = literal(Decimal(0), Money)
BATCH = 100  # accounts credited per transaction


class MonthNotOver(SupportbotError):
    """Credits are for whole months: one still running (or to come) cannot be applied."""


# -- the policy (pure) ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MonthTotals:
    """An account's month as the ledger sums it up (the database does the summing)."""

    opening: Decimal  # the balance when the month starts
    usage: Decimal  # the sum of its `usage` entries in the month (debits are negative)
    peak: Decimal | None  # the highest running sum of its month's entries, in time order


@dataclass(frozen=True)
class Assessment:
    positive: bool
    net_spend: Decimal


def assess(month: MonthTotals) -> Assessment:
    """Whether the balance was above zero at some time in the month, and the month's net spend."""
    positive = month.opening > 0 or (month.peak is not None and month.opening + month.peak > 0)
    return Assessment(positive=positive, net_spend=max(Decimal(0), -month.usage))


def credit_for(net_spend: Decimal) -> Decimal:
    """1 % of the net spend, rounded half-even to the cent."""
    return (net_spend * RATE).quantize(CENT, rounding=ROUND_HALF_EVEN)


def gives_credits(uptime: Uptime) -> bool:
    """Only a month below the promised 99.5 % gives credits."""
    return uptime.below(PROMISE)


class LineStatus(StrEnum):
    TO_CREDIT = "to credit"
    CREDITED = "credited already"
    BELOW_A_CENT = "below one cent"


@dataclass(frozen=True)
class CreditLine:
    """One Pro account that had money in the month: its net spend and its credit."""

    account_id: int
    email: str
    net_spend: Decimal
    amount: Decimal
    status: LineStatus


@dataclass(frozen=True)
class CreditPlan:
    """What a month's SLA credits are (or were): the preview, and what `apply` writes."""

    month: Month
    uptime: Uptime
    lines: tuple[CreditLine, ...]

    @property
    def applies(self) -> bool:
        return gives_credits(self.uptime)

    def with_status(self, status: LineStatus) -> list[CreditLine]:
        return [line for line in self.lines if line.status is status]

    def total(self, status: LineStatus = LineStatus.TO_CREDIT) -> Decimal:
        return sum((line.amount for line in self.with_status(status)), Decimal(0))


# -- reading the ledger ---------------------------------------------------------------------------


def _is_pro(month: Month) -> Any:
    return (Account.plan == "pro") & or_(Account.pro_since.is_(None), Account.pro_since < month.end)


async def plan_credits(session: AsyncSession, month: Month, uptime: Uptime) -> CreditPlan:
    """The month's credits as they stand: every Pro account with money in the month."""
    if not gives_credits(uptime):
        return CreditPlan(month, uptime, ())
    pro = select(Account.id).where(_is_pro(month)).scalar_subquery()
    accounts = await session.execute(select(Account.id, Account.email).where(_is_pro(month)))
    emails: dict[int, str] = {account_id: email for account_id, email in accounts}
    sums = await session.execute(
        select(LedgerEntry.account_id, func.sum(LedgerEntry.amount))
        .where(LedgerEntry.account_id.in_(pro), LedgerEntry.at < month.start)
        .group_by(LedgerEntry.account_id)
    )
    opening: dict[int, Decimal] = {account_id: total for account_id, total in sums}
    credited = await session.execute(
        select(SlaCredit.account_id, SlaCredit.amount).where(SlaCredit.month == str(month))
    )
    done: dict[int, Decimal] = {account_id: amount for account_id, amount in credited}
    # Per account: its usage in the month, and the highest balance change after any of its
    # entries (a running sum in time order); opening + that peak is its highest balance.
    running = func.sum(LedgerEntry.amount).over(
        partition_by=LedgerEntry.account_id,
        order_by=(LedgerEntry.at, LedgerEntry.id),
        rows=(None, 0),
    )
    entries = (
        select(
            LedgerEntry.account_id.label("account_id"),
            case((LedgerEntry.kind == "usage", LedgerEntry.amount), else_=ZERO).label("usage"),
            running.label("running"),
        )
        .where(
            LedgerEntry.account_id.in_(pro),
            LedgerEntry.at >= month.start,
            LedgerEntry.at < month.end,
        )
        .subquery()
    )
    month_rows = await session.execute(
        select(
            entries.c.account_id,
            type_coerce(func.sum(entries.c.usage), Money),
            type_coerce(func.max(entries.c.running), Money),
        ).group_by(entries.c.account_id)
    )
    totals = {account_id: (usage, peak) for account_id, usage, peak in month_rows}
    lines = []
    for account_id in sorted(emails):
        usage, peak = totals.get(account_id, (Decimal(0), None))
        found = assess(MonthTotals(opening.get(account_id, Decimal(0)), usage, peak))
        if not found.positive and account_id not in done:
            continue
        amount = credit_for(found.net_spend)
        if account_id in done:
            status, amount = LineStatus.CREDITED, done[account_id]
        else:
            status = LineStatus.TO_CREDIT if amount > 0 else LineStatus.BELOW_A_CENT
        lines.append(CreditLine(account_id, emails[account_id], found.net_spend, amount, status))
    return CreditPlan(month, uptime, tuple(lines))


# -- applying -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoticeRoutes:
    """Which customer channels can carry a credit notice in this configuration."""

    telegram: bool
    email: bool
    mail_domain: str = "supportbot.invalid"


@dataclass(frozen=True)
class Applied:
    """What one apply run did."""

    month: Month
    credited: tuple[CreditLine, ...]
    already: int  # found credited by an earlier or concurrent run
    by_telegram: int
    by_email: int

    @property
    def total(self) -> Decimal:
        return sum((line.amount for line in self.credited), Decimal(0))

    @property
    def not_told(self) -> int:
        return len(self.credited) - self.by_telegram - self.by_email


async def apply_credits(
    sessions: async_sessionmaker[AsyncSession],
    plan: CreditPlan,
    *,
    templates: Renderer,
    routes: NoticeRoutes,
    at: datetime,
    actor: str,
    batch: int = BATCH,
) -> Applied:
    """Credit every line still to credit, a batch of accounts per transaction; tell the agents.

    A month that has not ended is refused (`MonthNotOver`): its uptime and spend are not final,
    and a credit, once given, blocks the month's real one for good.
    """
    if plan.month.end > at:
        raise MonthNotOver(
            f"{plan.month} has not ended: SLA credits are for whole months; apply them from "
            f"{plan.month.end:%Y-%m-%d} 00:00 UTC"
        )
    credited: list[CreditLine] = []
    already = told_telegram = told_email = 0
    if not plan.applies:
        return Applied(plan.month, (), 0, 0, 0)
    lines = plan.with_status(LineStatus.TO_CREDIT)  # in account order, so batches never deadlock
    for low in range(0, len(lines), batch):
        outcomes = []
        async with sessions.begin() as session:
            for line in lines[low : low + batch]:
                done, route = await _credit_one(session, plan, line, templates, routes, at, actor)
                outcomes.append((line, done, route))
        for line, done, route in outcomes:
            if not done:
                already += 1
                continue
            credited.append(line)
            told_telegram += route is Route.TELEGRAM
            told_email += route is Route.EMAIL
    applied = Applied(plan.month, tuple(credited), already, told_telegram, told_email)
    if credited:
        async with sessions.begin() as session:
            _summary(session, plan, applied, templates, at)
    return applied


async def _credit_one(
    session: AsyncSession,
    plan: CreditPlan,
    line: CreditLine,
    templates: Renderer,
    routes: NoticeRoutes,
    at: datetime,
    actor: str,
) -> tuple[bool, Route | None]:
    """Credit one account once: whether this run credited it, and how the customer is told."""
    month, uptime = str(plan.month), str(plan.uptime.percent)
    credit_id = await _insert_ignore(
        session,
        {
            "account_id": line.account_id,
            "month": month,
            "net_spend": line.net_spend,
            "amount": line.amount,
            "uptime": uptime,
            "created_at": at,
            "details": plan.uptime.detail[:2000],
        },
    )
    if credit_id is None:
        return False, None
    entry = LedgerEntry(
        account_id=line.account_id,
        kind="credit",
        amount=line.amount,
        at=at,
        external_id=f"sla-credit:{month}:{line.account_id}",
        note=f"SLA credit for {month}: uptime {uptime} %, 1 % of net spend {line.net_spend}",
    )
    session.add(entry)
    await session.flush()
    await session.execute(
        update(SlaCredit).where(SlaCredit.id == credit_id).values(ledger_entry_id=entry.id)
    )
    new_balance = await balance(session, line.account_id)
    route = await _tell_customer(session, plan, line, new_balance, templates, routes, at)
    audit.record(
        session,
        at=at,
        action="sla_credit",
        actor=actor,
        account_id=line.account_id,
        month=month,
        uptime=uptime,
        net_spend=str(line.net_spend),
        amount=str(line.amount),
        notice=route.value if route is not None else "none",
    )
    return True, route


def record_refusal(
    session: AsyncSession, *, month: Month, reason: str, actor: str, at: datetime
) -> None:
    """Audit credits that were asked for but refused (unusable uptime data)."""
    audit.record(
        session, at=at, action="refused:sla_credits", actor=actor, month=str(month), reason=reason
    )


async def _insert_ignore(session: AsyncSession, values: dict[str, Any]) -> int | None:
    """INSERT … ON CONFLICT DO NOTHING on either database; the new row's id, or None."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    result = await session.execute(
        insert(SlaCredit).values(**values).on_conflict_do_nothing().returning(SlaCredit.id)
    )
    inserted = result.scalar()
    return int(inserted) if inserted is not None else None


async def _tell_customer(
    session: AsyncSession,
    plan: CreditPlan,
    line: CreditLine,
    new_balance: Decimal,
    templates: Renderer,
    routes: NoticeRoutes,
    at: datetime,
) -> Route | None:
    """A factual notice over the customer's channel: a linked Telegram chat, else the email."""
    facts = {
        "month": str(plan.month),
        "month_label": plan.month.label,
        "uptime": plan.uptime.percent,
        "net_spend": cents(line.net_spend),
        "amount": cents(line.amount),
        "balance": cents(new_balance),
        "email": line.email,
    }
    text = templates.render("accounts/sla_credit", **facts)
    payload: dict[str, Any] = {"event": "sla_credit", "text": text, "automatic": True}
    chat = None
    if routes.telegram:
        chat = await session.scalar(
            select(Customer.telegram_id)
            .join(AccountLink, AccountLink.customer_id == Customer.id)
            .where(
                AccountLink.account_id == line.account_id,
                Customer.telegram_id.is_not(None),
                Customer.unreachable_at.is_(None),
                Customer.banned_at.is_(None),
            )
            .order_by(AccountLink.linked_at.desc(), AccountLink.id.desc())
            .limit(1)
        )
    if chat is not None:
        route, recipient = Route.TELEGRAM, str(chat)
    elif routes.email:
        route, recipient = Route.EMAIL, line.email
        payload["subject_line"] = templates.render("accounts/sla_credit_subject", **facts)
        payload["message_id"] = (
            f"<sla-credit-{plan.month}-{line.account_id}-{uuid.uuid4().hex[:12]}"
            f"@{routes.mail_domain}>"
        )
    else:
        return None
    enqueue(
        session, route=route, recipient=recipient, kind=OutboxKind.NOTICE, payload=payload, at=at
    )
    return route


def _summary(
    session: AsyncSession, plan: CreditPlan, applied: Applied, templates: Renderer, at: datetime
) -> None:
    notify_agents(
        session,
        templates,
        "sla_credits",
        at=at,
        month=str(plan.month),
        month_label=plan.month.label,
        uptime=str(plan.uptime.percent),
        source=plan.uptime.source,
        credited=len(applied.credited),
        total=cents(applied.total),
        already=applied.already + len(plan.with_status(LineStatus.CREDITED)),
        by_telegram=applied.by_telegram,
        by_email=applied.by_email,
        not_told=applied.not_told,
    )
