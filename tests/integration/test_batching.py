"""Many items in one transaction: an item to blame fails alone, the rest are written."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import cast

import pytest
from sqlalchemy import Table, insert, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from tests.conftest import Database
from tickets.group_commit import in_transactions
from tickets.tables import AuditEntry

audit_log = cast(Table, AuditEntry.__table__)
PENDING = "test.pending"
AT = datetime(2026, 11, 24, 10, tzinfo=UTC)


async def _defer(session: AsyncSession, item: str) -> str:
    """The handler: nothing written yet, the item's write is left for the batch's end."""
    session.info.setdefault(PENDING, []).append(item)
    return f"ok {item}"


async def _write(session: AsyncSession) -> None:
    """The batch's end: one statement for all its items; a poisoned item breaks it."""
    items: list[str] = session.info.pop(PENDING, [])
    if any(item.startswith("poison") for item in items):
        raise ValueError("cannot write " + ", ".join(i for i in items if i.startswith("poison")))
    rows: list[dict[str, object]] = [
        {
            "at": AT,
            "actor": "test",
            "agent_id": None,
            "action": item,
            "ticket_id": None,
            "details": {},
        }
        for item in items
    ]
    await (await session.connection()).execute(insert(audit_log), rows)


async def _written(database: Database) -> list[str]:
    async with database.sessions() as session:
        return list((await session.scalars(select(AuditEntry.action))).all())


async def test_a_failing_end_of_batch_is_narrowed_down_to_its_item(database: Database) -> None:
    items = [f"item{n}" for n in range(10)]
    items[6] = "poison6"
    results = await in_transactions(database.sessions, items, _defer, _write)
    assert [str(r) for r in results] == [
        "cannot write poison6" if item == "poison6" else f"ok {item}" for item in items
    ]
    assert isinstance(results[6], ValueError)
    assert sorted(await _written(database)) == sorted(i for i in items if i != "poison6")


async def test_failing_reads_at_the_start_of_a_batch_are_narrowed_down_to_their_item(
    database: Database,
) -> None:
    """A batch reads ahead for all its items; when that fails, no other item pays for it."""
    starts: list[int] = []

    async def read_ahead(session: AsyncSession, batch: Sequence[str]) -> None:
        starts.append(len(batch))
        if "poison3" in batch:
            raise LookupError("cannot read for poison3")

    items = [f"item{n}" for n in range(8)]
    items[3] = "poison3"
    results = await in_transactions(database.sessions, items, _defer, _write, start=read_ahead)
    assert [str(r) for r in results] == [
        "cannot read for poison3" if item == "poison3" else f"ok {item}" for item in items
    ]
    assert sorted(await _written(database)) == sorted(i for i in items if i != "poison3")
    assert starts[0] == 8 and starts.count(1) >= 1, "halved until the item to blame was alone"


async def test_an_unreachable_database_fails_the_whole_batch(database: Database) -> None:
    async def down(session: AsyncSession) -> None:
        raise OperationalError("INSERT", {}, ConnectionRefusedError("connection refused"))

    with pytest.raises(OperationalError):  # an outage is not blamed on an item
        await in_transactions(database.sessions, ["a", "b", "c"], _defer, down)
    assert await _written(database) == []
