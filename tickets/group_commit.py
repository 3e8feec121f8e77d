"""Many small writes in one transaction, without letting one bad item spoil the others.

`in_transactions` runs a handler for each item of a batch inside one transaction. If the handler
fails for an item, that transaction is rolled back and the batch is split: the items before it
run again together, the failing item runs alone (its error, if it fails again, is its result),
and the items after it go on as a batch. If the batch's own work fails (the reads at its start,
or the writes deferred to its end), the batch is halved until the item behind the failure is
alone. So every item ends with its own result or its own error, and one item's failure never
loses or changes another's work. Only a database that cannot be reached fails the whole batch.

`Coalescer` gathers the items concurrent callers submit while a batch is being written, and
writes them as the next batch: concurrent callers share transactions (group commit) instead of
queueing one by one for the database's write lock, and each caller still gets its own result.
Items are written in the order they were submitted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

Item = TypeVar("Item")
Result = TypeVar("Result")

Handler = Callable[[AsyncSession, Item], Awaitable[Result]]


class _ItemFailed(Exception):
    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(index)
        self.index = index
        self.error = error


class _BatchFailed(Exception):
    """The batch's own work failed: `start` or `finish`, not one item's handler."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


def unreachable(error: BaseException) -> bool:
    """Whether an error says the database cannot be reached (no item is to blame)."""
    if isinstance(error, DBAPIError):
        return isinstance(error, OperationalError | InterfaceError) or error.connection_invalidated
    return isinstance(error, OSError | TimeoutError)


async def in_transactions(
    sessions: async_sessionmaker[AsyncSession],
    items: Sequence[Item],
    handle: Callable[[AsyncSession, Item], Awaitable[Result]],
    finish: Callable[[AsyncSession], Awaitable[None]] | None = None,
    *,
    start: Callable[[AsyncSession, Sequence[Item]], Awaitable[None]] | None = None,
) -> list[Result | Exception]:
    """Handle every item, as few transactions as possible; a result or an error per item.

    `start` runs first in each transaction, with the items it will handle (to read or lock what
    they need at once); `finish` runs at its end, before COMMIT (writes the handler deferred).
    An error outside any one item (the database cannot be reached, or COMMIT fails) is raised:
    then nothing of the batch was committed.
    """
    if not items:
        return []
    try:
        return list(await _together(sessions, items, handle, finish, start))
    except _BatchFailed as failure:
        if unreachable(failure.error):
            raise failure.error from None
        if len(items) == 1:
            return [failure.error]
        half = len(items) // 2
        head = await in_transactions(sessions, items[:half], handle, finish, start=start)
        tail = await in_transactions(sessions, items[half:], handle, finish, start=start)
        return [*head, *tail]
    except _ItemFailed as failure:
        if len(items) == 1:
            return [failure.error]
        index = failure.index
        head = await in_transactions(sessions, items[:index], handle, finish, start=start)
        alone = await in_transactions(
            sessions, items[index : index + 1], handle, finish, start=start
        )
        tail = await in_transactions(sessions, items[index + 1 :], handle, finish, start=start)
        return [*head, *alone, *tail]


async def _together(
    sessions: async_sessionmaker[AsyncSession],
    items: Sequence[Item],
    handle: Callable[[AsyncSession, Item], Awaitable[Result]],
    finish: Callable[[AsyncSession], Awaitable[None]] | None,
    start: Callable[[AsyncSession, Sequence[Item]], Awaitable[None]] | None,
) -> list[Result]:
    results: list[Result] = []
    async with sessions.begin() as session:
        if start is not None:
            try:
                await start(session, items)
            except Exception as error:
                raise _BatchFailed(error) from error
        for index, item in enumerate(items):
            try:
                results.append(await handle(session, item))
            except Exception as error:
                raise _ItemFailed(index, error) from error
        if finish is not None:
            try:
                await finish(session)
            except Exception as error:
                raise _BatchFailed(error) from error
    return results


class Coalescer(Generic[Item, Result]):
    """Writes what concurrent callers submit in shared batches; each caller gets its own result."""

    def __init__(
        self,
        write: Callable[[Sequence[Item]], Awaitable[Sequence[Result | Exception]]],
        *,
        limit: int = 100,
    ) -> None:
        self._write = write
        self._limit = max(limit, 1)
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        """Queue one item for the next batch and wait for its own result (or error)."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self._limit]
                del self._waiting[: self._limit]
                await self._write_batch(batch)
        finally:
            self._writer = None
            left, self._waiting = self._waiting, []  # only when the writer itself was cancelled
            for _, future in left:
                future.cancel()

    async def _write_batch(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            results = await self._write([item for item, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as error:
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue  # its caller stopped waiting; the item was written all the same
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
