"""Inbound events kept from the moment they are fetched until they have been handled.

A source that confirms by position — Telegram's `getUpdates` offset confirms every update
before it — leaves a reader two bad choices: confirm early, and a crash loses what was not
handled yet; or confirm late, and fetch nothing new until the slowest event of a batch is done,
so one busy chat holds back every other. Kept here first, events are confirmed at once and
handled in whatever order the reader likes; what a crash interrupted is still here at the next
start. A handled event is forgotten only once the source has been told it arrived, so a source
that delivers it again never finds it missing from here and new.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tickets.dialect_sql import insert_ignoring
from tickets.ports import Clock
from tickets.tables import InboxEvent

inbox = cast(Table, InboxEvent.__table__)


@dataclass(frozen=True)
class Kept:
    """An event as it was fetched: its position at the source and its raw form."""

    seq: int
    payload: dict[str, Any]


class Inbox:
    """The events of one source that were fetched and are not yet known to be handled."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], source: str, clock: Clock
    ) -> None:
        self._sessions = sessions
        self.source = source
        self._clock = clock

    async def keep(self, events: Sequence[Kept], handled: Iterable[int] = ()) -> set[int]:
        """Store fetched events and forget handled ones, in one transaction.

        Returns the positions of the events that are new here (one kept before, e.g. fetched
        again after a crash, is not). `handled` must be events the source was told arrived.
        """
        done = sorted(set(handled))
        if not events and not done:
            return set()
        now: datetime = self._clock()
        async with self._sessions.begin() as session:
            connection = await session.connection()
            new: set[int] = set()
            if events:
                rows = [
                    {"source": self.source, "seq": e.seq, "payload": e.payload, "received_at": now}
                    for e in events
                ]
                statement = insert_ignoring(connection.dialect.name, inbox).values(rows)
                found = await connection.execute(statement.returning(inbox.c.seq))
                new = set(found.scalars())
            if done:
                await connection.execute(
                    delete(inbox).where(inbox.c.source == self.source, inbox.c.seq.in_(done))
                )
        return new

    async def pending(self) -> list[Kept]:
        """Events kept and not yet forgotten, in the order they were fetched."""
        async with self._sessions() as session:
            rows = await session.execute(
                select(inbox.c.seq, inbox.c.payload)
                .where(inbox.c.source == self.source)
                .order_by(inbox.c.seq)
            )
            return [Kept(row.seq, dict(row.payload)) for row in rows]
