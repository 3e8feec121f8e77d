"""Storage of the accounts domain, in the same metadata as the ticket tables.

Money columns are `Money` (exact micro-dollars). A balance is never stored: it is the sum of an
account's ledger entries. The unique constraints carry the money rules that must hold even when
two agents act at the same moment: a payment is refunded at most once (`payouts.payment_id`),
an account is credited at most once per month (`sla_credits`), and an imported row is applied
at most once (`external_id`).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from accounts.money import Money
from tickets.tables import Base


class Account(Base):
    """A customer account of the business's billing system, keyed by its email."""

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # lower-cased
    plan: Mapped[str] = mapped_column(String(16), default="basic")  # basic | pro
    pro_since: Mapped[datetime | None]
    # The last time the account used Pro-tier rate limits; the upgrade is refundable only when
    # this is before `pro_since` (or never).
    pro_limits_used_at: Mapped[datetime | None]
    external_id: Mapped[str | None] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Payment(Base):
    """A crypto payment: a top-up of the balance or the Pro upgrade, from one wallet."""

    __tablename__ = "payments"
    __table_args__ = (Index("ix_payments_account_paid", "account_id", "paid_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    external_id: Mapped[str] = mapped_column(String(200), unique=True)
    purpose: Mapped[str] = mapped_column(String(16))  # topup | pro_upgrade
    amount_usd: Mapped[Decimal] = mapped_column(Money)
    crypto_amount: Mapped[str] = mapped_column(String(80))  # exact decimal text, e.g. "0.001234"
    currency: Mapped[str] = mapped_column(String(16))  # BTC, USDT, …
    chain: Mapped[str] = mapped_column(String(32))  # bitcoin, tron, ethereum, …
    wallet: Mapped[str] = mapped_column(String(200))  # the address the payment came from
    tx_hash: Mapped[str] = mapped_column(String(200))
    paid_at: Mapped[datetime]


class LedgerEntry(Base):
    """One signed movement of an account's balance; the balance is their sum."""

    __tablename__ = "ledger_entries"
    __table_args__ = (Index("ix_ledger_entries_account_at", "account_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    kind: Mapped[str] = mapped_column(String(16))  # topup | usage | refund | credit | adjustment
    amount: Mapped[Decimal] = mapped_column(Money)  # positive credits the balance
    at: Mapped[datetime]
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id"))
    refund_id: Mapped[int | None] = mapped_column(ForeignKey("refunds.id"))
    external_id: Mapped[str | None] = mapped_column(String(200), unique=True)
    note: Mapped[str] = mapped_column(String(500), default="")


class AccountLink(Base):
    """A customer (of the ticket core) tied to an account, and how.

    `code`: proven with a one-time code mailed to the account's address (`/link`, or the code
    of an agent's `/account N EMAIL` given back). `agent`: an agent tied the ticket's customer
    with `/account N EMAIL` and the code has not come back yet: unverified until it does.
    """

    __tablename__ = "account_links"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    method: Mapped[str] = mapped_column(String(16))  # code | agent
    linked_at: Mapped[datetime]


class LinkCode(Base):
    """A one-time code mailed to an account's address to prove a Telegram user owns it."""

    __tablename__ = "link_codes"
    __table_args__ = (
        Index("ix_link_codes_customer_created", "customer_id", "created_at"),
        Index("ix_link_codes_email_created", "email", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    email: Mapped[str] = mapped_column(String(320))
    code_hash: Mapped[str] = mapped_column(String(128))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class Refund(Base):
    """An agent's refund of an account: its plan as confirmed, its approval and its execution."""

    __tablename__ = "refunds"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    # A key derived from what was confirmed (account and payments); confirming the same plan
    # twice, by a double tap, a retry or a second agent, finds the first refund.
    key: Mapped[str] = mapped_column(String(200), unique=True)
    status: Mapped[str] = mapped_column(String(24))  # awaiting_approval | executed | refused
    # What the agent chose: everything eligible, only the Pro upgrade, only the balance, or an
    # admin's full refund outside the 7-day window (which needs a reason and a second admin).
    scope: Mapped[str] = mapped_column(String(16), default="all", server_default="all")
    reason: Mapped[str | None] = mapped_column(String(500))
    total: Mapped[Decimal] = mapped_column(Money)
    includes_pro_upgrade: Mapped[bool] = mapped_column(default=False)
    requested_by: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    approved_by: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    created_at: Mapped[datetime]
    executed_at: Mapped[datetime | None]


class Payout(Base):
    """Money going back to one wallet for one payment; pending until finance marks it sent."""

    __tablename__ = "payouts"
    __table_args__ = (Index("ix_payouts_status_created", "status", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    refund_id: Mapped[int] = mapped_column(ForeignKey("refunds.id"), index=True)
    payment_id: Mapped[int] = mapped_column(ForeignKey("payments.id"), unique=True)
    amount_usd: Mapped[Decimal] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(16))
    chain: Mapped[str] = mapped_column(String(32))
    wallet: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))  # pending | sent
    tx_hash: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    alerted_at: Mapped[datetime | None]


class SlaCredit(Base):
    """The SLA credit of one Pro account for one calendar month (at most one, ever)."""

    __tablename__ = "sla_credits"
    __table_args__ = (UniqueConstraint("account_id", "month"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    month: Mapped[str] = mapped_column(String(7))  # YYYY-MM
    net_spend: Mapped[Decimal] = mapped_column(Money)
    amount: Mapped[Decimal] = mapped_column(Money)
    uptime: Mapped[str] = mapped_column(String(16))  # the percentage, as decimal text
    ledger_entry_id: Mapped[int | None] = mapped_column(ForeignKey("ledger_entries.id"))
    created_at: Mapped[datetime]
    details: Mapped[str] = mapped_column(Text, default="")
    # Credited on the 10th from data the billing source had not declared final: when the
    # month's data is final, a larger credit is topped up (never clawed back).
    provisional: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))


class LedgerImport(Base):
    """One applied billing export: the ledger's data is as fresh as its newest import."""

    __tablename__ = "ledger_imports"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    source: Mapped[str] = mapped_column(String(200))
    actor: Mapped[str] = mapped_column(String(64))
    records: Mapped[int] = mapped_column(Integer, default=0)


__all__ = [
    "Account",
    "AccountLink",
    "LedgerEntry",
    "LedgerImport",
    "LinkCode",
    "Payment",
    "Payout",
    "Refund",
    "SlaCredit",
]
