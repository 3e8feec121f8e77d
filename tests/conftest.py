"""Shared fixtures: every database test runs on SQLite and on PostgreSQL.

PostgreSQL comes from TEST_DATABASE_URL (the Makefile points it at 127.0.0.1:5432/test). Without
it, or when the server is down, the PostgreSQL half is skipped on a developer's machine; under
CI=true it fails instead, so a green CI always means both databases ran.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from supportbot import db
from supportbot.schema import metadata
from tickets.desk import Desk
from tickets.policy import SlaPolicy
from tickets.rendering import Templates
from tickets.sla import BusinessCalendar

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


class Clock:
    """A clock tests move by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def postgres_url() -> str | None:
    return os.environ.get("TEST_DATABASE_URL") or None


def _need_postgres(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"PostgreSQL is required under CI=true: {reason}")
    pytest.skip(reason)


@dataclass
class Database:
    """A migrated, empty database of one kind, for one test."""

    kind: str
    url: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file; each test gets a copy (migrating once is the slow part)."""
    path = tmp_path_factory.mktemp("sqlite") / "template.db"

    async def migrate() -> None:
        async with db.open_engine(f"sqlite:///{path}") as engine:
            await db.upgrade(engine)

    asyncio.run(migrate())
    return path


@pytest.fixture(scope="session")
def postgres_schema() -> Iterator[str]:
    """A private, migrated schema in the test server for this test session."""
    url = postgres_url()
    if url is None:
        _need_postgres("TEST_DATABASE_URL is not set")
        raise AssertionError  # unreachable: _need_postgres raises
    schema = f"supportbot_test_{uuid.uuid4().hex[:10]}"

    async def setup() -> None:
        engine = db.create_engine(url)
        try:
            async with engine.begin() as connection:
                await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        finally:
            await engine.dispose()
        async with db.open_engine(_with_schema(url, schema)) as engine:
            await db.upgrade(engine)

    try:
        asyncio.run(setup())
    except (OSError, ConnectionError) as error:
        _need_postgres(f"cannot reach PostgreSQL at TEST_DATABASE_URL: {error}")
    yield schema

    async def teardown() -> None:
        engine = db.create_engine(url)
        try:
            async with engine.begin() as connection:
                await connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        finally:
            await engine.dispose()

    asyncio.run(teardown())


def _with_schema(url: str, schema: str) -> str:
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{schema}"


# For the few tests of what only PostgreSQL has (row locks that wait, a server connection to
# drop): they run on PostgreSQL alone instead of skipping on SQLite.
postgres_only = pytest.mark.parametrize(
    "database_kind", [pytest.param("postgresql", marks=pytest.mark.postgres)]
)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(database_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty, migrated database of the parametrised kind."""
    if database_kind == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "supportbot.db"
        shutil.copyfile(template, path)
        return f"sqlite:///{path}"
    schema: str = request.getfixturevalue("postgres_schema")
    url = postgres_url()
    assert url is not None
    return _with_schema(url, schema)


@pytest.fixture
async def database(database_kind: str, database_url: str) -> AsyncIterator[Database]:
    engine = db.create_engine(database_url)
    if database_kind == "postgresql":
        tables = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
        async with engine.begin() as connection:
            await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    try:
        yield Database(database_kind, database_url, engine, db.session_factory(engine))
    finally:
        await engine.dispose()


# Tuesday, 09:00 UTC: a business day with room on both sides.
START = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def policy() -> SlaPolicy:
    return SlaPolicy(calendar=BusinessCalendar())


@pytest.fixture
def desk(database: Database, policy: SlaPolicy, clock: Clock) -> Desk:
    return Desk(database.sessions, policy, Templates(), clock=clock)
