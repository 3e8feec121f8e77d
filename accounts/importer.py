"""`supportbot accounts import`: load or update accounts, payments and usage from a billing export.

The whole file is one transaction. Records are checked first (`accounts.records`); then each is
compared with what the database holds: an account is created, updated or left alone; a payment
or usage record is added, or left alone when the same id was imported before with the same
content. The same id with other content, or a payment for an unknown account, is a bad row. Any
bad row, and nothing is applied. Importing the same file again therefore changes nothing in the
accounts, but it is recorded (`ledger_imports`): the ledger's data is as fresh as its newest
import. In the same transaction, the customers of the file's accounts take their plans, and
their open tickets move with them (`accounts.plans.sync_plans`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from accounts.plans import sync_plans
from accounts.records import (
    AccountRecord,
    Batch,
    ImportRefused,
    PaymentRecord,
    RowProblem,
    UsageRecord,
    check_records,
    read_file,
)
from accounts.refund_rules import Purpose
from accounts.tables import Account, LedgerEntry, LedgerImport, Payment
from tickets import audit
from tickets.ports import Renderer
from tickets.rendering import Templates

CHUNK = 500
Progress = Callable[[int, int], None]
"""Called with (records done, records in the file) after each chunk."""

T = TypeVar("T")


class EntryKind:
    """The kinds of ledger entries (the `kind` column)."""

    TOPUP = "topup"
    USAGE = "usage"
    REFUND = "refund"
    CREDIT = "credit"
    ADJUSTMENT = "adjustment"


def payment_entry_id(payment: str) -> str:
    """The ledger entry id of an imported top-up (one entry per payment, ever)."""
    return f"payment:{payment}"


def usage_entry_id(usage: str) -> str:
    """The ledger entry id of an imported usage record."""
    return f"usage:{usage}"


@dataclass(frozen=True)
class ImportReport:
    """What an import did; all zeros but `unchanged` on a re-import."""

    accounts_created: int = 0
    accounts_updated: int = 0
    payments_added: int = 0
    usage_added: int = 0
    unchanged: int = 0
    tickets_moved: int = 0  # open tickets whose plan changed with their account's

    @property
    def changed(self) -> bool:
        return bool(
            self.accounts_created + self.accounts_updated + self.payments_added + self.usage_added
        )

    def summary(self) -> str:
        return (
            f"accounts: {self.accounts_created} created, {self.accounts_updated} updated; "
            f"payments: {self.payments_added} added; usage: {self.usage_added} added; "
            f"{self.unchanged} unchanged"
            + (
                f"; {self.tickets_moved} open ticket(s) moved to another plan"
                if self.tickets_moved
                else ""
            )
        )


async def import_file(
    sessions: async_sessionmaker[AsyncSession],
    path: Path,
    *,
    at: datetime,
    kind: str | None = None,
    progress: Progress | None = None,
    actor: str = "cli",
    templates: Renderer | None = None,
) -> ImportReport:
    """Check and apply a billing export; raises ImportRefused (nothing applied) on bad rows."""
    batch = check_records(read_file(path, kind), path.name, now=at)
    return await apply_batch(
        sessions,
        batch,
        at=at,
        source=path.name,
        progress=progress,
        actor=actor,
        templates=templates,
    )


async def apply_batch(
    sessions: async_sessionmaker[AsyncSession],
    batch: Batch,
    *,
    at: datetime,
    source: str,
    progress: Progress | None = None,
    actor: str = "cli",
    templates: Renderer | None = None,
) -> ImportReport:
    """Apply checked records in one transaction, or nothing at all."""
    if templates is None:
        templates = Templates()  # the shipped texts
    try:
        async with sessions.begin() as session:
            applier = _Applier(session, at, progress, batch.size)
            report = await applier.run(batch)
            if applier.problems:
                raise ImportRefused(source, sorted(applier.problems, key=lambda p: p.line))
            session.add(LedgerImport(at=at, source=source[:200], actor=actor, records=batch.size))
            moved = await sync_plans(
                session,
                templates,
                at=at,
                reason=f"the billing import {source[:100]}",
                accounts=applier.account_ids.values(),
                actor=actor,
            )
            report = replace(report, tickets_moved=len(moved))
            audit.record(
                session,
                at=at,
                action="accounts_import",
                actor=actor,
                file=source[:200],
                accounts_created=report.accounts_created,
                accounts_updated=report.accounts_updated,
                payments_added=report.payments_added,
                usage_added=report.usage_added,
                unchanged=report.unchanged,
                tickets_moved=report.tickets_moved,
            )
    except IntegrityError as error:  # e.g. two accounts swapping addresses within one file
        raise ImportRefused(
            source, [RowProblem(0, f"the database refused the import: {error.orig}")]
        ) from None
    return report


def _chunks(items: Sequence[T]) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


class _Applier:
    def __init__(
        self, session: AsyncSession, at: datetime, progress: Progress | None, total: int
    ) -> None:
        self.session = session
        self.at = at
        self.progress = progress
        self.total = total
        self.done = 0
        self.problems: list[RowProblem] = []
        self.account_ids: dict[str, int] = {}
        self.counts: dict[str, int] = {
            "accounts_created": 0,
            "accounts_updated": 0,
            "payments_added": 0,
            "usage_added": 0,
            "unchanged": 0,
        }

    def _advance(self, count: int) -> None:
        self.done += count
        if self.progress is not None:
            self.progress(self.done, self.total)

    async def run(self, batch: Batch) -> ImportReport:
        for chunk in _chunks(batch.accounts):
            await self._accounts(chunk)
            self._advance(len(chunk))
        named = {p.account for p in batch.payments} | {u.account for u in batch.usage}
        wanted = named - set(self.account_ids)
        await self._known_accounts(sorted(wanted))
        for payments in _chunks(batch.payments):
            await self._payments(payments)
            self._advance(len(payments))
        for usage in _chunks(batch.usage):
            await self._usage(usage)
            self._advance(len(usage))
        return ImportReport(**self.counts)

    async def _known_accounts(self, external_ids: Sequence[str]) -> None:
        for chunk in _chunks(external_ids):
            rows = await self.session.execute(
                select(Account.external_id, Account.id).where(Account.external_id.in_(chunk))
            )
            self.account_ids.update({str(e): i for e, i in rows})

    def _account_id(self, record: PaymentRecord | UsageRecord) -> int | None:
        found = self.account_ids.get(record.account)
        if found is None:
            kind = "payment" if isinstance(record, PaymentRecord) else "usage"
            self.problems.append(
                RowProblem(
                    record.line,
                    f"{kind} {record.external_id!r} names account {record.account!r}, which is "
                    "neither in the database nor in this file",
                )
            )
        return found

    async def _accounts(self, records: Sequence[AccountRecord]) -> None:
        by_id = {
            a.external_id: a
            for a in await self.session.scalars(
                select(Account).where(Account.external_id.in_([r.external_id for r in records]))
            )
        }
        by_email = {
            a.email: a
            for a in await self.session.scalars(
                select(Account).where(Account.email.in_([r.email for r in records]))
            )
        }
        fresh: list[dict[str, Any]] = []
        for record in records:
            account = by_id.get(record.external_id)
            holder = by_email.get(record.email)
            if account is None and holder is not None and holder.external_id is None:
                account = holder  # an account made here before it was exported: adopt it
                account.external_id = record.external_id
            if holder is not None and holder is not account:
                self.problems.append(
                    RowProblem(
                        record.line,
                        f"email {record.email} already belongs to account "
                        f"{holder.external_id or holder.id!r}",
                    )
                )
                continue
            if account is None:
                fresh.append(
                    {
                        "external_id": record.external_id,
                        "email": record.email,
                        "plan": record.plan,
                        "pro_since": record.pro_since,
                        "pro_limits_used_at": record.pro_limits_used_at,
                        "created_at": self.at,
                        "updated_at": self.at,
                    }
                )
                continue
            self.account_ids[record.external_id] = account.id
            wanted = {
                "email": record.email,
                "plan": record.plan,
                "pro_since": record.pro_since,
                "pro_limits_used_at": record.pro_limits_used_at,
            }
            if all(getattr(account, k) == v for k, v in wanted.items()):
                self.counts["unchanged"] += 1
                continue
            for key, value in wanted.items():
                setattr(account, key, value)
            account.updated_at = self.at
            self.counts["accounts_updated"] += 1
        await self.session.flush()
        if fresh:
            rows = await self.session.execute(
                insert(Account).returning(Account.external_id, Account.id), fresh
            )
            self.account_ids.update({str(e): i for e, i in rows})
            self.counts["accounts_created"] += len(fresh)

    async def _payments(self, records: Sequence[PaymentRecord]) -> None:
        existing = {
            p.external_id: p
            for p in await self.session.scalars(
                select(Payment).where(Payment.external_id.in_([r.external_id for r in records]))
            )
        }
        fresh: list[dict[str, Any]] = []
        for record in records:
            account_id = self._account_id(record)
            if account_id is None:
                continue
            values: dict[str, Any] = {
                "external_id": record.external_id,
                "account_id": account_id,
                "purpose": record.purpose.value,
                "amount_usd": record.amount_usd,
                "crypto_amount": record.crypto_amount,
                "currency": record.currency,
                "chain": record.chain,
                "wallet": record.wallet,
                "tx_hash": record.tx_hash,
                "paid_at": record.paid_at,
            }
            earlier = existing.get(record.external_id)
            if earlier is None:
                fresh.append(values)
            elif all(getattr(earlier, k) == v for k, v in values.items()):
                self.counts["unchanged"] += 1
            else:
                self.problems.append(_different(record.line, "payment", record.external_id))
        if not fresh:
            return
        rows = await self.session.execute(
            insert(Payment).returning(Payment.external_id, Payment.id), fresh
        )
        ids = {str(e): i for e, i in rows}
        entries = [
            {
                "account_id": p["account_id"],
                "kind": EntryKind.TOPUP,
                "amount": p["amount_usd"],
                "at": p["paid_at"],
                "payment_id": ids[p["external_id"]],
                "external_id": payment_entry_id(p["external_id"]),
                "note": f"{p['crypto_amount']} {p['currency']} on {p['chain']}"[:500],
            }
            for p in fresh
            if p["purpose"] == Purpose.TOPUP.value
        ]
        if entries:
            await self.session.execute(insert(LedgerEntry), entries)
        self.counts["payments_added"] += len(fresh)

    async def _usage(self, records: Sequence[UsageRecord]) -> None:
        keys = [usage_entry_id(r.external_id) for r in records]
        existing = {
            e.external_id: e
            for e in await self.session.scalars(
                select(LedgerEntry).where(LedgerEntry.external_id.in_(keys))
            )
        }
        fresh: list[dict[str, Any]] = []
        for record in records:
            account_id = self._account_id(record)
            if account_id is None:
                continue
            values: dict[str, Any] = {
                "account_id": account_id,
                "kind": EntryKind.USAGE,
                "amount": -record.amount_usd,
                "at": record.at,
                "external_id": usage_entry_id(record.external_id),
                "note": record.note,
            }
            earlier = existing.get(values["external_id"])
            if earlier is None:
                fresh.append(values)
            elif all(getattr(earlier, k) == v for k, v in values.items()):
                self.counts["unchanged"] += 1
            else:
                self.problems.append(_different(record.line, "usage", record.external_id))
        if fresh:
            await self.session.execute(insert(LedgerEntry), fresh)
            self.counts["usage_added"] += len(fresh)


def _different(line: int, kind: str, external_id: str) -> RowProblem:
    return RowProblem(line, f"{kind} {external_id!r} was imported before with different content")
