"""The `Billing` port: who answers balance lookups, and the built-in answer from the ledger.

A deployment whose billing system is the source of truth can answer balance lookups itself:
name a factory in `BILLING_FACTORY` (`package.module:function`); it is called once at start with
the database's session factory and returns an object with the `Billing` methods. The default,
`accounts.billing:ledger_billing`, answers from the imported ledger.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import Select, String, bindparam, func, select, true
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from accounts.ledger import normalise_email
from accounts.money import from_micros
from accounts.tables import Account, LedgerEntry, Payment
from tickets.errors import SupportbotError
from tickets.tables import UTCDateTime

DEFAULT_BILLING = "accounts.billing:ledger_billing"
PAYMENTS_SHOWN = 5
REFUND_WINDOW = timedelta(days=7)


class BillingError(SupportbotError):
    """The configured billing factory cannot be loaded, or it built no Billing."""


@dataclass(frozen=True)
class PaymentLine:
    """One payment as agents and customers see it."""

    paid_at: datetime
    purpose: str
    amount_usd: Decimal
    crypto_amount: str
    currency: str
    chain: str
    wallet: str
    tx_hash: str


@dataclass(frozen=True)
class AccountSummary:
    """What a balance lookup answers: balance, plan, recent payments and this month's spend."""

    email: str
    plan: str
    pro_since: datetime | None
    balance: Decimal
    month_spend: Decimal
    payments: tuple[PaymentLine, ...]  # newest first
    account_id: int | None = None  # the ledger's account id, when the ledger answered


@runtime_checkable
class Billing(Protocol):
    """Answers balance lookups; the ledger by default, a deployment's own system if configured."""

    async def lookup(self, email: str, now: datetime) -> AccountSummary | None:
        """The account registered with this (lower-cased) address, or None if there is none."""
        ...


BillingFactory = Callable[[async_sessionmaker[AsyncSession]], Billing]


def month_start(now: datetime) -> datetime:
    """The first moment of the calendar month (UTC) that `now` is in."""
    moment = now.astimezone(UTC)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


async def balance_and_spend(
    session: AsyncSession, account_id: int, now: datetime
) -> tuple[Decimal, Decimal]:
    """The balance (sum of every entry) and this month's usage, in one pass over the entries."""
    usage = (LedgerEntry.kind == "usage") & (LedgerEntry.at >= month_start(now))
    row = (
        await session.execute(
            select(
                func.coalesce(func.sum(LedgerEntry.amount), 0),
                func.coalesce(func.sum(LedgerEntry.amount).filter(usage), 0),
            ).where(LedgerEntry.account_id == account_id)
        )
    ).one()
    total, used = (_decimal(v) for v in row)
    return total, -used


def _decimal(value: object) -> Decimal:
    return value if isinstance(value, Decimal) else from_micros(int(str(value or 0)))


async def payments(
    session: AsyncSession,
    account_id: int,
    *,
    since: datetime | None = None,
    limit: int | None = PAYMENTS_SHOWN,
) -> list[PaymentLine]:
    """An account's payments, newest first: the last few, or all since a moment."""
    query = select(Payment).where(Payment.account_id == account_id)
    if since is not None:
        query = query.where(Payment.paid_at >= since)
    query = query.order_by(Payment.paid_at.desc(), Payment.id.desc())
    if limit is not None:
        query = query.limit(limit)
    return [_line(p) for p in await session.scalars(query)]


def _line(payment: Payment) -> PaymentLine:
    return PaymentLine(
        paid_at=payment.paid_at,
        purpose=payment.purpose,
        amount_usd=payment.amount_usd,
        crypto_amount=payment.crypto_amount,
        currency=payment.currency,
        chain=payment.chain,
        wallet=payment.wallet,
        tx_hash=payment.tx_hash,
    )


async def summary_of(session: AsyncSession, account: Account, now: datetime) -> AccountSummary:
    """The summary of a ledger account."""
    total, spent = await balance_and_spend(session, account.id, now)
    return AccountSummary(
        email=account.email,
        plan=account.plan,
        pro_since=account.pro_since,
        balance=total,
        month_spend=spent,
        payments=tuple(await payments(session, account.id)),
        account_id=account.id,
    )


async def refund_inputs(
    session: AsyncSession, account_id: int, now: datetime
) -> tuple[Decimal, list[PaymentLine]]:
    """What refund eligibility needs: the balance and every payment of the last 7 days."""
    total, _spent = await balance_and_spend(session, account_id, now)
    recent = await payments(session, account_id, since=now - REFUND_WINDOW, limit=None)
    return total, recent


class LedgerBilling:
    """The built-in Billing: answers from the imported accounts, payments and ledger entries."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def lookup(self, email: str, now: datetime) -> AccountSummary | None:
        """The ledger's summary of the account with this address, in one statement."""
        async with self._sessions() as session:
            params = {"email": normalise_email(email), "month": month_start(now)}
            rows = (await session.execute(SUMMARY_QUERY, params)).all()
        if not rows:
            return None
        first = rows[0]
        return AccountSummary(
            email=first.email,
            plan=first.plan,
            pro_since=first.pro_since,
            balance=_decimal(first.balance),
            month_spend=-_decimal(first.used),
            payments=tuple(
                PaymentLine(
                    paid_at=r.paid_at,
                    purpose=r.purpose,
                    amount_usd=r.amount_usd,
                    crypto_amount=r.crypto_amount,
                    currency=r.currency,
                    chain=r.chain,
                    wallet=r.wallet,
                    tx_hash=r.tx_hash,
                )
                for r in rows
                if r.paid_at is not None
            ),
            account_id=first.id,
        )


def _summary_query() -> Select[Any]:
    """The account, its balance and month's usage (one pass), and its last payments as rows.

    A lookup is one round trip: the account row comes once per payment shown (or once, with
    empty payment columns), the sums are computed once in a derived table. The statement is
    built once (parameters `email` and `month`): building it costs more than running it.
    """
    email = bindparam("email", type_=String)
    account_id = select(Account.id).where(Account.email == email).scalar_subquery()
    month = bindparam("month", type_=UTCDateTime())
    usage = (LedgerEntry.kind == "usage") & (LedgerEntry.at >= month)
    sums = (
        select(
            func.coalesce(func.sum(LedgerEntry.amount), 0).label("balance"),
            func.coalesce(func.sum(LedgerEntry.amount).filter(usage), 0).label("used"),
        )
        .where(LedgerEntry.account_id == account_id)
        .subquery()
    )
    recent = (
        select(Payment)
        .where(Payment.account_id == account_id)
        .order_by(Payment.paid_at.desc(), Payment.id.desc())
        .limit(PAYMENTS_SHOWN)
        .subquery()
    )
    return (
        select(
            Account.id,
            Account.email,
            Account.plan,
            Account.pro_since,
            sums.c.balance,
            sums.c.used,
            recent.c.paid_at,
            recent.c.purpose,
            recent.c.amount_usd,
            recent.c.crypto_amount,
            recent.c.currency,
            recent.c.chain,
            recent.c.wallet,
            recent.c.tx_hash,
        )
        .select_from(Account)
        .join(sums, true())
        .outerjoin(recent, true())
        .where(Account.email == email)
        .order_by(recent.c.paid_at.desc(), recent.c.id.desc())
    )


SUMMARY_QUERY = _summary_query()


def ledger_billing(sessions: async_sessionmaker[AsyncSession]) -> Billing:
    """The default factory named by `BILLING_FACTORY`."""
    return LedgerBilling(sessions)


def load_billing(path: str, sessions: async_sessionmaker[AsyncSession]) -> Billing:
    """Build the Billing a dotted path names (`module:factory` or `module.factory`)."""
    module_name, colon, attribute = path.partition(":")
    if not colon:
        module_name, _dot, attribute = path.rpartition(".")
    if not module_name or not attribute:
        raise BillingError(f"BILLING_FACTORY: expected module:function, got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise BillingError(f"BILLING_FACTORY: cannot import {module_name!r}: {error}") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise BillingError(f"BILLING_FACTORY: {module_name} has no function {attribute!r}")
    billing = factory(sessions)
    if not isinstance(billing, Billing):
        raise BillingError(f"BILLING_FACTORY: {path} returned {billing!r}, which has no lookup()")
    return billing


__all__: Sequence[str] = (
    "AccountSummary",
    "Billing",
    "BillingError",
    "LedgerBilling",
    "PaymentLine",
    "balance_and_spend",
    "ledger_billing",
    "load_billing",
    "month_start",
    "payments",
    "refund_inputs",
    "summary_of",
)
