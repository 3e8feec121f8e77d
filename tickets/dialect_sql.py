"""SQL that reads the same on SQLite and PostgreSQL: an insert that skips a duplicate row."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


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
