"""Rate limits of the "N per window" kind that hold when requests race, on both databases.

Every such rule — link codes per user and per address, receipts per address, a customer's
commands and new tickets — counts in one `rate_windows` row per rule and holder: the moments of
the holder's latest allowed uses, at most N of them. Counting a use locks that row first, with
an upsert that returns it (a row lock on PostgreSQL; SQLite's IMMEDIATE transactions let one
writer in at a time), so concurrent requests queue on the row instead of each counting the same
earlier uses. Rows are locked in (rule, holder) order in one statement, so transactions that
need several rows cannot deadlock on each other. The count is part of the caller's transaction:
a use whose transaction rolls back was never counted.

The window slides: a use is allowed while fewer than N allowed uses lie inside the window
before it, and a refused request is no use. A holder is told about a refusal once per spell:
`told_at` says when they were last told, and they are told again only after a later use was
allowed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, cast

from sqlalchemy import JSON, Insert, Table, bindparam, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from tickets.tables import RateWindow, UTCDateTime

rate_windows = cast(Table, RateWindow.__table__)

RateKey = tuple[str, str]  # (rule name, holder)


@dataclass(frozen=True)
class RateRule:
    """At most `limit` uses by one holder in any `window`."""

    name: str
    limit: int
    window: timedelta

    def __post_init__(self) -> None:
        if self.limit < 1 or self.window <= timedelta(0):
            raise ValueError(f"rate rule {self.name}: needs a limit >= 1 and a positive window")

    def key(self, holder: str | int) -> RateKey:
        """The window row of a holder under this rule."""
        return self.name, str(holder)[:320]


@dataclass
class Window:
    """One holder's window under one rule, as the locked row holds it (pure: no I/O)."""

    uses: list[float]
    told_at: datetime | None = None
    changed: bool = False

    def retry_at(self, rule: RateRule, now: datetime) -> datetime | None:
        """None when a use is allowed now; otherwise when the next one will be."""
        recent = self._recent(rule, now)
        if len(recent) < rule.limit:
            return None
        return datetime.fromtimestamp(recent[-rule.limit], UTC) + rule.window

    def use(self, rule: RateRule, now: datetime) -> None:
        """Count an allowed use (the caller checked `retry_at` first)."""
        recent = self._recent(rule, now)
        self.uses = [*recent[max(len(recent) - rule.limit + 1, 0) :], now.timestamp()]
        self.changed = True

    def refuse(self, now: datetime) -> bool:
        """Note a refusal; whether the holder should be told (not told since their last use)."""
        last_use = max(self.uses, default=float("-inf"))
        if self.told_at is not None and self.told_at.timestamp() >= last_use:
            return False
        self.told_at = now
        self.changed = True
        return True

    def _recent(self, rule: RateRule, now: datetime) -> list[float]:
        # Uses stamped after `now` count too: a request that read its clock and then waited
        # for the row's lock is later than the uses of those it waited for.
        since = (now - rule.window).timestamp()
        return sorted(u for u in self.uses if u > since)


@dataclass(frozen=True)
class RateVerdict:
    """What became of a request counted against one or more rules."""

    allowed: bool
    retry_at: datetime | None = None  # refused: when it would be allowed
    tell: bool = False  # refused, and the holder was not told since their last allowed use


async def lock_windows(
    connection: AsyncConnection, keys: Iterable[RateKey]
) -> dict[RateKey, Window]:
    """Lock (making them if new) the window rows of these keys, in key order, in one statement."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    rows = await connection.execute(
        _lock(connection.dialect.name).values(
            [{"rule": rule, "holder": holder, "uses": []} for rule, holder in wanted]
        )
    )
    return {
        (row.rule, row.holder): Window([float(u) for u in row.uses or []], row.told_at)
        for row in rows
    }


async def save_windows(
    connection: AsyncConnection, windows: Iterable[tuple[RateKey, Window]]
) -> None:
    """Write the windows a transaction changed (before it commits)."""
    changed = [
        {
            "key_rule": rule,
            "key_holder": holder,
            "new_uses": window.uses,
            "new_told_at": window.told_at,
        }
        for (rule, holder), window in windows
        if window.changed
    ]
    if changed:
        await connection.execute(_SAVE, changed)


async def take(
    connection: AsyncConnection, uses: Sequence[tuple[RateRule, str | int]], now: datetime
) -> RateVerdict:
    """Count one use under every rule given, all or none: allowed only if each has room."""
    keyed = [(rule, rule.key(holder)) for rule, holder in uses]
    windows = await lock_windows(connection, (key for _, key in keyed))
    waits = [
        (key, wait) for rule, key in keyed if (wait := windows[key].retry_at(rule, now)) is not None
    ]
    if waits:
        told = [windows[key].refuse(now) for key, _ in waits]
        verdict = RateVerdict(False, max(wait for _, wait in waits), any(told))
    else:
        for rule, key in keyed:
            windows[key].use(rule, now)
        verdict = RateVerdict(True)
    await save_windows(connection, windows.items())
    return verdict


@cache
def _lock(dialect: str) -> Insert:
    """Insert-or-touch that returns the row, locked: the same statement on both databases."""
    build: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = build(rate_windows)
    return cast(
        Insert,
        statement.on_conflict_do_update(
            index_elements=["rule", "holder"], set_={"uses": rate_windows.c.uses}
        ).returning(
            rate_windows.c.rule,
            rate_windows.c.holder,
            rate_windows.c.uses,
            rate_windows.c.told_at,
        ),
    )


_SAVE = (
    update(rate_windows)
    .where(
        rate_windows.c.rule == bindparam("key_rule"),
        rate_windows.c.holder == bindparam("key_holder"),
    )
    .values(
        uses=bindparam("new_uses", type_=JSON()),
        told_at=bindparam("new_told_at", type_=UTCDateTime()),
    )
)
