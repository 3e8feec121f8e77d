"""Accounts, payments and ledger entries written straight into the tables, for refund tests."""

from __future__ import annotations

import itertools
from datetime import datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from accounts.tables import Account, AccountLink, LedgerEntry, LedgerImport, Payment
from tickets.tables import Customer, CustomerEmail

_numbers = itertools.count(1)


async def account(
    session: AsyncSession,
    email: str,
    *,
    at: datetime,
    plan: str = "basic",
    pro_since: datetime | None = None,
    pro_limits_used_at: datetime | None = None,
) -> Account:
    found = Account(
        email=email.lower(),
        plan=plan,
        pro_since=pro_since,
        pro_limits_used_at=pro_limits_used_at,
        created_at=at,
        updated_at=at,
    )
    session.add(found)
    await session.flush()
    return found


async def payment(
    session: AsyncSession,
    owner: Account,
    amount: str,
    *,
    at: datetime,
    purpose: str = "topup",
    wallet: str = "TWalletA111",
    currency: str = "USDT",
    chain: str = "tron",
) -> Payment:
    """A payment; a top-up also credits the balance through the ledger."""
    number = next(_numbers)
    paid = Payment(
        account_id=owner.id,
        external_id=f"pay-{owner.id}-{number}-{at.timestamp()}",
        purpose=purpose,
        amount_usd=Decimal(amount),
        crypto_amount=amount,
        currency=currency,
        chain=chain,
        wallet=wallet,
        tx_hash=f"0xin{number:06d}",
        paid_at=at,
    )
    session.add(paid)
    await session.flush()
    if purpose == "topup":
        session.add(
            LedgerEntry(
                account_id=owner.id, kind="topup", amount=Decimal(amount), at=at, payment_id=paid.id
            )
        )
    return paid


async def usage(session: AsyncSession, owner: Account, amount: str, *, at: datetime) -> None:
    session.add(LedgerEntry(account_id=owner.id, kind="usage", amount=-Decimal(amount), at=at))


async def link(session: AsyncSession, owner: Account, customer_id: int, *, at: datetime) -> None:
    session.add(
        AccountLink(customer_id=customer_id, account_id=owner.id, method="code", linked_at=at)
    )


async def telegram_customer(
    session: AsyncSession, telegram_id: int, name: str, *, at: datetime, plan: str = "basic"
) -> Customer:
    customer = Customer(telegram_id=telegram_id, name=name, plan=plan, created_at=at)
    session.add(customer)
    await session.flush()
    return customer


async def email_customer(
    session: AsyncSession, address: str, name: str, *, at: datetime
) -> Customer:
    customer = Customer(name=name, plan="basic", created_at=at)
    session.add(customer)
    await session.flush()
    session.add(CustomerEmail(customer_id=customer.id, address=address.lower()))
    return customer


async def imported(session: AsyncSession, *, at: datetime) -> None:
    """Record an import at `at`: the ledger's data is as fresh as its newest import."""
    session.add(LedgerImport(at=at, source="test export", actor="test", records=0))
