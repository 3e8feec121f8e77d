"""Leadership between replicas, in one process: advisory locks on PostgreSQL, Solo on SQLite.

A job run through `while_leading` runs on one replica at a time, moves when the leader's lock
connection dies (the server ends it, as when a process is SIGKILLed) and when the leader stops,
and never runs on a replica that lost its connection.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import text

from supportbot import db
from supportbot.leader_locks import KEEPALIVES, LEADER_LOCK
from supportbot.leadership import (
    FOLLOWER,
    JOBS,
    LEADER,
    TELEGRAM,
    AdvisoryLeadership,
    Solo,
    while_leading,
)
from tests.conftest import Database, postgres_only


class Job:
    """Counts its runs, and how many run at the same moment across replicas."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.runs: list[str] = []

    def on(self, name: str):  # type: ignore[no-untyped-def]
        async def job(stop: asyncio.Event) -> None:
            self.running += 1
            self.most = max(self.most, self.running)
            self.runs.append(name)
            try:
                await stop.wait()
            finally:
                self.running -= 1

        return job


async def until(check, within: float = 10.0) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within, "not within time"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


@postgres_only
async def test_one_leader_runs_the_job_and_a_dead_connection_hands_it_over(
    database: Database,
) -> None:
    engines = [db.create_engine(database.url, dedicated=KEEPALIVES) for _ in range(2)]
    replicas = [AdvisoryLeadership(e, [JOBS, TELEGRAM], retry=0.2) for e in engines]
    stops = [asyncio.Event(), asyncio.Event()]
    job = Job()
    tasks = [asyncio.create_task(r.run(s)) for r, s in zip(replicas, stops, strict=True)]
    tasks += [
        asyncio.create_task(while_leading(r, JOBS, job.on(f"r{i}"), s))
        for i, (r, s) in enumerate(zip(replicas, stops, strict=True))
    ]
    try:
        await until(lambda: job.runs)
        first = int(job.runs[0][1])
        other = 1 - first
        assert replicas[first].roles() == {JOBS: LEADER, TELEGRAM: LEADER}
        assert replicas[other].roles() == {JOBS: FOLLOWER, TELEGRAM: FOLLOWER}
        await asyncio.sleep(0.6)  # the follower tried three times meanwhile
        assert job.runs == [f"r{first}"]
        # The server ends the leader's lock connection, as when its process is killed.
        async with database.engine.connect() as connection:
            ended = await connection.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory'"
                    " AND classid = :lock AND granted"
                    " AND objid::bigint = (hashtext(current_schema() || '/jobs')::bigint"
                    " & 4294967295))"
                ),
                {"lock": LEADER_LOCK},
            )
        assert ended == 1
        await until(lambda: job.runs[-1] == f"r{other}")
        assert replicas[other].is_leader(JOBS)
        assert job.most == 1, "the job never ran on two replicas at once"
        # Stopping the leader gives its roles up at once: the other replica leads again.
        before = len(job.runs)
        stops[other].set()
        took = await until(lambda: len(job.runs) > before)
        assert job.runs[-1] == f"r{first}" and took < 2.0
        assert not replicas[other].is_leader(JOBS)
    finally:
        for stop in stops:
            stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for engine in engines:
            await engine.dispose()
    assert job.most == 1


@postgres_only
async def test_an_unreachable_database_leaves_no_leader(database: Database) -> None:
    engine = db.create_engine("postgresql://postgres@127.0.0.1:1/nowhere", dedicated=KEEPALIVES)
    leadership = AdvisoryLeadership(engine, [JOBS], retry=0.1)
    stop = asyncio.Event()
    task = asyncio.create_task(leadership.run(stop))
    await asyncio.sleep(0.5)
    assert leadership.roles() == {JOBS: FOLLOWER}
    stop.set()
    await asyncio.wait_for(task, 5)
    await engine.dispose()


@pytest.mark.parametrize("database_kind", ["sqlite"])
async def test_solo_leads_everything_until_stopped(database: Database) -> None:
    solo = Solo([JOBS, TELEGRAM])
    stop = asyncio.Event()
    job = Job()
    runner = asyncio.create_task(while_leading(solo, JOBS, job.on("solo"), stop))
    await until(lambda: job.runs)
    assert solo.roles() == {JOBS: LEADER, TELEGRAM: LEADER}
    stop.set()
    await asyncio.wait_for(runner, 5)
    assert job.runs == ["solo"] and job.running == 0
