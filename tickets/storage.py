"""Small SQL helpers that read the same on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


async def insert_ignore(
    session: AsyncSession, model: type[Any], values: dict[str, Any]
) -> int | None:
    """INSERT … ON CONFLICT DO NOTHING on either database; the new row's id, or None."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    result = await session.execute(
        insert(model).values(**values).on_conflict_do_nothing().returning(model.id)
    )
    inserted = result.scalar()
    return int(inserted) if inserted is not None else None
