"""The outbox: rows written with the change that caused them, delivered by a worker that retries.

This module holds what the core and the adapters share: the rows' items and the outcomes a
sender reports (`Delivered`, `RetryLater`, `Failed`, `Deferred`, and a row's `progress` on the
way), the wake-ups and the retry policy. Rows are written with `tickets.payloads.enqueue` (or
`outbox_row`), which pair each kind with its payload type. The worker that claims and delivers
rows is `tickets.outbox_worker.OutboxWorker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from tickets.model import OutboxKind, Route
from tickets.tables import OutboxRow


@dataclass(frozen=True)
class OutboxItem:
    """One claimed row, as a sender sees it."""

    id: int
    route: Route
    recipient: str
    kind: OutboxKind
    payload: Mapping[str, Any]
    ticket_id: int | None
    message_id: int | None
    attempts: int
    created_at: datetime
    # What a sender saved of a row that takes several messages (see `Report.progress`): a
    # retry, in this process or another after a crash, sends only what is still missing.
    progress: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Delivered:
    external_id: str | None = None


@dataclass(frozen=True)
class RetryLater:
    error: str
    after: float | None = None


@dataclass(frozen=True)
class Failed:
    error: str


@dataclass(frozen=True)
class Deferred:
    """Not sent, on purpose (a rate budget is spent): try again after `after` seconds.

    Unlike RetryLater it is no failure, so it uses up none of the row's attempts.
    """

    after: float


Outcome = Delivered | RetryLater | Failed | Deferred


class Report(Protocol):
    """Where a sender says how each row went, the moment it knows (see `Sender`)."""

    def outcome(self, item: OutboxItem, outcome: Outcome) -> None:
        """The row's outcome; rows are reported in the order they were given."""

    async def progress(self, item: OutboxItem, state: Mapping[str, Any]) -> None:
        """Part of a row went out: `state` is saved with the row (when this returns), so that
        no retry, in this process or another, sends that part again."""


class Sender(Protocol):
    """Delivers rows of one recipient, in order.

    It reports one outcome per row it tried, in order, as soon as it has it: the worker saves
    it at once, so the time in which a crash would send a row again is as short as the channel
    allows. A row that takes several messages reports its `progress` before each further
    message. A sender may stop early (after a failure, or after a batch it merged into one
    message); rows it did not report go back to the queue as they were.
    """

    async def deliver(self, items: Sequence[OutboxItem], report: Report) -> None: ...


@dataclass(frozen=True)
class Delivery:
    """A row that went out: when, and the id its channel gave it."""

    row: OutboxRow
    at: datetime
    external_id: str | None = None


class DeliveryListener(Protocol):
    """The core's reaction to deliveries, run in the transaction that records them."""

    async def delivered(self, session: AsyncSession, deliveries: Sequence[Delivery]) -> None: ...

    async def failed(
        self, session: AsyncSession, row: OutboxRow, at: datetime, error: str
    ) -> None: ...


class Wakeups:
    """Tells every worker of a process at once that there is something new to send."""

    def __init__(self) -> None:
        self._each: list[Wakeup] = []

    def new(self) -> Wakeup:
        wakeup = Wakeup()
        self._each.append(wakeup)
        return wakeup

    def __call__(self) -> None:
        for wakeup in self._each:
            wakeup()


class Wakeup:
    """Lets writers tell the worker there is something to send, so it need not wait a poll."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def __call__(self) -> None:
        self._event.set()

    async def wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), seconds)
        self._event.clear()


@dataclass
class RetryPolicy:
    """Exponential backoff with jitter; after `max_attempts` failures a row has failed for good."""

    base_delay: float = 2.0
    max_delay: float = 600.0
    max_attempts: int = 12
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempts: int, hint: float | None = None) -> float:
        if hint is not None:
            return max(hint, 0.0)
        raw = min(self.base_delay * 2.0 ** max(attempts - 1, 0), self.max_delay)
        return raw * (1 + self.jitter * (2 * self.rng.random() - 1))


DeliverFunction = Callable[[OutboxItem], Awaitable[Outcome]]


async def deliver_in_order(
    items: Sequence[OutboxItem], report: Report, deliver_one: DeliverFunction
) -> None:
    """Deliver rows one after another, reporting each; stop at the first that did not go out."""
    for item in items:
        outcome = await deliver_one(item)
        report.outcome(item, outcome)
        if not isinstance(outcome, Delivered):
            break


class OneByOne:
    """A Sender built from a function that delivers a single row; stops at the first failure."""

    def __init__(self, deliver_one: DeliverFunction) -> None:
        self._deliver_one = deliver_one

    async def deliver(self, items: Sequence[OutboxItem], report: Report) -> None:
        await deliver_in_order(items, report, self._deliver_one)
