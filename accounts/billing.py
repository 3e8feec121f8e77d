"""The `Billing` port: the business's system of record, read and written by the desk.

The billing system owns accounts, plans, payments and usage. The desk reads an account through
this port (by email or by the billing system's account id) and writes back what it decides —
a refund debit with its payouts, a Pro downgrade, an SLA credit — each with an idempotency key
the desk makes. Two adapters ship:

* the built-in ledger (`accounts.ledger_billing`), the embedded default: the accounts, payments
  and ledger entries imported into the desk's own database. Its answers are as fresh as the last
  import; its writes are applied in the desk's own transaction.
* an HTTP adapter (`accounts.http_billing`) for a billing service that speaks the JSON contract
  of docs/billing-api.md. Its writes are outbox rows (route `billing`), retried with backoff and
  reported to the agents when they fail for good; the idempotency key makes a retry harmless.

A deployment can also name its own adapter in `BILLING_FACTORY` (`package.module:function`,
called once at start with the database's session factory). Whatever answers, the desk keeps a
mirror of each account's identity and plan in its `accounts` table (`accounts.plans`), which is
what identity, plan sync and payouts refer to.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from accounts.money import money
from tickets.errors import SupportbotError
from tickets.months import Month
from tickets.outbox import Outcome
from tickets.payloads import BillingWritePayload

DEFAULT_BILLING = "accounts.billing:ledger_billing"
REFUND_WINDOW = timedelta(days=7)


class BillingError(SupportbotError):
    """The configured billing factory cannot be loaded, or it built no Billing."""


class BillingUnavailable(SupportbotError):
    """The billing system could not be read (down, too slow, refused us); nothing was done."""


class BillingMalformed(BillingUnavailable):
    """The billing system answered, but not in the contract's shape; nothing was done."""


@dataclass(frozen=True)
class PaymentLine:
    """One payment as agents and customers see it."""

    paid_at: datetime
    purpose: str  # topup | pro_upgrade
    amount_usd: Decimal
    crypto_amount: str
    currency: str
    chain: str
    wallet: str
    tx_hash: str
    ref: str = ""  # the billing system's payment id


@dataclass(frozen=True)
class AccountSummary:
    """What a read of an account answers, and how fresh it is (`as_of`)."""

    email: str
    plan: str
    pro_since: datetime | None
    balance: Decimal
    month_spend: Decimal  # net spend of `month`
    payments: tuple[PaymentLine, ...]  # newest first: at least those of the last 7 days
    account_id: int | None = None  # the desk's row (ledger account or mirror), once known
    ref: str | None = None  # the billing system's account id
    pro_limits_used: bool = False  # Pro-tier rate limits used since the account became Pro
    as_of: datetime | None = None  # None: nobody knows (a ledger that was never imported)
    month: str = ""  # YYYY-MM of month_spend

    def age(self, now: datetime) -> timedelta | None:
        """How old the answer's data is at `now` (None when unknown)."""
        return None if self.as_of is None else max(now - self.as_of, timedelta(0))


@dataclass(frozen=True)
class MonthSpend:
    """A Pro account's net spend in a month, as the SLA credits need it."""

    email: str
    net_spend: Decimal
    positive: bool = True  # had a positive balance at some time in the month
    account_id: int | None = None
    ref: str | None = None
    pro_since: datetime | None = None


@dataclass(frozen=True)
class MonthSpends:
    """Every account that was Pro in a month with its net spend, and whether the data is final."""

    month: Month
    complete: bool
    as_of: datetime | None
    accounts: tuple[MonthSpend, ...]


class WriteKind(StrEnum):
    """What the desk writes back to the system of record."""

    REFUND = "refund"  # a debit of the balance, with the payouts it pays
    DOWNGRADE = "downgrade"  # the Pro upgrade was refunded: back to Basic
    CREDIT = "credit"  # an SLA credit


@dataclass(frozen=True)
class PayoutLine:
    """Money going back to one payment's wallet, as a refund write carries it."""

    payment_id: int  # the desk's payment row
    payment_ref: str  # the billing system's payment id
    purpose: str
    amount: Decimal
    currency: str
    chain: str
    wallet: str


@dataclass(frozen=True)
class BillingWrite:
    """One write the desk decided; `key` makes applying it twice impossible."""

    kind: WriteKind
    key: str
    account_id: int
    email: str
    at: datetime
    amount: Decimal = Decimal(0)  # REFUND: the balance debit; CREDIT: the credit
    account_ref: str | None = None
    refund_id: int | None = None
    ticket_id: int | None = None
    payouts: tuple[PayoutLine, ...] = ()
    month: str | None = None
    net_spend: Decimal | None = None
    uptime: str | None = None
    reason: str = ""

    def to_json(self) -> BillingWritePayload:
        """The outbox payload of this write (amounts as exact decimal text)."""
        return {
            "kind": self.kind.value,
            "key": self.key,
            "account_id": self.account_id,
            "account_ref": self.account_ref,
            "email": self.email,
            "at": self.at.isoformat(),
            "amount": str(self.amount),
            "refund_id": self.refund_id,
            "ticket_id": self.ticket_id,
            "payouts": [
                {
                    "payment_id": p.payment_id,
                    "payment_ref": p.payment_ref,
                    "purpose": p.purpose,
                    "amount": str(p.amount),
                    "currency": p.currency,
                    "chain": p.chain,
                    "wallet": p.wallet,
                }
                for p in self.payouts
            ],
            "month": self.month,
            "net_spend": None if self.net_spend is None else str(self.net_spend),
            "uptime": self.uptime,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BillingWrite:
        """The write an outbox payload holds (see `to_json`)."""
        net = data.get("net_spend")
        return cls(
            kind=WriteKind(data["kind"]),
            key=str(data["key"]),
            account_id=int(data["account_id"]),
            account_ref=data.get("account_ref"),
            email=str(data["email"]),
            at=datetime.fromisoformat(data["at"]).astimezone(UTC),
            amount=money(str(data["amount"])),
            refund_id=data.get("refund_id"),
            ticket_id=data.get("ticket_id"),
            payouts=tuple(
                PayoutLine(
                    payment_id=int(p["payment_id"]),
                    payment_ref=str(p["payment_ref"]),
                    purpose=str(p["purpose"]),
                    amount=money(str(p["amount"])),
                    currency=str(p["currency"]),
                    chain=str(p["chain"]),
                    wallet=str(p["wallet"]),
                )
                for p in data.get("payouts") or []
            ),
            month=data.get("month"),
            net_spend=None if net is None else money(str(net)),
            uptime=data.get("uptime"),
            reason=str(data.get("reason") or ""),
        )


@runtime_checkable
class Billing(Protocol):
    """The system of record: reads accounts, takes the desk's writes."""

    @property
    def local(self) -> bool:
        """Whether its data is the desk's own accounts tables (the built-in ledger)."""
        ...

    async def lookup(
        self,
        email: str,
        now: datetime,
        *,
        month: Month | None = None,
        session: AsyncSession | None = None,
    ) -> AccountSummary | None:
        """The account registered with this (lower-cased) address, or None if there is none.

        `month` picks the month of `month_spend` (default: the month of `now`). An adapter whose
        data is in the desk's database reads in the caller's `session` when given one.
        """
        ...

    async def lookup_account(
        self,
        ref: str,
        now: datetime,
        *,
        month: Month | None = None,
        session: AsyncSession | None = None,
    ) -> AccountSummary | None:
        """The account with the billing system's id `ref`, or None if there is none."""
        ...

    async def history(
        self, summary: AccountSummary, covering: Decimal, *, session: AsyncSession | None = None
    ) -> tuple[PaymentLine, ...]:
        """Top-ups of the account newest first, as far back as it takes to cover `covering`."""
        ...

    async def month_spends(self, month: Month, now: datetime) -> MonthSpends:
        """The month's Pro accounts with their net spend, and whether the month is final."""
        ...

    async def record(self, session: AsyncSession, write: BillingWrite) -> int | None:
        """Record a write in the caller's transaction: applied there, or queued in the outbox.

        Returns the ledger entry it made, when it made one.
        """
        ...

    async def send(self, write: BillingWrite) -> Outcome:
        """Deliver a queued write to the billing system (the outbox's `billing` route)."""
        ...

    async def close(self) -> None:
        """Let go of connections."""
        ...


BillingFactory = Callable[[async_sessionmaker[AsyncSession]], Billing]


def month_start(now: datetime) -> datetime:
    """The first moment of the calendar month (UTC) that `now` is in."""
    moment = now.astimezone(UTC)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def ledger_billing(sessions: async_sessionmaker[AsyncSession]) -> Billing:
    """The default factory named by `BILLING_FACTORY`: the built-in ledger. It is found by name,
    like any other factory, so the port never imports the adapter that builds on it."""
    return load_billing("accounts.ledger_billing:LedgerBilling", sessions)


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
        raise BillingError(
            f"BILLING_FACTORY: {path} returned {billing!r}, which lacks the Billing methods "
            "(lookup, lookup_account, history, month_spends, record, send, close)"
        )
    return billing


__all__: Sequence[str] = (
    "AccountSummary",
    "Billing",
    "BillingError",
    "BillingMalformed",
    "BillingUnavailable",
    "BillingWrite",
    "MonthSpend",
    "MonthSpends",
    "PaymentLine",
    "PayoutLine",
    "WriteKind",
    "ledger_billing",
    "load_billing",
    "month_start",
)
