"""Which replica does what: one leader per role among any number of `supportbot run` processes.

Some work must be done by one process at a time: reading Telegram's updates and talking to
Telegram at all (one rate budget), reading the mailbox, and the periodic jobs (SLA watch, payouts
check, credit run, plan refresh). Each is a *role*. On PostgreSQL a role is held by whoever holds
its advisory lock (`supportbot.leader_locks`) on a connection of its own, outside the pool:

* every quarter of `retry` (1 s) a follower tries for the free roles and a leader checks its
  connection; the moment a check fails the leader gives up every role at once (the lock may still
  be held for a few seconds until the server notices, never longer than the keepalives allow), so
  it never acts as leader on a lock it may have lost;
* a follower that wins a lock waits `settle` (half of `retry`, at least 0.5 s) before it leads:
  by then a leader whose connection was cut has run its check, failed it and stopped its jobs, so
  a job never runs on two replicas at once. When a leader dies, SIGKILL included, its connection
  closes, PostgreSQL frees the lock, and a follower leads well within a second;
* on `stop` (SIGTERM) the connection is closed first, so another replica takes over while this
  one finishes the sends in flight.

SQLite is one process (`supportbot.single_process`): `Solo` makes it the leader of everything.
`while_leading` runs any job (one that takes a `stop` event) only while this replica leads a role.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from supportbot import leader_locks
from tickets.periodic import sleep_until_stopped

log = logging.getLogger("supportbot.leadership")
_T = TypeVar("_T")

TELEGRAM = "telegram"  # getUpdates (or the webhook's kept updates) and every call to Telegram
IMAP = "imap"  # reading the support mailbox
JOBS = "jobs"  # SLA watch, payouts check, credit run, plan refresh (and retention)
LEADER = "leader"
FOLLOWER = "follower"


class Leadership(Protocol):
    """What a replica knows of its roles (for `/readyz`, metrics and `while_leading`)."""

    def is_leader(self, role: str) -> bool: ...

    def roles(self) -> dict[str, str]: ...

    async def leading(self, role: str, stop: asyncio.Event) -> bool: ...

    async def lost(self, role: str) -> None: ...


class _Roles:
    """The state every kind of leadership shares: per role, an event for held and for not held."""

    def __init__(self, roles: Iterable[str]) -> None:
        self._held = {role: asyncio.Event() for role in roles}
        self._free = {role: asyncio.Event() for role in self._held}
        for event in self._free.values():
            event.set()

    def is_leader(self, role: str) -> bool:
        """Whether this replica holds `role` now."""
        held = self._held.get(role)
        return held is not None and held.is_set()

    def roles(self) -> dict[str, str]:
        """Each role this replica takes part in: "leader" or "follower"."""
        return {role: LEADER if held.is_set() else FOLLOWER for role, held in self._held.items()}

    async def leading(self, role: str, stop: asyncio.Event) -> bool:
        """Wait until this replica holds `role` (True) or `stop` is set (False)."""
        held = asyncio.ensure_future(self._held[role].wait())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({held, stopped}, return_when=asyncio.FIRST_COMPLETED)
        for waiter in (held, stopped):
            waiter.cancel()
        return self._held[role].is_set() and not stop.is_set()

    async def lost(self, role: str) -> None:
        """Return once this replica no longer holds `role`."""
        await self._free[role].wait()

    def _take(self, role: str) -> None:
        self._free[role].clear()
        self._held[role].set()
        log.info("leadership: this replica now leads %s", role)

    def _drop(self, role: str, why: str) -> None:
        if self._held[role].is_set():
            log.warning("leadership: this replica gives up %s (%s)", role, why)
        self._held[role].clear()
        self._free[role].set()


class Solo(_Roles):
    """The only process there is (SQLite): leader of every role from the start."""

    def __init__(self, roles: Iterable[str]) -> None:
        super().__init__(roles)
        for role in self._held:
            self._free[role].clear()
            self._held[role].set()

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()


class AdvisoryLeadership(_Roles):
    """Roles held through PostgreSQL advisory locks on one connection outside the pool."""

    def __init__(
        self,
        engine: AsyncEngine,
        roles: Iterable[str],
        *,
        retry: float = 1.0,
        check_timeout: float = 2.0,
    ) -> None:
        super().__init__(roles)
        self._engine = engine
        self._retry = retry
        self._tick = retry / 4
        self._settle = max(retry / 2, 0.5)
        self._check_timeout = check_timeout

    async def run(self, stop: asyncio.Event) -> None:
        """Hold what roles it can until `stop`; then give every role up at once."""
        while not stop.is_set():
            try:
                async with self._engine.connect() as connection:
                    await self._hold(connection, stop)
            except asyncio.CancelledError:
                self._drop_all("stopping")
                raise
            except Exception as error:
                self._drop_all(f"lock connection failed: {type(error).__name__}: {error}")
                await sleep_until_stopped(stop, self._retry)
        self._drop_all("stopping")

    async def _hold(self, connection: AsyncConnection, stop: asyncio.Event) -> None:
        clock = asyncio.get_running_loop().time
        won: dict[str, float] = {}  # locks held but not led yet: since when
        try:
            while not stop.is_set():
                for role in self._held:
                    if self.is_leader(role):
                        continue
                    if role in won:
                        if clock() - won[role] >= self._settle:
                            del won[role]
                            self._take(role)
                    elif await self._checked(leader_locks.try_lock(connection, role)):
                        won[role] = clock()
                await self._checked(leader_locks.ping(connection))
                waits = [self._settle - (clock() - since) for since in won.values()]
                await sleep_until_stopped(stop, max(0.0, min([self._tick, *waits])))
        finally:
            # Closing the connection (leaving this block) frees the locks on the server; the
            # roles are given up here first, so no job runs on a lock that is going away.
            self._drop_all("stopping" if stop.is_set() else "lock connection lost")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.invalidate(), self._check_timeout)

    async def _checked(self, call: Awaitable[_T]) -> _T:
        return await asyncio.wait_for(call, self._check_timeout)

    def _drop_all(self, why: str) -> None:
        for role in self._held:
            self._drop(role, why)


async def while_leading(
    leadership: Leadership,
    role: str,
    job: Callable[[asyncio.Event], Awaitable[None]],
    stop: asyncio.Event,
) -> None:
    """Run `job` each time this replica comes to lead `role`, and stop it when the role is lost.

    `job` is given a stop event of its own, set when `stop` is set or the role is lost; it is
    expected to finish what is in flight and return (the outbox worker and the pollers do).
    """
    while await leadership.leading(role, stop):
        term = asyncio.Event()
        watcher = asyncio.create_task(_end_term(leadership, role, stop, term))
        try:
            await job(term)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        if not term.is_set():  # the job ended by itself: wait until the role changes hands
            await _first(leadership.lost(role), stop.wait())


async def _end_term(
    leadership: Leadership, role: str, stop: asyncio.Event, term: asyncio.Event
) -> None:
    await _first(leadership.lost(role), stop.wait())
    term.set()


async def _first(*waits: Awaitable[object]) -> None:
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
