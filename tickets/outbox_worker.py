"""The outbox worker: claims due rows, hands them to their route's sender, records outcomes.

A row is claimed with a lease (`lease_owner`, `lease_until`), so rows of a crashed worker are
picked up again once the lease runs out. Rows for one recipient go out in the order they were
written: a row is not claimed while an earlier row for the same recipient is waiting out a
backoff or is leased by another worker. On PostgreSQL a claim takes a transaction-scoped advisory
lock per route it claims for, so workers of one route see each other's fresh leases while workers
of other routes claim side by side, and it locks rows `FOR UPDATE SKIP LOCKED` against outcome
updates; SQLite, which has one writer at a time, ignores that clause and claims inside its
IMMEDIATE transaction.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import zlib
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from tickets.batch_writes import outbox
from tickets.batching import Coalescer, in_transactions
from tickets.model import OutboxKind, OutboxStatus, Route
from tickets.outbox import (
    Deferred,
    Delivered,
    Delivery,
    DeliveryListener,
    Failed,
    OutboxItem,
    Outcome,
    RetryLater,
    RetryPolicy,
    Sender,
    Wakeup,
)
from tickets.ports import Clock
from tickets.tables import OutboxRow

log = logging.getLogger(__name__)

CLAIM_LOCK = 0x5B0_0B0C  # advisory lock class serialising a route's outbox claims on PostgreSQL
_ROUTE_LOCKS = text(
    "SELECT count(pg_advisory_xact_lock(:key, route_key))"
    " FROM unnest(CAST(:routes AS integer[])) AS route_key"  # in the array's order
)


def route_lock(route: str) -> int:
    """The second key of a route's claim lock (the first is CLAIM_LOCK)."""
    return zlib.crc32(route.encode()) & 0x7FFF_FFFF


class OutboxWorker:
    """Claims due rows, hands each recipient's rows to its route's sender, records the outcome."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        senders: Mapping[Route, Sender],
        listener: DeliveryListener,
        *,
        clock: Clock,
        retry: RetryPolicy | None = None,
        lease: timedelta = timedelta(minutes=2),
        batch_size: int = 100,
        concurrency: int = 8,
        worker_id: str | None = None,
        wakeup: Wakeup | None = None,
    ) -> None:
        self._sessions = sessions
        self._senders = dict(senders)
        self._listener = listener
        self._clock = clock
        self._retry = retry or RetryPolicy()
        self._lease = lease
        self._batch_size = batch_size
        self._limit = asyncio.Semaphore(concurrency)
        self.worker_id = worker_id or f"outbox-{uuid.uuid4().hex[:12]}"
        self.wakeup = wakeup or Wakeup()
        self._soonest: datetime | None = None
        self._outcomes: Coalescer[tuple[OutboxItem, Outcome, datetime], None] = Coalescer(
            self._record_many, limit=batch_size
        )

    async def run(self, stop: asyncio.Event, *, poll: float = 1.0) -> None:
        """Deliver until `stop` is set; a failing database is logged and retried, never fatal.

        After a full batch the next is claimed while it is still going out (two batches at
        most), so the senders never stand idle while a batch's last outcomes are recorded. A
        recipient's later rows wait for its earlier ones all the same: a claim skips them
        while an earlier row is leased.
        """
        rounds: set[asyncio.Task[None]] = set()
        try:
            while not stop.is_set():
                items = await self._claim_logged()
                if items:
                    rounds.add(asyncio.create_task(self._round(items)))
                    if len(rounds) >= 2:
                        _, rounds = await asyncio.wait(rounds, return_when=asyncio.FIRST_COMPLETED)
                    if len(items) == self._batch_size:
                        continue  # there may be more: claim it while this batch goes out
                pause = self._pause(poll)
                if not rounds:
                    await self.wakeup.wait(pause)
                    continue
                woken = asyncio.ensure_future(self.wakeup.wait(pause))
                done, rounds = await asyncio.wait(
                    {*rounds, woken}, return_when=asyncio.FIRST_COMPLETED
                )
                rounds.discard(woken)
                if woken not in done:
                    woken.cancel()
                    await asyncio.gather(woken, return_exceptions=True)
        except asyncio.CancelledError:
            for task in rounds:
                task.cancel()
            raise
        await asyncio.gather(*rounds, return_exceptions=True)

    def _pause(self, poll: float) -> float:
        """Sleep until the next poll, or sooner when a postponed row comes due before it."""
        soonest, self._soonest = self._soonest, None
        if soonest is None:
            return poll
        return min(poll, max((soonest - self._clock()).total_seconds(), 0.01))

    async def run_once(self) -> int:
        """Claim one batch and deliver it; returns how many rows were claimed."""
        items = await self._claim()
        if items:
            await self._deliver(items)
        return len(items)

    async def _claim_logged(self) -> list[OutboxItem]:
        try:
            return await self._claim()
        except Exception:
            log.exception("outbox: claiming rows failed; trying again shortly")
            return []

    async def _round(self, items: list[OutboxItem]) -> None:
        try:
            await self._deliver(items)
        except Exception:
            log.exception("outbox: delivery round failed; its rows go out again after the lease")

    async def _deliver(self, items: list[OutboxItem]) -> None:
        """Each recipient's rows in order, recipients side by side; outcomes recorded."""
        groups: dict[tuple[Route, str], list[OutboxItem]] = {}
        for item in items:
            groups.setdefault((item.route, item.recipient), []).append(item)
        await asyncio.gather(*(self._deliver_group(group) for group in groups.values()))

    async def _claim(self) -> list[OutboxItem]:
        now = self._clock()
        routes = [route.value for route in self._senders]
        if not routes:
            return []
        earlier = aliased(OutboxRow)
        # OFFSET 0 keeps PostgreSQL from turning this into an anti-join, whose plan follows the
        # table's statistics: after a burst they are stale, and the join compared every
        # candidate with every pending row (450 ms for 1,000 rows). As a subplan it is one
        # probe of ixoutbox_pending_recipient per candidate, whatever the statistics say.
        blocked = (
            select(earlier.id)
            .where(
                earlier.route == OutboxRow.route,
                earlier.recipient == OutboxRow.recipient,
                earlier.status == OutboxStatus.PENDING.value,
                earlier.id < OutboxRow.id,
                or_(
                    earlier.available_at > now,
                    and_(earlier.lease_until.is_not(None), earlier.lease_until > now),
                ),
            )
            .offset(0)
            .exists()
        )
        candidates = (
            select(OutboxRow.id)
            .where(
                OutboxRow.status == OutboxStatus.PENDING.value,
                OutboxRow.route.in_(routes),
                OutboxRow.available_at <= now,
                or_(OutboxRow.lease_until.is_(None), OutboxRow.lease_until <= now),
                ~blocked,
            )
            .order_by(OutboxRow.id)
            .limit(self._batch_size)
            .with_for_update(skip_locked=True)
        )
        async with self._sessions.begin() as session:
            if session.get_bind().dialect.name == "postgresql":
                # Claims are short; taking a route's one worker at a time means a worker sees
                # the leases another has just taken, which per-recipient order depends on. The
                # locks are taken in one order, so workers with overlapping routes cannot
                # deadlock.
                keys = sorted(route_lock(route) for route in routes)
                await session.execute(_ROUTE_LOCKS, {"key": CLAIM_LOCK, "routes": keys})
            rows = (
                await session.scalars(
                    update(OutboxRow)
                    .where(OutboxRow.id.in_(candidates))
                    .values(lease_owner=self.worker_id, lease_until=now + self._lease)
                    .returning(OutboxRow)
                    .execution_options(synchronize_session=False)
                )
            ).all()
            return sorted((_item(row) for row in rows), key=lambda item: item.id)

    async def _deliver_group(self, items: list[OutboxItem]) -> None:
        sender = self._senders[items[0].route]
        async with self._limit:
            try:
                outcomes: Sequence[Outcome] = await sender.deliver(items)
            except Exception as error:  # a sender bug must not lose the rows
                log.exception("outbox: sender for %s raised", items[0].route.value)
                outcomes = [RetryLater(f"{type(error).__name__}: {error}")]
        if len(outcomes) > len(items):
            raise RuntimeError("a sender returned more outcomes than rows")
        now = self._clock()
        recorded = await asyncio.gather(
            *(
                self._outcomes.submit((item, outcome, now))
                for item, outcome in zip(items, outcomes, strict=False)
            ),
            return_exceptions=True,
        )
        if len(outcomes) < len(items):
            await self._release([item.id for item in items[len(outcomes) :]])
        for result in recorded:
            if isinstance(result, BaseException):
                raise result

    async def _record_many(
        self, outcomes: Sequence[tuple[OutboxItem, Outcome, datetime]]
    ) -> list[Exception | None]:
        """Outcomes of many groups in one transaction (a failing one is retried on its own)."""
        return await in_transactions(
            self._sessions, outcomes, self._record, self._save_rows, start=self._lock_rows
        )

    async def _lock_rows(
        self, session: AsyncSession, outcomes: Sequence[tuple[OutboxItem, Outcome, datetime]]
    ) -> None:
        """Lock the batch's rows at once (in id order, as every worker does)."""
        ids = [item.id for item, _, _ in outcomes]
        found = (await (await session.connection()).execute(_LOCK_ROWS, {"ids": ids})).all()
        session.info[_ROWS] = {row.id: row for row in found}
        session.info[_SAVES] = []
        session.info[_DELIVERED] = []

    async def _save_rows(self, session: AsyncSession) -> None:
        """Write the rows' new state, and what their delivery means, before the batch commits."""
        saves = session.info.pop(_SAVES, None)
        delivered = session.info.pop(_DELIVERED, None)
        session.info.pop(_ROWS, None)
        if delivered:
            await self._listener.delivered(session, delivered)
        if saves:
            await (await session.connection()).execute(_SAVE_ROW, saves)

    async def _record(
        self, session: AsyncSession, recorded: tuple[OutboxItem, Outcome, datetime]
    ) -> None:
        item, outcome, now = recorded
        found = session.info[_ROWS].get(item.id)
        saves: list[dict[str, Any]] = session.info[_SAVES]
        if found is None or found.status != OutboxStatus.PENDING.value:
            return
        if found.lease_owner != self.worker_id:
            log.warning("outbox: lease on row %s was lost before its outcome was saved", item.id)
        row = OutboxRow(**found._asdict())
        row.lease_owner = None
        row.lease_until = None
        if isinstance(outcome, Delivered):
            row.status = OutboxStatus.DELIVERED.value
            row.delivered_at = now
            row.external_id = outcome.external_id
            row.last_error = None
            saves.append(_saved(row))
            session.info[_DELIVERED].append(Delivery(row, now, outcome.external_id))
            return
        if isinstance(outcome, Deferred):
            row.available_at = now + timedelta(seconds=max(outcome.after, 0.0))
            saves.append(_saved(row))
            self._note_due(row.available_at)
            return
        row.attempts += 1
        row.last_error = outcome.error[:2000]
        if isinstance(outcome, Failed) or row.attempts >= self._retry.max_attempts:
            row.status = OutboxStatus.FAILED.value
            saves.append(_saved(row))
            log.error(
                "outbox: row %s (%s to %s) failed for good after %d attempts: %s",
                row.id,
                row.kind,
                row.route,
                row.attempts,
                outcome.error,
            )
            await self._listener.failed(session, row, now, outcome.error)
            return
        delay = self._retry.delay(row.attempts, outcome.after)
        row.available_at = now + timedelta(seconds=delay)
        saves.append(_saved(row))
        self._note_due(row.available_at)
        log.warning(
            "outbox: row %s (%s to %s) will be retried in %.1fs: %s",
            row.id,
            row.kind,
            row.route,
            delay,
            outcome.error,
        )

    def _note_due(self, at: datetime) -> None:
        if self._soonest is None or at < self._soonest:
            self._soonest = at

    async def _release(self, ids: list[int]) -> None:
        async with self._sessions.begin() as session:
            await session.execute(
                update(OutboxRow)
                .where(OutboxRow.id.in_(ids), OutboxRow.lease_owner == self.worker_id)
                .values(lease_owner=None, lease_until=None)
            )
        self.wakeup()


_CHANGING = ("status", "attempts", "available_at", "lease_owner", "lease_until", "last_error")
_SAVED = (*_CHANGING, "delivered_at", "external_id")
_ROWS = "supportbot.outbox_rows"  # the batch's locked rows, in its session's info
_SAVES = "supportbot.outbox_saves"  # their new state, written before COMMIT
_DELIVERED = "supportbot.outbox_delivered"  # the batch's deliveries, for the listener
_LOCK_ROWS = (
    select(
        *(
            outbox.c[name]
            for name in ("id", "route", "recipient", "kind", "ticket_id", "message_id", *_SAVED)
        )
    )
    .where(outbox.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(outbox.c.id)
    .with_for_update()
)
_SAVE_ROW = (
    update(outbox)
    .where(outbox.c.id == bindparam("row_id"))
    .values({name: bindparam(f"new_{name}") for name in _SAVED})
)


def _saved(row: OutboxRow) -> dict[str, Any]:
    """The bound values of _SAVE_ROW for a row's outcome."""
    values = {f"new_{name}": getattr(row, name) for name in _SAVED}
    values["row_id"] = row.id
    return values


def _item(row: OutboxRow) -> OutboxItem:
    return OutboxItem(
        id=row.id,
        route=Route(row.route),
        recipient=row.recipient,
        kind=OutboxKind(row.kind),
        payload=dict(row.payload),
        ticket_id=row.ticket_id,
        message_id=row.message_id,
        attempts=row.attempts,
        created_at=row.created_at,
    )
