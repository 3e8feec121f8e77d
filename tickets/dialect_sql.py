"""SQL that reads the same on SQLite and PostgreSQL: an insert that skips a duplicate row, and
the next ticket number."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Insert, func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from tickets.tables import tickets


def insert_ignoring(dialect: str, table: Any) -> Insert:
    """INSERT … ON CONFLICT DO NOTHING for the connection's dialect."""
    build = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return build(table).on_conflict_do_nothing()


async def insert_ignore(
    session: AsyncSession, model: type[Any], values: dict[str, Any]
) -> int | None:
    """Insert one row unless it would break a unique key; the new row's id, or None."""
    dialect = session.get_bind().dialect.name
    statement = insert_ignoring(dialect, model).values(**values).returning(model.id)
    inserted = (await session.execute(statement)).scalar()
    return int(inserted) if inserted is not None else None


# The advisory lock class that serialises the numbering of new tickets on PostgreSQL.
TICKET_NUMBER_LOCK = 0x71C_0E7


async def next_ticket_number(connection: AsyncConnection) -> int:
    """The number of a new ticket: one above the highest, so numbers have no gaps.

    A sequence hands out numbers that a rolled-back transaction never gives back (an IMAP
    batch retried after one bad mail skipped #26 to #34); this reads the highest number in the
    transaction instead, under a transaction-scoped advisory lock on PostgreSQL (released at
    COMMIT or ROLLBACK), so two writers never take the same one. SQLite has one writer.
    """
    if connection.dialect.name == "postgresql":
        await connection.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": TICKET_NUMBER_LOCK}
        )
    highest = (await connection.execute(select(func.max(tickets.c.id)))).scalar()
    return int(highest or 0) + 1
