"""The built-in ledger as the `Billing` port: the imported accounts, payments and entries.

Reads answer from the desk's own tables; an answer is `as_of` the newest import (see
`ledger_imports`), since the export is what brings the business's changes in. Writes are
applied in the caller's transaction: a refund's debits and an SLA credit are ledger entries
committed with the decision itself, and a Pro downgrade is the account row the caller changed.
A month's data is final once an import was made after the month ended.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Select,
    String,
    bindparam,
    case,
    func,
    literal,
    or_,
    select,
    true,
    type_coerce,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from accounts.billing import (
    AccountSummary,
    BillingWrite,
    MonthSpend,
    MonthSpends,
    PaymentLine,
    WriteKind,
)
from accounts.ledger import normalise_email
from accounts.money import Money, from_micros
from accounts.tables import Account, LedgerEntry, LedgerImport, Payment
from tickets.months import Month
from tickets.outbox import Failed, Outcome
from tickets.tables import UTCDateTime

# Payments a summary carries: those of the last 14 days (the refund panel lists the ones whose
# 7-day window just ended too), every Pro upgrade, and the latest few whatever their age (what a
# balance lookup shows); at most this many.
LOOKBACK = timedelta(days=14)
LATEST_KEPT = 5
PAYMENTS_KEPT = 50
ZERO = literal(Decimal(0), Money)


def _decimal(value: object) -> Decimal:
    return value if isinstance(value, Decimal) else from_micros(int(str(value or 0)))


class LedgerBilling:
    """The built-in Billing: answers from the imported ledger, writes into it."""

    local = True

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def lookup(
        self,
        email: str,
        now: datetime,
        *,
        month: Month | None = None,
        session: AsyncSession | None = None,
    ) -> AccountSummary | None:
        """The ledger's summary of the account with this address, in one statement."""
        return await self._read(_BY_EMAIL, normalise_email(email), now, month, session)

    async def lookup_account(
        self,
        ref: str,
        now: datetime,
        *,
        month: Month | None = None,
        session: AsyncSession | None = None,
    ) -> AccountSummary | None:
        """The summary of the account imported with id `ref`."""
        return await self._read(_BY_REF, ref, now, month, session)

    async def _read(
        self,
        query: Select[Any],
        key: str,
        now: datetime,
        month: Month | None,
        session: AsyncSession | None,
    ) -> AccountSummary | None:
        month = month or Month.of(now)
        params = {
            "key": key,
            "start": month.start,
            "end": month.end,
            "since": now - LOOKBACK,
        }
        if session is not None:
            rows = (await session.execute(query, params)).all()
        else:
            async with self._sessions() as own:
                rows = (await own.execute(query, params)).all()
        if not rows:
            return None
        first = rows[0]
        payments = tuple(
            PaymentLine(
                paid_at=r.paid_at,
                purpose=r.purpose,
                amount_usd=r.amount_usd,
                crypto_amount=r.crypto_amount,
                currency=r.currency,
                chain=r.chain,
                wallet=r.wallet,
                tx_hash=r.tx_hash,
                ref=r.payment_ref,
            )
            for r in rows
            if r.paid_at is not None
        )
        return AccountSummary(
            email=first.email,
            plan=first.plan,
            pro_since=first.pro_since,
            balance=_decimal(first.balance),
            month_spend=max(Decimal(0), -_decimal(first.used)),
            payments=payments,
            account_id=first.id,
            ref=first.external_id,
            pro_limits_used=_limits_used(first.pro_since, first.pro_limits_used_at, payments),
            as_of=first.as_of,
            month=str(month),
        )

    async def history(
        self, summary: AccountSummary, covering: Decimal, *, session: AsyncSession | None = None
    ) -> tuple[PaymentLine, ...]:
        """Every top-up of the account, newest first, until their sum covers `covering`."""
        if summary.account_id is None:
            return ()
        query = (
            select(Payment)
            .where(Payment.account_id == summary.account_id, Payment.purpose == "topup")
            .order_by(Payment.paid_at.desc(), Payment.id.desc())
        )
        if session is not None:
            rows = list(await session.scalars(query))
        else:
            async with self._sessions() as own:
                rows = list(await own.scalars(query))
        found: list[PaymentLine] = []
        total = Decimal(0)
        for p in rows:
            if total >= covering:
                break
            total += p.amount_usd
            found.append(
                PaymentLine(
                    paid_at=p.paid_at,
                    purpose=p.purpose,
                    amount_usd=p.amount_usd,
                    crypto_amount=p.crypto_amount,
                    currency=p.currency,
                    chain=p.chain,
                    wallet=p.wallet,
                    tx_hash=p.tx_hash,
                    ref=p.external_id,
                )
            )
        return tuple(found)

    async def month_spends(self, month: Month, now: datetime) -> MonthSpends:
        """Pro accounts of the month with their net spend; final once imported after it."""
        async with self._sessions() as session:
            return await ledger_month(session, month)

    async def record(self, session: AsyncSession, write: BillingWrite) -> int | None:
        """Apply a write in the caller's transaction: the ledger entries it stands for."""
        if write.kind is WriteKind.DOWNGRADE:
            return None  # the account row the caller set to Basic is the ledger's record
        if write.kind is WriteKind.REFUND:
            for part in write.payouts:
                if part.purpose != "topup":
                    continue  # the upgrade's payout debits nothing: it never was balance
                session.add(
                    LedgerEntry(
                        account_id=write.account_id,
                        kind="refund",
                        amount=-part.amount,
                        at=write.at,
                        payment_id=part.payment_id,
                        refund_id=write.refund_id,
                        note=f"refund {write.refund_id} to {part.wallet}"[:500],
                    )
                )
            return None
        entry = LedgerEntry(
            account_id=write.account_id,
            kind="credit",
            amount=write.amount,
            at=write.at,
            external_id=write.key,
            note=write.reason[:500],
        )
        session.add(entry)
        await session.flush()
        return entry.id

    async def send(self, write: BillingWrite) -> Outcome:
        """Never queued: the ledger applies writes in the deciding transaction."""
        return Failed("the built-in ledger applies writes when they are made; nothing to send")

    async def close(self) -> None:
        """Nothing to let go of."""


def _limits_used(
    pro_since: datetime | None, used_at: datetime | None, payments: Sequence[PaymentLine]
) -> bool:
    """Whether Pro-tier limits were used since the account became Pro (or since its upgrade)."""
    if used_at is None:
        return False
    upgrades = [p.paid_at for p in payments if p.purpose == "pro_upgrade"]
    since = pro_since or (max(upgrades) if upgrades else None)
    return since is None or used_at >= since


def _summary_query(by_email: bool) -> Select[Any]:
    """The account, its balance and month's usage (one pass), and its recent payments as rows.

    A read is one round trip: the account row comes once per payment shown (or once, with
    empty payment columns), the sums and the newest import once in derived tables. Built once
    per key (parameters `key`, `start`, `end`, `since`): building costs more than running.
    """
    key = bindparam("key", type_=String)
    which = Account.email == key if by_email else Account.external_id == key
    account_id = select(Account.id).where(which).scalar_subquery()
    start = bindparam("start", type_=UTCDateTime())
    end = bindparam("end", type_=UTCDateTime())
    since = bindparam("since", type_=UTCDateTime())
    usage = (LedgerEntry.kind == "usage") & (LedgerEntry.at >= start) & (LedgerEntry.at < end)
    sums = (
        select(
            func.coalesce(func.sum(LedgerEntry.amount), 0).label("balance"),
            func.coalesce(func.sum(LedgerEntry.amount).filter(usage), 0).label("used"),
        )
        .where(LedgerEntry.account_id == account_id)
        .subquery()
    )
    latest = (
        select(Payment.id)
        .where(Payment.account_id == account_id)
        .order_by(Payment.paid_at.desc(), Payment.id.desc())
        .limit(LATEST_KEPT)
    )
    recent = (
        select(Payment)
        .where(
            Payment.account_id == account_id,
            or_(
                Payment.paid_at > since,
                Payment.purpose == "pro_upgrade",
                Payment.id.in_(latest.scalar_subquery()),
            ),
        )
        .order_by(Payment.paid_at.desc(), Payment.id.desc())
        .limit(PAYMENTS_KEPT)
        .subquery()
    )
    newest_import = select(func.max(LedgerImport.at)).scalar_subquery()
    return (
        select(
            Account.id,
            Account.email,
            Account.plan,
            Account.pro_since,
            Account.pro_limits_used_at,
            Account.external_id,
            sums.c.balance,
            sums.c.used,
            type_coerce(newest_import, UTCDateTime()).label("as_of"),
            recent.c.paid_at,
            recent.c.purpose,
            recent.c.amount_usd,
            recent.c.crypto_amount,
            recent.c.currency,
            recent.c.chain,
            recent.c.wallet,
            recent.c.tx_hash,
            recent.c.external_id.label("payment_ref"),
        )
        .select_from(Account)
        .join(sums, true())
        .outerjoin(recent, true())
        .where(which)
        .order_by(recent.c.paid_at.desc(), recent.c.id.desc())
    )


_BY_EMAIL = _summary_query(by_email=True)
_BY_REF = _summary_query(by_email=False)


async def newest_import(session: AsyncSession) -> datetime | None:
    """When the ledger was last imported (None: never)."""
    found: datetime | None = await session.scalar(select(func.max(LedgerImport.at)))
    return found


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


def _is_pro(month: Month) -> Any:
    return (Account.plan == "pro") & or_(Account.pro_since.is_(None), Account.pro_since < month.end)


async def ledger_month(session: AsyncSession, month: Month) -> MonthSpends:
    """Each account Pro in the month: net spend and whether its balance was ever positive.

    An account counts as Pro for the month when it is on Pro now and became Pro before the month
    ended (`pro_since` unknown counts as Pro). Its balance was positive at some time when the
    balance at the month's start, or right after any of its entries in the month (in time
    order), is above zero. Net spend is what its `usage` entries took, never below zero.
    """
    pro = select(Account.id).where(_is_pro(month)).scalar_subquery()
    accounts = await session.execute(
        select(Account.id, Account.email, Account.external_id, Account.pro_since).where(
            _is_pro(month)
        )
    )
    found = {row.id: row for row in accounts}
    sums = await session.execute(
        select(LedgerEntry.account_id, func.sum(LedgerEntry.amount))
        .where(LedgerEntry.account_id.in_(pro), LedgerEntry.at < month.start)
        .group_by(LedgerEntry.account_id)
    )
    opening: dict[int, Decimal] = {account_id: total for account_id, total in sums}
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
    spends = []
    for account_id in sorted(found):
        row = found[account_id]
        usage, peak = totals.get(account_id, (Decimal(0), None))
        month_of = assess(MonthTotals(opening.get(account_id, Decimal(0)), usage, peak))
        spends.append(
            MonthSpend(
                email=row.email,
                net_spend=month_of.net_spend,
                positive=month_of.positive,
                account_id=account_id,
                ref=row.external_id,
                pro_since=row.pro_since,
            )
        )
    complete = await session.scalar(
        select(func.count()).select_from(LedgerImport).where(LedgerImport.at >= month.end)
    )
    return MonthSpends(
        month=month,
        complete=bool(complete),
        as_of=await newest_import(session),
        accounts=tuple(spends),
    )
