"""Reading the ledger: accounts by email or customer, balances, and who a customer is.

These are the queries every account action shares. A balance is always the sum of the ledger
entries, never a stored number.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import ScalarSelect, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from accounts.money import from_micros
from accounts.tables import Account, AccountLink, LedgerEntry
from tickets.tables import Customer, CustomerEmail, Message, Ticket


class Identity(StrEnum):
    """How sure the desk is that a customer owns the account it shows for them."""

    LINKED = "linked"  # proven with a one-time code mailed to the account's address
    AUTHENTICATED = "authenticated"  # email sender whose mail passed SPF/DKIM/DMARC
    UNVERIFIED = "unverified"  # email sender without a passing verdict: verify before acting


@dataclass(frozen=True)
class Owner:
    """The account a customer is matched to, and how."""

    account: Account
    identity: Identity


def normalise_email(address: str) -> str:
    """Accounts are keyed by lower-cased, trimmed address."""
    return address.strip().lower()


async def account_by_email(session: AsyncSession, email: str) -> Account | None:
    """The account registered with this address, if any."""
    found = await session.scalars(select(Account).where(Account.email == normalise_email(email)))
    return found.first()


async def balance(session: AsyncSession, account_id: int, *, at: datetime | None = None) -> Decimal:
    """The account's balance: the sum of its ledger entries (up to `at`, if given)."""
    query = select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
        LedgerEntry.account_id == account_id
    )
    if at is not None:
        query = query.where(LedgerEntry.at <= at)
    total = await session.scalar(query)
    return total if isinstance(total, Decimal) else from_micros(int(total or 0))


async def owner_of_telegram_user(
    sessions: async_sessionmaker[AsyncSession], telegram_id: int
) -> tuple[int | None, Owner | None]:
    """The ticket-core customer a Telegram user is (None: never wrote) and their account."""
    async with sessions() as session:
        customer_id = await session.scalar(
            select(Customer.id).where(Customer.telegram_id == telegram_id)
        )
        owner = await owner_of_customer(session, customer_id) if customer_id else None
    return customer_id, owner


async def owner_of_customer(session: AsyncSession, customer_id: int) -> Owner | None:
    """The account of a ticket-core customer: their tie first (by code, or by an agent), then
    the sender address."""
    tied = (
        await session.execute(
            select(Account, AccountLink.method)
            .join(AccountLink, AccountLink.account_id == Account.id)
            .where(AccountLink.customer_id == customer_id)
        )
    ).first()
    if tied is not None:
        account, method = tied
        # An agent's `/account` tie stays unverified until the customer gives the code back.
        return Owner(account, Identity.LINKED if method == "code" else Identity.UNVERIFIED)
    matched = await session.scalar(
        select(Account)
        .join(CustomerEmail, CustomerEmail.address == Account.email)
        .where(CustomerEmail.customer_id == customer_id)
        .order_by(Account.id)
        .limit(1)
    )
    if matched is None:
        return None
    return Owner(matched, await _sender_identity(session, customer_id))


async def _sender_identity(session: AsyncSession, customer_id: int) -> Identity:
    """Authenticated when the customer's latest inbound mail passed the sender checks."""
    verdict = await session.scalar(
        select(Message.auth)
        .join(Ticket, Ticket.id == Message.ticket_id)
        .where(
            Ticket.customer_id == customer_id,
            Message.direction == "in",
            Message.channel == "email",
        )
        .order_by(Message.id.desc())
        .limit(1)
    )
    return Identity.AUTHENTICATED if verdict == "pass" else Identity.UNVERIFIED


def tied_account(column: Any, method: str | None = None) -> ScalarSelect[Any]:
    """A column of the account tied to the `Customer` of the outer query (of one tie method)."""
    query = (
        select(column)
        .join(AccountLink, AccountLink.account_id == Account.id)
        .where(AccountLink.customer_id == Customer.id)
    )
    if method is not None:
        query = query.where(AccountLink.method == method)
    return query.scalar_subquery()


def address_account(column: Any) -> ScalarSelect[Any]:
    """A column of the account matching an address of the outer query's `Customer` (the
    lowest account id wins)."""
    return (
        select(column)
        .join(CustomerEmail, CustomerEmail.address == Account.email)
        .where(CustomerEmail.customer_id == Customer.id)
        .order_by(Account.id)
        .limit(1)
        .scalar_subquery()
    )
