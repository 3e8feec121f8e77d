"""The migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect

from supportbot import db
from supportbot.schema import metadata, models_only
from tests.conftest import Database


def _differences(connection: Connection) -> list[object]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "include_object": models_only}
    )
    return list(compare_metadata(context, metadata))


async def test_migrated_schema_matches_the_models(database: Database) -> None:
    async with database.engine.connect() as connection:
        assert await connection.run_sync(_differences) == []


async def test_database_is_at_the_newest_revision(database: Database) -> None:
    current, head = await db.revisions(database.engine)
    assert current == head is not None


async def test_queue_indexes_exist(database: Database) -> None:
    def names(connection: Connection) -> set[str]:
        return {ix["name"] or "" for ix in inspect(connection).get_indexes("tickets")}

    async with database.engine.connect() as connection:
        found = await connection.run_sync(names)
    assert {"ix_tickets_waiting_due", "ix_tickets_waiting_plan_due"} <= found


async def test_upgrade_twice_is_harmless(database: Database) -> None:
    await db.upgrade(database.engine)
    current, head = await db.revisions(database.engine)
    assert current == head
