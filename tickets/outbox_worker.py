"""The outbox worker: claims due rows, hands them to their route's sender, records outcomes.

A row is claimed with a short lease (`lease_owner`, `lease_until`), which the worker renews while
the row is in its hands, so the rows of a process that died are taken back within seconds. Each
row's outcome is saved the moment its sender reports it, and kept and saved again while the
database cannot be reached, so a row that went out is not sent again (see README, "Nothing is
sent twice", for the moments when it still can be). Rows for one recipient go out in the order
they were written: a row is not claimed while an earlier row for the same recipient is waiting
out a backoff or is leased by another worker. On PostgreSQL a claim takes a transaction-scoped
advisory lock per route it claims for, so workers of one route see each other's fresh leases
while workers of other routes claim side by side, and it locks rows `FOR UPDATE SKIP LOCKED`
against outcome updates; SQLite, which has one writer at a time, ignores that clause and claims
inside its IMMEDIATE transaction.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from tickets.group_commit import Coalescer, in_transactions, unreachable
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
from tickets.periodic import sleep_until_stopped
from tickets.ports import Clock
from tickets.tables import OutboxRow, outbox

log = logging.getLogger(__name__)

CLAIM_LOCK = 0x5B0_0B0C  # advisory lock class serialising a route's outbox claims on PostgreSQL
_ROUTE_LOCKS = text(
    "SELECT count(pg_advisory_xact_lock(:key, route_key))"
    " FROM unnest(CAST(:routes AS integer[])) AS route_key"  # in the array's order
)


# A claimed row is the worker's for this long, renewed every third of it while the row is in its
# hands: a process that dies leaves rows that others take back after at most this long.
LEASE = timedelta(seconds=15)
# An outcome the database would not take (it could not be reached) is kept and saved again, with
# pauses growing to this long, for at most SAVE_PATIENCE seconds.
SAVE_PAUSE_MAX = 5.0
SAVE_PATIENCE = 120.0


def route_lock(route: str) -> int:
    """The second key of a route's claim lock (the first is CLAIM_LOCK)."""
    return zlib.crc32(route.encode()) & 0x7FFF_FFFF


@dataclass(frozen=True)
class _Progress:
    """Part of a row went out (`Report.progress`): saved with the row, which stays leased."""

    state: Mapping[str, Any]


_Entry = tuple[OutboxItem, Outcome | _Progress, datetime]


async def take_back_leases(sessions: async_sessionmaker[AsyncSession]) -> int:
    """Free every leased row at once: on SQLite, where one process is all there is, any lease
    found at start was left by a process that died. Returns how many rows were freed."""
    async with sessions.begin() as session:
        result = await session.execute(
            update(OutboxRow)
            .where(
                OutboxRow.status == OutboxStatus.PENDING.value, OutboxRow.lease_owner.is_not(None)
            )
            .values(lease_owner=None, lease_until=None)
            .execution_options(synchronize_session=False)
        )
    return int(getattr(result, "rowcount", 0) or 0)


class _Recording:
    """A `Report` for one group: saves each outcome (and progress) as soon as it is reported."""

    def __init__(self, worker: OutboxWorker, items: Sequence[OutboxItem]) -> None:
        self._worker = worker
        self._items = items
        self.reported = 0
        self._saving: list[asyncio.Future[None]] = []
        self._last: dict[int, asyncio.Future[None]] = {}  # per row, so its saves keep order

    def outcome(self, item: OutboxItem, outcome: Outcome) -> None:
        if self.reported >= len(self._items) or self._items[self.reported].id != item.id:
            raise RuntimeError(f"a sender reported row {item.id} out of order")
        self.reported += 1
        self._save(item, outcome)

    async def progress(self, item: OutboxItem, state: Mapping[str, Any]) -> None:
        await self._save(item, _Progress(dict(state)))

    def _save(self, item: OutboxItem, outcome: Outcome | _Progress) -> asyncio.Future[None]:
        after = self._last.get(item.id)
        entry = (item, outcome, self._worker.clock())
        task = asyncio.ensure_future(self._worker.save(entry, after))
        self._last[item.id] = task
        self._saving.append(task)
        return task

    async def saved(self) -> None:
        """Wait for every save; raise the first that failed."""
        results = await asyncio.gather(*self._saving, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result


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
        lease: timedelta = LEASE,
        batch_size: int = 100,
        concurrency: int = 8,
        worker_id: str | None = None,
        wakeup: Wakeup | None = None,
    ) -> None:
        self._sessions = sessions
        self._senders = dict(senders)
        self._listener = listener
        self.clock = clock
        self._retry = retry or RetryPolicy()
        self._lease = lease
        self._batch_size = batch_size
        self._limit = asyncio.Semaphore(concurrency)
        self.worker_id = worker_id or f"outbox-{uuid.uuid4().hex[:12]}"
        self.wakeup = wakeup or Wakeup()
        self._soonest: datetime | None = None
        self._outcomes: Coalescer[_Entry, None] = Coalescer(self._record_many, limit=batch_size)
        self._held: set[int] = set()  # claimed and not yet saved or given back: leases to renew

    async def run(self, stop: asyncio.Event, *, poll: float = 1.0) -> None:
        """Deliver until `stop` is set; a failing database is logged and retried, never fatal.

        After a full batch the next is claimed while it is still going out (two batches at
        most), so the senders never stand idle while a batch's last outcomes are recorded. A
        recipient's later rows wait for its earlier ones all the same: a claim skips them
        while an earlier row is leased.
        """
        rounds: set[asyncio.Task[None]] = set()
        heartbeat = asyncio.create_task(self._renew_leases(stop))
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
        finally:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
        await asyncio.gather(*rounds, return_exceptions=True)

    async def _renew_leases(self, stop: asyncio.Event) -> None:
        """Every third of a lease, extend the leases of the rows this worker holds."""
        every = self._lease.total_seconds() / 3
        while not stop.is_set():
            await sleep_until_stopped(stop, every)
            held = sorted(self._held)
            if not held or stop.is_set():
                continue
            try:
                async with self._sessions.begin() as session:
                    await session.execute(
                        update(OutboxRow)
                        .where(
                            OutboxRow.id.in_(held),
                            OutboxRow.lease_owner == self.worker_id,
                            OutboxRow.status == OutboxStatus.PENDING.value,
                        )
                        .values(lease_until=self.clock() + self._lease)
                        .execution_options(synchronize_session=False)
                    )
            except Exception as error:  # the next beat tries again; leases last three beats
                log.warning("outbox: renewing %d leases failed: %s", len(held), error)

    def _pause(self, poll: float) -> float:
        """Sleep until the next poll, or sooner when a postponed row comes due before it."""
        soonest, self._soonest = self._soonest, None
        if soonest is None:
            return poll
        return min(poll, max((soonest - self.clock()).total_seconds(), 0.01))

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
        try:
            await asyncio.gather(*(self._deliver_group(group) for group in groups.values()))
        finally:
            self._held.difference_update(item.id for item in items)

    async def _claim(self) -> list[OutboxItem]:
        now = self.clock()
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
            # A row this worker holds stays its own, even if a late renewal let its lease lapse.
            .where(*([OutboxRow.id.not_in(sorted(self._held))] if self._held else []))
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
            items = sorted((_item(row) for row in rows), key=lambda item: item.id)
        self._held.update(item.id for item in items)
        return items

    async def _deliver_group(self, items: list[OutboxItem]) -> None:
        sender = self._senders[items[0].route]
        recording = _Recording(self, items)
        async with self._limit:
            try:
                await sender.deliver(items, recording)
            except Exception as error:  # a sender bug must not lose the rows
                log.exception("outbox: sender for %s raised", items[0].route.value)
                if recording.reported < len(items):
                    failed = items[recording.reported]
                    recording.outcome(failed, RetryLater(f"{type(error).__name__}: {error}"))
        if recording.reported < len(items):
            await self._release([item.id for item in items[recording.reported :]])
        await recording.saved()

    async def save(self, entry: _Entry, after: asyncio.Future[None] | None = None) -> None:
        """Save one reported outcome (after `after`, the row's previous save).

        While the database cannot be reached the outcome is kept and saved again: forgetting
        that a row went out would send it again once its lease ran out.
        """
        if after is not None:
            await asyncio.wait({after})
        pause = 0.25
        waited = 0.0
        while True:
            try:
                await self._outcomes.submit(entry)
                return
            except Exception as error:
                if not unreachable(error) or waited >= SAVE_PATIENCE:
                    if isinstance(entry[1], Delivered):
                        log.error(
                            "outbox: row %s went out but could not be saved; it may be sent "
                            "again: %s",
                            entry[0].id,
                            error,
                        )
                    raise
                log.warning(
                    "outbox: the database cannot be reached; the outcome of row %s is kept and "
                    "saved again in %.2f s: %s",
                    entry[0].id,
                    pause,
                    error,
                )
            await asyncio.sleep(pause)
            waited += pause
            pause = min(pause * 2, SAVE_PAUSE_MAX)

    async def _record_many(self, outcomes: Sequence[_Entry]) -> list[Exception | None]:
        """Outcomes of many groups in one transaction (a failing one is retried on its own)."""
        return await in_transactions(
            self._sessions, outcomes, self._record, self._save_rows, start=self._lock_rows
        )

    async def _lock_rows(self, session: AsyncSession, outcomes: Sequence[_Entry]) -> None:
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

    async def _record(self, session: AsyncSession, recorded: _Entry) -> None:
        item, outcome, now = recorded
        found = session.info[_ROWS].get(item.id)
        saves: list[dict[str, Any]] = session.info[_SAVES]
        if found is None or found.status != OutboxStatus.PENDING.value:
            return
        if found.lease_owner != self.worker_id:
            log.warning("outbox: lease on row %s was lost before its outcome was saved", item.id)
        row = OutboxRow(**found._asdict())
        if isinstance(outcome, _Progress):  # the row is still on its way: it stays leased
            row.progress = dict(outcome.state)
            saves.append(_saved(row))
            return
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
        self._held.difference_update(ids)
        async with self._sessions.begin() as session:
            await session.execute(
                update(OutboxRow)
                .where(OutboxRow.id.in_(ids), OutboxRow.lease_owner == self.worker_id)
                .values(lease_owner=None, lease_until=None)
            )
        self.wakeup()


_CHANGING = ("status", "attempts", "available_at", "lease_owner", "lease_until", "last_error")
_SAVED = (*_CHANGING, "delivered_at", "external_id", "progress")
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
        progress=row.progress,
    )
