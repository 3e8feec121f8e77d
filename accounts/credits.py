"""SLA credits: who gets 1 % of their net spend back when a month's uptime fell short.

The rules (README "SLA credits", docs/decisions.md):

* Only a month whose uptime is below 99.5 % gives credits.
* Who was Pro in the month, with what net spend, comes from the Billing port
  (`Billing.month_spends`): the built-in ledger works it out from its entries (Pro now and
  since before the month ended; a positive balance at some time in the month; net spend = what
  `usage` entries took, less usage given back, never below zero), a billing service says so.
* The credit is 1 % of that, kept in micro-dollars (rounded half-even to the millionth of a
  dollar, as every amount of the ledger), so no sub-cent amount is lost; a credit of zero (no
  spend) is not given.
* The month's data must be final: the port says so, or the ledger has an import made after the
  month ended. A credit given before that (on the 10th, the deadline) is provisional; once the
  data is final a larger credit is topped up (never clawed back).
* Once per account and month, enforced by the UNIQUE(account_id, month) of `sla_credits`: an
  account's credit (that row first, then the write back through the port, the notice and the
  audit entry) is written in one transaction, with a batch of other accounts in account order;
  re-runs and concurrent runs find the row there and credit nothing twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from accounts.billing import Billing, BillingWrite, MonthSpend, MonthSpends, WriteKind
from accounts.ledger import balance
from accounts.ledger_billing import LedgerBilling, ledger_month
from accounts.money import QUANTUM, cents
from accounts.plans import mirror_rows
from accounts.tables import Account, AccountLink, SlaCredit
from accounts.uptime import Uptime
from tickets import audit
from tickets.customer_lookup import locale_of
from tickets.dialect_sql import insert_ignore
from tickets.errors import SupportbotError
from tickets.languages import decimal, month_label, usd
from tickets.model import OutboxKind, Plan, Route
from tickets.months import Month
from tickets.notices import notify_agents
from tickets.payloads import NoticePayload, enqueue
from tickets.ports import Renderer
from tickets.tables import Customer, CustomerEmail

PROMISE = Decimal("99.5")
RATE = Decimal("0.01")
BATCH = 100  # accounts credited per transaction


class MonthNotOver(SupportbotError):
    """Credits are for whole months: one still running (or to come) cannot be applied."""


# -- the policy (pure) ----------------------------------------------------------------------------


def credit_for(net_spend: Decimal) -> Decimal:
    """1 % of the net spend, to the micro-dollar (half-even), like every amount of the ledger."""
    return (net_spend * RATE).quantize(QUANTUM, rounding=ROUND_HALF_EVEN)


def gives_credits(uptime: Uptime) -> bool:
    """Only a month below the promised 99.5 % gives credits."""
    return uptime.below(PROMISE)


class LineStatus(StrEnum):
    TO_CREDIT = "to credit"
    CREDITED = "credited already"
    TOP_UP = "to top up"  # credited provisionally, and the final data gives more
    NOTHING = "nothing spent"


@dataclass(frozen=True)
class CreditLine:
    """One Pro account that had money in the month: its net spend and its credit."""

    account_id: int
    email: str
    net_spend: Decimal
    amount: Decimal  # the credit it is due (for TOP_UP: the difference still due)
    status: LineStatus
    account_ref: str | None = None
    credit_id: int | None = None  # the existing credit row (CREDITED, TOP_UP)


@dataclass(frozen=True)
class CreditPlan:
    """What a month's SLA credits are (or were): the preview, and what `apply` writes."""

    month: Month
    uptime: Uptime
    lines: tuple[CreditLine, ...]
    final: bool = True  # the billing data of the month is final
    as_of: datetime | None = None  # how fresh the billing data is

    @property
    def applies(self) -> bool:
        return gives_credits(self.uptime)

    def with_status(self, status: LineStatus) -> list[CreditLine]:
        return [line for line in self.lines if line.status is status]

    def total(self, status: LineStatus = LineStatus.TO_CREDIT) -> Decimal:
        return sum((line.amount for line in self.with_status(status)), Decimal(0))


# -- reading --------------------------------------------------------------------------------------


async def plan_credits(
    session: AsyncSession, month: Month, uptime: Uptime, spends: MonthSpends | None = None
) -> CreditPlan:
    """The month's credits as they stand: every Pro account with money in the month.

    `spends` is what the Billing port said of the month; without it, the ledger's own answer.
    """
    if not gives_credits(uptime):
        return CreditPlan(month, uptime, ())
    if spends is None:
        spends = await ledger_month(session, month)
    ids = await _account_ids(session, spends.accounts, spends.as_of or month.end)
    credited = await session.execute(
        select(SlaCredit.account_id, SlaCredit.id, SlaCredit.amount, SlaCredit.provisional).where(
            SlaCredit.month == str(month)
        )
    )
    done = {row.account_id: row for row in credited}
    lines = []
    for spend, account_id in sorted(zip(spends.accounts, ids, strict=True), key=lambda p: p[1]):
        if not spend.positive and account_id not in done:
            continue
        amount = credit_for(spend.net_spend)
        earlier = done.get(account_id)
        if earlier is None:
            status = LineStatus.TO_CREDIT if amount > 0 else LineStatus.NOTHING
            line = CreditLine(account_id, spend.email, spend.net_spend, amount, status, spend.ref)
        elif earlier.provisional and spends.complete and amount > earlier.amount:
            line = CreditLine(
                account_id,
                spend.email,
                spend.net_spend,
                amount - earlier.amount,
                LineStatus.TOP_UP,
                spend.ref,
                earlier.id,
            )
        else:
            line = CreditLine(
                account_id,
                spend.email,
                spend.net_spend,
                earlier.amount,
                LineStatus.CREDITED,
                spend.ref,
                earlier.id,
            )
        lines.append(line)
    return CreditPlan(month, uptime, tuple(lines), spends.complete, spends.as_of)


async def _account_ids(
    session: AsyncSession, spends: tuple[MonthSpend, ...], at: datetime
) -> list[int]:
    """The desk's account row of each spend; a billing service's accounts it has not seen yet
    get a mirror row (credits and their notices refer to it)."""
    ids = []
    for spend in spends:
        if spend.account_id is not None:
            ids.append(spend.account_id)
            continue
        rows = await mirror_rows(session, spend.email, spend.ref)
        found = rows[0].id if rows else None
        if found is None:
            account = Account(
                email=spend.email,
                plan=Plan.PRO.value,
                pro_since=spend.pro_since,
                external_id=spend.ref,
                created_at=at,
                updated_at=at,
            )
            session.add(account)
            await session.flush()
            found = account.id
        ids.append(int(found))
    return ids


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
    billing: Billing | None = None,
    batch: int = BATCH,
) -> Applied:
    """Credit every line still to credit (or to top up), a batch of accounts per transaction,
    each written back through the port; tell the agents.

    A month that has not ended is refused (`MonthNotOver`): its uptime and spend are not final,
    and a credit, once given, blocks the month's real one for good.
    """
    if plan.month.end > at:
        raise MonthNotOver(
            f"{plan.month} has not ended: SLA credits are for whole months; apply them from "
            f"{plan.month.end:%Y-%m-%d} 00:00 UTC"
        )
    billing = billing or LedgerBilling(sessions)
    credited: list[CreditLine] = []
    already = told_telegram = told_email = 0
    if not plan.applies:
        return Applied(plan.month, (), 0, 0, 0)
    due = (LineStatus.TO_CREDIT, LineStatus.TOP_UP)
    lines = [line for line in plan.lines if line.status in due]  # in account order: no deadlock
    for low in range(0, len(lines), batch):
        outcomes = []
        async with sessions.begin() as session:
            for line in lines[low : low + batch]:
                done, route = await _credit_one(
                    session, plan, line, billing, templates, routes, at, actor
                )
                outcomes.append((line, done, route))
        for line, done, route in outcomes:
            if not done:
                already += 1
                continue
            credited.append(line)
            told_telegram += route is Route.TELEGRAM
            told_email += route is Route.EMAIL
    applied = Applied(plan.month, tuple(credited), already, told_telegram, told_email)
    async with sessions.begin() as session:
        if plan.final:  # what was provisional and needs no top-up is settled as it is
            await session.execute(
                update(SlaCredit)
                .where(SlaCredit.month == str(plan.month), SlaCredit.provisional.is_(True))
                .values(provisional=False)
            )
        if credited:
            _summary(session, plan, applied, templates, at)
    return applied


async def _credit_one(
    session: AsyncSession,
    plan: CreditPlan,
    line: CreditLine,
    billing: Billing,
    templates: Renderer,
    routes: NoticeRoutes,
    at: datetime,
    actor: str,
) -> tuple[bool, Route | None]:
    """Credit one account once (or top it up once): whether this run did, and how the
    customer is told."""
    month, uptime = str(plan.month), str(plan.uptime.percent)
    key = f"sla-credit:{month}:{line.account_id}"
    if line.status is LineStatus.TOP_UP:
        credit_id = await session.scalar(
            update(SlaCredit)
            .where(SlaCredit.id == line.credit_id, SlaCredit.provisional.is_(True))
            .values(
                provisional=False, amount=SlaCredit.amount + line.amount, net_spend=line.net_spend
            )
            .returning(SlaCredit.id)
        )
        key = f"{key}:final"
    else:
        credit_id = await insert_ignore(
            session,
            SlaCredit,
            {
                "account_id": line.account_id,
                "month": month,
                "net_spend": line.net_spend,
                "amount": line.amount,
                "uptime": uptime,
                "created_at": at,
                "details": plan.uptime.detail[:2000],
                "provisional": not plan.final,
            },
        )
    if credit_id is None:
        return False, None
    note = f"SLA credit for {month}: uptime {uptime} %, 1 % of net spend {line.net_spend}"
    if line.status is LineStatus.TOP_UP:
        note += " (top-up of a provisional credit, now that the month's data is final)"
    entry_id = await billing.record(
        session,
        BillingWrite(
            kind=WriteKind.CREDIT,
            key=key,
            account_id=line.account_id,
            account_ref=line.account_ref,
            email=line.email,
            at=at,
            amount=line.amount,
            month=month,
            net_spend=line.net_spend,
            uptime=uptime,
            reason=note,
        ),
    )
    if entry_id is not None and line.status is LineStatus.TO_CREDIT:
        await session.execute(
            update(SlaCredit).where(SlaCredit.id == credit_id).values(ledger_entry_id=entry_id)
        )
    new_balance = await balance(session, line.account_id) if billing.local else None
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
        top_up=line.status is LineStatus.TOP_UP,
        provisional=not plan.final,
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


async def _tell_customer(
    session: AsyncSession,
    plan: CreditPlan,
    line: CreditLine,
    new_balance: Decimal | None,
    templates: Renderer,
    routes: NoticeRoutes,
    at: datetime,
) -> Route | None:
    """A factual notice over the customer's channel: a linked Telegram chat, else the email,
    in the customer's language."""
    chat = None
    if routes.telegram:
        chat = (
            await session.execute(
                select(Customer.telegram_id, Customer.id)
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
        ).first()
    if chat is not None:
        route, recipient, customer_id = Route.TELEGRAM, str(chat.telegram_id), chat.id
    elif routes.email:
        route, recipient = Route.EMAIL, line.email
        customer_id = await session.scalar(
            select(CustomerEmail.customer_id).where(CustomerEmail.address == line.email.lower())
        )
    else:
        return None
    locale = await locale_of(await session.connection(), customer_id)
    facts = {
        "month": str(plan.month),
        "month_label": month_label(plan.month.year, plan.month.month, locale),
        "uptime": decimal(plan.uptime.percent, locale),
        "net_spend": usd(line.net_spend, locale),
        "amount": usd(line.amount, locale),
        "balance": usd(new_balance, locale) if new_balance is not None else None,
        "top_up": line.status is LineStatus.TOP_UP,
        "email": line.email,
    }
    text = templates.render("accounts/sla_credit", locale=locale, **facts)
    payload: NoticePayload = {
        "event": "sla_credit",
        "text": text,
        "automatic": True,
        "locale": locale,
    }
    if route is Route.EMAIL:
        payload["subject_line"] = templates.render(
            "accounts/sla_credit_subject", locale=locale, **facts
        )
        payload["message_id"] = (
            f"<sla-credit-{plan.month}-{line.account_id}-{uuid.uuid4().hex[:12]}"
            f"@{routes.mail_domain}>"
        )
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
        final=plan.final,
        top_ups=sum(1 for line in applied.credited if line.status is LineStatus.TOP_UP),
    )
