"""Accounts and ledger entries written straight into the tables, for the credit tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from accounts.tables import Account, AccountLink, LedgerEntry
from tickets.tables import Customer

WHEN = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Entry:
    at: datetime
    kind: str
    amount: str


async def add_account(
    session: AsyncSession,
    email: str,
    entries: Sequence[Entry] = (),
    *,
    plan: str = "pro",
    pro_since: datetime | None = WHEN,
    telegram_id: int | None = None,
) -> int:
    """An account with its ledger (and a Telegram customer linked to it, if given)."""
    account = Account(
        email=email,
        plan=plan,
        pro_since=pro_since if plan == "pro" else None,
        created_at=WHEN,
        updated_at=WHEN,
    )
    session.add(account)
    await session.flush()
    for entry in entries:
        session.add(
            LedgerEntry(
                account_id=account.id, kind=entry.kind, amount=Decimal(entry.amount), at=entry.at
            )
        )
    if telegram_id is not None:
        customer = Customer(telegram_id=telegram_id, name=email, plan=plan, created_at=WHEN)
        session.add(customer)
        await session.flush()
        session.add(
            AccountLink(
                customer_id=customer.id, account_id=account.id, method="code", linked_at=WHEN
            )
        )
    await session.flush()
    return account.id
