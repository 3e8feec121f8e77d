"""Retention: forget what can never be needed again, in small batches, so tables stop growing.

Pruned, once older than the retention period (RETENTION_DAYS, default 30):

* **delivered outbox rows** (by `delivered_at`). What a delivery changed is kept elsewhere: the
  message's delivery state, the response times, the audit log. Pending and failed rows are
  never touched, whatever their age.
* **inbound dedup keys** (by `received_at`): Telegram's `telegram` (chat:message) and
  `agent_reply` keys, and IMAP's `imap` (UIDVALIDITY:UID) keys. A key is needed only while its
  event could be delivered again, and none can be after a few minutes, let alone 30 days:
  Telegram resends an update only until its `update_id` is confirmed, which the poller does
  within one poll once the update is kept in the `inbox` table; the IMAP reader asks only for
  UIDs above the cursor it stores, UIDs only grow within a UIDVALIDITY, and a new UIDVALIDITY
  makes new keys anyway. What protects mail against a second copy under another UID (a resync,
  a mail copied back into the folder) is not these keys but the unique (channel, Message-ID) of
  the `messages` table, which is never pruned; Telegram messages carry the same unique
  chat:message id there too.
* **spent rate windows**: a `rate_windows` row whose every use and whose last "you are over the
  limit" notice are older than the retention period. Every rule's window is an hour at most, so
  such uses count for nothing; the row a next use makes afresh behaves exactly as the old one
  would (the holder is told about a refusal once, as before).

The `inbox` table needs nothing: an event is deleted from it as soon as it is handled.

Each statement deletes at most `batch` rows, found in primary-key order (old rows come first, so
the key's index finds them without a scan of the table), with a pause between statements, so
intake and delivery are never held up for long. `prune_once` is the one entry point; run it
from a single elected process (`prune_periodically`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Delete, delete, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tickets.model import OutboxStatus
from tickets.periodic import run_every
from tickets.ports import Clock
from tickets.tables import InboundKey, OutboxRow, RateWindow

log = logging.getLogger("tickets.retention")

DEFAULT_RETENTION = timedelta(days=30)
# No rate rule's window is longer than this; a shorter retention would forget uses that count.
LONGEST_RATE_WINDOW = timedelta(days=1)


@dataclass(frozen=True)
class Pruned:
    """How many rows one pass forgot, per kind."""

    outbox: int = 0
    inbound_keys: int = 0
    rate_windows: int = 0

    @property
    def total(self) -> int:
        return self.outbox + self.inbound_keys + self.rate_windows


def _old_outbox(cutoff: datetime, batch: int) -> Delete:
    chosen = (
        select(OutboxRow.id)
        .where(
            OutboxRow.status == OutboxStatus.DELIVERED.value,
            OutboxRow.delivered_at < cutoff,
        )
        .order_by(OutboxRow.id)
        .limit(batch)
    )
    return delete(OutboxRow).where(OutboxRow.id.in_(chosen.scalar_subquery()))


def _old_keys(cutoff: datetime, batch: int) -> Delete:
    chosen = (
        select(InboundKey.id)
        .where(InboundKey.received_at < cutoff)
        .order_by(InboundKey.id)
        .limit(batch)
    )
    return delete(InboundKey).where(InboundKey.id.in_(chosen.scalar_subquery()))


async def _delete_in_batches(
    sessions: async_sessionmaker[AsyncSession],
    statement: Callable[[], Delete],
    batch: int,
    pause: float,
) -> int:
    total = 0
    while True:
        async with sessions.begin() as session:
            result = await session.execute(statement())
        deleted = int(getattr(result, "rowcount", 0) or 0)
        total += deleted
        if deleted < batch:
            return total
        await asyncio.sleep(pause)


async def _spent_windows(
    sessions: async_sessionmaker[AsyncSession], cutoff: datetime, batch: int, pause: float
) -> int:
    """Walk the windows in key order, a batch at a time; delete the spent ones, rows locked."""
    total = 0
    after: tuple[str, str] | None = None
    limit = cutoff.timestamp()
    while True:
        async with sessions.begin() as session:
            query = select(RateWindow.rule, RateWindow.holder, RateWindow.uses, RateWindow.told_at)
            if after is not None:
                query = query.where(tuple_(RateWindow.rule, RateWindow.holder) > after)
            rows = (
                await session.execute(
                    query.order_by(RateWindow.rule, RateWindow.holder)
                    .limit(batch)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            spent = [
                (row.rule, row.holder)
                for row in rows
                if all(float(use) < limit for use in row.uses or [])
                and (row.told_at is None or row.told_at < cutoff)
            ]
            if spent:
                await session.execute(
                    delete(RateWindow).where(tuple_(RateWindow.rule, RateWindow.holder).in_(spent))
                )
        total += len(spent)
        if len(rows) < batch:
            return total
        after = (rows[-1].rule, rows[-1].holder)
        await asyncio.sleep(pause)


async def prune_once(
    sessions: async_sessionmaker[AsyncSession],
    *,
    now: datetime,
    keep: timedelta = DEFAULT_RETENTION,
    batch: int = 1000,
    pause: float = 0.05,
) -> Pruned:
    """Forget delivered outbox rows, dedup keys and spent rate windows older than `keep`."""
    if keep < LONGEST_RATE_WINDOW:
        raise ValueError(f"retention must be at least {LONGEST_RATE_WINDOW}, got {keep}")
    if batch < 1:
        raise ValueError("batch must be at least 1")
    cutoff = now - keep
    pruned = Pruned(
        outbox=await _delete_in_batches(sessions, lambda: _old_outbox(cutoff, batch), batch, pause),
        inbound_keys=await _delete_in_batches(
            sessions, lambda: _old_keys(cutoff, batch), batch, pause
        ),
        rate_windows=await _spent_windows(sessions, cutoff, batch, pause),
    )
    if pruned.total:
        log.info(
            "retention: forgot %d delivered outbox rows, %d dedup keys, %d rate windows "
            "older than %s",
            pruned.outbox,
            pruned.inbound_keys,
            pruned.rate_windows,
            cutoff.isoformat(timespec="seconds"),
        )
    return pruned


async def prune_periodically(
    sessions: async_sessionmaker[AsyncSession],
    stop: asyncio.Event,
    *,
    clock: Clock,
    keep: timedelta = DEFAULT_RETENTION,
    interval: float = 3600.0,
) -> None:
    """Run `prune_once` every `interval` seconds until `stop`; a failure waits for the next."""

    async def once() -> Pruned:
        return await prune_once(sessions, now=clock(), keep=keep)

    await run_every(interval, once, stop, log=log, failed="retention: pruning failed")
