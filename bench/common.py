"""Shared helpers for the core benchmarks (`bench/queue.py`, `bench/intake.py`).

* `arguments`: the common command line, `--db sqlite|postgresql|both` and `--postgres-url`.
* `database`: a fresh, migrated database of one kind, removed afterwards. SQLite is a file in a
  temporary directory; PostgreSQL is a private schema (`bench_<random>`) in the given server,
  reached through the libpq-style `options=-csearch_path=…` that `supportbot.db.create_engine`
  understands, and dropped with CASCADE at the end, also when the benchmark fails.
* `Stats` and `percentile`: latency summaries in milliseconds.
* `machine`: what the figures were measured on.
* `table`: a plain-text table for the terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import secrets
import signal
import sqlite3
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from sqlalchemy import Row, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from supportbot import db
from supportbot.schema import metadata
from tickets.tables import Agent, Customer

KINDS = ("sqlite", "postgresql")
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def launch(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run `main()`; Ctrl-C or SIGTERM cancel it, so the `database` context managers still
    remove what they made (asyncio.run already turns Ctrl-C into a cancellation)."""

    async def guarded() -> int:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await main()

    try:
        return asyncio.run(guarded())
    except (asyncio.CancelledError, KeyboardInterrupt):
        print("interrupted; the benchmark databases were removed", file=sys.stderr)
        return 130


_R = TypeVar("_R")


def each_database(
    description: str,
    run: Callable[[str, str], Coroutine[Any, Any, _R]],
    report: Callable[[list[_R]], None],
) -> int:
    """A benchmark's run: the machine, then `run` on each database asked for, then `report`."""

    async def main() -> int:
        args = arguments(description)
        for label, value in await machine(args.kinds, args.postgres_url):
            print(f"{label}: {value}")
        results = []
        for kind in args.kinds:
            print(f"running on {kind} …", flush=True)
            results.append(await run(kind, args.postgres_url))
        report(results)
        return 0

    return launch(main)


def arguments(description: str) -> argparse.Namespace:
    """Parse `--db` and `--postgres-url`; `args.kinds` is the list of databases to run on."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--db",
        choices=[*KINDS, "both"],
        default="both",
        help="which database to measure (default: both)",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("TEST_DATABASE_URL") or DEFAULT_POSTGRES_URL,
        help="PostgreSQL server to use; a private schema is created and dropped "
        "(default: $TEST_DATABASE_URL or %(default)s)",
    )
    args = parser.parse_args()
    args.kinds = list(KINDS) if args.db == "both" else [args.db]
    return args


@dataclass
class Database:
    """A migrated, empty database of one kind."""

    kind: str
    url: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    schema: str | None = None


def with_schema(url: str, schema: str) -> str:
    """`url` with the libpq-style search_path option `supportbot.db.create_engine` reads."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options={quote(f'-csearch_path={schema}', safe='-')}"


async def _admin(url: str, statement: str) -> None:
    engine = db.create_engine(url, pool_size=1)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@asynccontextmanager
async def database(kind: str, postgres_url: str) -> AsyncIterator[Database]:
    """A fresh database migrated with `supportbot.db.upgrade`, removed on the way out."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="supportbot-bench-") as directory:
            url = f"sqlite:///{Path(directory) / 'bench.db'}"
            engine = db.create_engine(url)
            try:
                await db.upgrade(engine)
                yield Database(kind, url, engine, db.session_factory(engine))
            finally:
                await engine.dispose()
        return
    if kind != "postgresql":
        raise ValueError(f"unknown database kind {kind!r}")
    schema = f"bench_{secrets.token_hex(6)}"
    await _admin(postgres_url, f'CREATE SCHEMA "{schema}"')
    try:
        url = with_schema(postgres_url, schema)
        engine = db.create_engine(url)
        try:
            await db.upgrade(engine)
            yield Database(kind, url, engine, db.session_factory(engine), schema)
        finally:
            await engine.dispose()
    finally:
        await _admin(postgres_url, f'DROP SCHEMA "{schema}" CASCADE')


async def seed_people(
    session: AsyncSession,
    at: datetime,
    rng: random.Random,
    *,
    customers: int,
    agents: int,
    pro_share: float,
) -> tuple[list[Row[int, str]], list[int]]:
    """Bulk-insert Telegram customers (a `pro_share` of them Pro) and agents, all a year old at
    `at`; returns the customers' (id, plan) and the agents' ids."""
    await session.execute(
        insert(Customer),
        [
            {
                "telegram_id": 10_000_000 + n,
                "name": f"Customer {n}",
                "plan": "pro" if rng.random() < pro_share else "basic",
                "created_at": at - timedelta(days=365),
            }
            for n in range(customers)
        ],
    )
    await session.execute(
        insert(Agent),
        [
            {
                "telegram_id": 500 + n,
                "name": f"Agent {n}",
                "role": "agent",
                "added_at": at - timedelta(days=365),
            }
            for n in range(agents)
        ],
    )
    found = list((await session.execute(select(Customer.id, Customer.plan))).all())
    return found, list((await session.scalars(select(Agent.id))).all())


async def analyze(database: Database) -> None:
    """Refresh the planner's statistics (ANALYZE on either database)."""
    statement = "ANALYZE"
    if database.kind == "postgresql":  # only this schema's tables, not the whole server's
        statement += " " + ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    async with database.engine.connect() as connection:
        await connection.execute(text(statement))
        await connection.commit()


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile, interpolating linearly between the two nearest ranks."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Stats:
    """A latency summary in milliseconds."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Stats:
        ms = [s * 1000 for s in seconds]
        return cls(
            count=len(ms),
            p50=percentile(ms, 50),
            p90=percentile(ms, 90),
            p99=percentile(ms, 99),
            max=max(ms),
        )


def _machine_ticks() -> tuple[int, int] | None:
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat (Linux only)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    ticks = [int(f) for f in fields[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return sum(ticks) - idle, sum(ticks)


@dataclass(frozen=True)
class CpuUse:
    """CPU used while a benchmark ran: this process's CPU seconds (all its threads, so
    aiosqlite's SQLite work is included; a PostgreSQL server's is not) and how busy the whole
    machine was, as a share of all its CPUs."""

    process_seconds: float
    machine_busy: float | None


class CpuMeter:
    """Measures `CpuUse` between `start()` and `stop()`."""

    def start(self) -> None:
        self._process = time.process_time()
        self._ticks = _machine_ticks()

    def stop(self) -> CpuUse:
        process = time.process_time() - self._process
        ticks = _machine_ticks()
        busy = None
        if ticks is not None and self._ticks is not None and ticks[1] > self._ticks[1]:
            busy = (ticks[0] - self._ticks[0]) / (ticks[1] - self._ticks[1])
        return CpuUse(process, busy)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                kib = int(line.split()[1])
                return f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return "unknown"


async def postgres_version(postgres_url: str) -> str:
    engine = db.create_engine(postgres_url, pool_size=1)
    try:
        async with engine.connect() as connection:
            return str(await connection.scalar(text("SHOW server_version")))
    finally:
        await engine.dispose()


async def machine(kinds: Sequence[str], postgres_url: str) -> list[tuple[str, str]]:
    """(label, value) lines describing the machine and the software measured."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines = [
        ("date", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("CPUs (nproc)", str(cpus)),
        ("CPU model", cpu_model()),
        ("memory", memory()),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("SQLite", sqlite3.sqlite_version),
    ]
    if "postgresql" in kinds:
        lines.append(("PostgreSQL server", await postgres_version(postgres_url)))
    return lines


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(width) if index == 0 else cell.rjust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"
