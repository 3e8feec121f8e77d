"""The database: one async engine for SQLite (aiosqlite) or PostgreSQL (asyncpg), and migrations."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event
from sqlalchemy.engine import make_url
from sqlalchemy.engine.url import URL
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

MIGRATIONS = Path(__file__).with_name("migrations")


def normalise_url(raw: str) -> URL:
    """Accept the plain URLs operators write and pick the async driver for them."""
    url = make_url(raw)
    backend = url.get_backend_name()
    if backend == "sqlite":
        return url.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+asyncpg")
    raise ValueError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")


def create_engine(
    raw_url: str, *, pool_size: int = 10, dedicated: Mapping[str, str] | None = None
) -> AsyncEngine:
    """Build the engine; SQLite gets WAL, foreign keys and write transactions that queue up.

    `dedicated` (PostgreSQL): no pool, every connect a connection of its own, opened with these
    extra server settings (the leadership's lock connection).
    """
    url = normalise_url(raw_url)
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, poolclass=NullPool if database == ":memory:" else None)
        _configure_sqlite(engine)
        return engine
    # libpq's `options=-c key=value` (for example a search_path) becomes asyncpg server settings.
    server_settings = _server_settings(url.query.get("options"))
    url = url.difference_update_query(["options"])
    if dedicated is not None:
        return create_async_engine(
            url,
            poolclass=NullPool,
            connect_args={"server_settings": {**server_settings, **dedicated}},
        )
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args={"server_settings": server_settings} if server_settings else {},
    )


def _server_settings(options: str | tuple[str, ...] | None) -> dict[str, str]:
    if options is None:
        return {}
    words = " ".join([options] if isinstance(options, str) else options).split()
    settings: dict[str, str] = {}
    for index, word in enumerate(words):
        if word.startswith("-c") and len(word) > 2:
            pair = word[2:]
        elif word == "-c" and index + 1 < len(words):
            pair = words[index + 1]
        else:
            continue
        key, _, value = pair.partition("=")
        settings[key] = value
    return settings


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take over transaction control from the driver so BEGIN can be IMMEDIATE: a read that
        # later writes then waits for the writer lock instead of failing with "database is locked".
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    command.upgrade(_alembic_config(connection), "head")


def _revisions(connection: Connection) -> tuple[str | None, str | None]:
    current = MigrationContext.configure(connection).get_current_revision()
    head = ScriptDirectory.from_config(_alembic_config(connection)).get_current_head()
    return current, head


async def upgrade(engine: AsyncEngine) -> None:
    """Apply every pending migration (what `supportbot db upgrade` runs)."""
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade)


async def revisions(engine: AsyncEngine) -> tuple[str | None, str | None]:
    """The database's migration revision and the newest this code knows."""
    async with engine.connect() as connection:
        return await connection.run_sync(_revisions)


@asynccontextmanager
async def open_engine(raw_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(raw_url)
    try:
        yield engine
    finally:
        await asyncio.shield(engine.dispose())
