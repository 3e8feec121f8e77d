"""The outbox worker against an in-memory sender: retries, leases, order, permanent failures."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict, deque
from collections.abc import Sequence
from datetime import timedelta

import pytest
from sqlalchemy import text as sql
from sqlalchemy import update

from tests import helpers
from tests.conftest import Clock, Database, postgres_only
from tests.helpers import telegram
from tickets.agents import add_agent
from tickets.desk import Desk
from tickets.model import OutboxKind, Role, Route
from tickets.outbox import (
    Deferred,
    Delivered,
    Failed,
    OutboxItem,
    Outcome,
    Report,
    RetryLater,
    RetryPolicy,
)
from tickets.outbox_worker import CLAIM_LOCK, OutboxWorker, route_lock
from tickets.payloads import enqueue
from tickets.tables import OutboxRow

AGENT = 9002


class MemorySender:
    """Records what it delivered; tests script failures per recipient."""

    def __init__(self) -> None:
        self.delivered: list[OutboxItem] = []
        self.script: dict[str, deque[Outcome | Exception]] = defaultdict(deque)
        self.calls = 0

    async def deliver(self, items: Sequence[OutboxItem], report: Report) -> None:
        self.calls += 1
        for item in items:
            await asyncio.sleep(0)
            planned = self.script[item.recipient].popleft() if self.script[item.recipient] else None
            if isinstance(planned, Exception):
                raise planned
            outcome = planned or Delivered(external_id=f"ext-{item.id}")
            if isinstance(outcome, Delivered):
                self.delivered.append(item)
            report.outcome(item, outcome)
            if not isinstance(outcome, Delivered):
                break

    def texts(self, recipient: str | None = None) -> list[str]:
        return [str(i.payload["text"]) for i in self.delivered if recipient in (None, i.recipient)]


def worker(
    database: Database, desk: Desk, clock: Clock, sender: MemorySender, **options: object
) -> OutboxWorker:
    senders = {Route.TELEGRAM: sender, Route.EMAIL: sender, Route.AGENTS: sender}
    retry = RetryPolicy(
        base_delay=10, max_delay=600, max_attempts=4, jitter=0, rng=random.Random(1)
    )
    return OutboxWorker(database.sessions, senders, desk, clock=clock, retry=retry, **options)  # type: ignore[arg-type]


async def put(database: Database, clock: Clock, recipient: str, text: str) -> int:
    async with database.sessions.begin() as session:
        row = enqueue(
            session,
            route=Route.TELEGRAM,
            recipient=recipient,
            kind=OutboxKind.RECEIPT,
            payload={"text": text},
            at=clock.now,
        )
        await session.flush()
        return row.id


async def test_delivers_pending_rows_once_and_records_them(
    desk: Desk, database: Database, clock: Clock
) -> None:
    sender = MemorySender()
    ids = [await put(database, clock, "7", f"m{i}") for i in range(5)]
    w = worker(database, desk, clock, sender)
    assert await w.run_once() == 5
    assert await w.run_once() == 0
    assert sender.texts() == [f"m{i}" for i in range(5)]
    rows = await helpers.outbox(database)
    assert [(r.id, r.status, r.external_id, r.lease_owner) for r in rows] == [
        (i, "delivered", f"ext-{i}", None) for i in ids
    ]


async def test_temporary_failure_backs_off_exponentially_then_succeeds(
    desk: Desk, database: Database, clock: Clock
) -> None:
    sender = MemorySender()
    sender.script["7"].extend([RetryLater("timeout"), RetryLater("timeout")])
    row_id = await put(database, clock, "7", "hello")
    w = worker(database, desk, clock, sender)

    await w.run_once()
    [row] = await helpers.outbox(database)
    assert (row.status, row.attempts, row.last_error) == ("pending", 1, "timeout")
    assert row.available_at == clock.now + timedelta(seconds=10)
    clock.advance(seconds=9)
    assert await w.run_once() == 0, "not before the backoff is over"
    clock.advance(seconds=1)
    await w.run_once()
    [row] = await helpers.outbox(database)
    assert row.attempts == 2 and row.available_at == clock.now + timedelta(seconds=20)
    clock.advance(seconds=20)
    await w.run_once()
    [row] = await helpers.outbox(database)
    assert (row.id, row.status, row.attempts) == (row_id, "delivered", 2)
    assert sender.texts() == ["hello"]


async def test_retry_after_hint_from_the_peer_is_obeyed(
    desk: Desk, database: Database, clock: Clock
) -> None:
    sender = MemorySender()
    sender.script["7"].append(RetryLater("429 Too Many Requests", after=37))
    await put(database, clock, "7", "hello")
    await worker(database, desk, clock, sender).run_once()
    [row] = await helpers.outbox(database)
    assert row.available_at == clock.now + timedelta(seconds=37)


async def test_rows_for_one_recipient_keep_their_order_behind_a_failure(
    desk: Desk, database: Database, clock: Clock
) -> None:
    sender = MemorySender()
    sender.script["7"].append(RetryLater("down"))
    for text in ("a1", "a2", "a3"):
        await put(database, clock, "7", text)
    await put(database, clock, "8", "b1")
    w = worker(database, desk, clock, sender)
    await w.run_once()
    assert sender.texts() == ["b1"], "the other chat is not held up"
    assert await w.run_once() == 0, "a2 and a3 wait behind a1"
    clock.advance(seconds=10)
    await w.run_once()
    assert sender.texts("7") == ["a1", "a2", "a3"]


async def test_permanent_failure_is_reported_to_agents_not_retried(
    desk: Desk, database: Database, clock: Clock
) -> None:
    async with database.sessions.begin() as session:
        await add_agent(session, AGENT, Role.AGENT, "Sam", at=clock.now, actor="test")
    ticket = (await desk.receive(telegram(1001, "help"))).ticket
    message_id = await desk.reply(ticket, AGENT, "answer")
    sender = MemorySender()
    sender.script["1001"].extend(
        [Delivered(), Failed("403 Forbidden: bot was blocked by the user")]
    )
    w = worker(database, desk, clock, sender)
    await w.run_once()  # receipt delivered, reply refused for good; agent notices go out too

    [reply] = await helpers.outbox(database, OutboxRow.kind == "reply")
    assert (reply.status, reply.attempts) == ("failed", 1)
    assert "blocked" in (reply.last_error or "")
    [message] = [m for m in await helpers.messages(database, ticket) if m.id == message_id]
    assert message.delivery == "failed"
    assert (await helpers.ticket(database, ticket)).waiting_since is not None
    await w.run_once()
    agent_texts = sender.texts("agents")
    assert any("could not be delivered" in t and "blocked" in t for t in agent_texts)
    assert any(e.action == "delivery_failed" for e in await helpers.audit(database))
    clock.advance(days=1)
    assert await w.run_once() == 0, "a failed row is never retried"


async def test_attempts_run_out_into_the_failed_state(
    desk: Desk, database: Database, clock: Clock
) -> None:
    sender = MemorySender()
    sender.script["7"].extend([RetryLater("down")] * 10)
    await put(database, clock, "7", "hello")
    w = worker(database, desk, clock, sender)
    for _ in range(6):
        await w.run_once()
        clock.advance(seconds=600)
    [row] = await helpers.outbox(database)
    assert (row.status, row.attempts) == ("failed", 4)
    assert sender.delivered == []


async def test_a_sender_that_raises_loses_nothing(
    desk: Desk, database: Database, clock: Clock
) -> None:
    sender = MemorySender()
    sender.script["7"].append(RuntimeError("bug in a sender"))
    await put(database, clock, "7", "hello")
    w = worker(database, desk, clock, sender)
    await w.run_once()
    [row] = await helpers.outbox(database)
    assert (
        row.status == "pending"
        and row.attempts == 1
        and "bug in a sender" in (row.last_error or "")
    )
    clock.advance(seconds=10)
    await w.run_once()
    assert sender.texts() == ["hello"]


async def test_rows_of_a_crashed_worker_are_picked_up_after_its_lease(
    desk: Desk, database: Database, clock: Clock
) -> None:
    await put(database, clock, "7", "hello")
    async with database.sessions.begin() as session:  # a worker claimed it, then died
        await session.execute(
            update(OutboxRow).values(
                lease_owner="dead", lease_until=clock.now + timedelta(minutes=2)
            )
        )
    sender = MemorySender()
    w = worker(database, desk, clock, sender)
    assert await w.run_once() == 0
    clock.advance(minutes=2)
    assert await w.run_once() == 1
    assert sender.texts() == ["hello"]


async def test_two_workers_deliver_every_row_exactly_once(
    desk: Desk, database: Database, clock: Clock
) -> None:
    async with database.sessions.begin() as session:
        for i in range(300):
            enqueue(
                session,
                route=Route.TELEGRAM,
                recipient=str(i % 40),
                kind=OutboxKind.RECEIPT,
                payload={"text": f"m{i}"},
                at=clock.now,
            )
    sender = MemorySender()
    workers = [worker(database, desk, clock, sender, batch_size=25) for _ in range(2)]

    async def drain(w: OutboxWorker) -> None:
        while await w.run_once():
            pass

    await asyncio.gather(*(drain(w) for w in workers))
    texts = sender.texts()
    assert sorted(texts) == sorted(f"m{i}" for i in range(300))
    for recipient in range(40):
        got = [int(t[1:]) for t in sender.texts(str(recipient))]
        assert got == sorted(got), "per-recipient order holds across workers"


async def test_reply_delivered_by_the_worker_stops_the_sla_clock(
    desk: Desk, database: Database, clock: Clock
) -> None:
    async with database.sessions.begin() as session:
        await add_agent(session, AGENT, Role.AGENT, "Sam", at=clock.now, actor="test")
    ticket = (await desk.receive(telegram(1001, "help"))).ticket
    clock.advance(hours=2)
    await desk.reply(ticket, AGENT, "here you go")
    sender = MemorySender()
    await worker(database, desk, clock, sender).run_once()
    assert sender.texts("1001")[-1] == "here you go"
    stored = await helpers.ticket(database, ticket)
    assert stored.waiting_since is None
    [response] = await helpers.responses(database)
    assert response.business_hours == pytest.approx(2.0)


async def test_run_loop_wakes_up_on_new_work_and_stops_cleanly(
    desk: Desk, database: Database, clock: Clock
) -> None:
    sender = MemorySender()
    w = worker(database, desk, clock, sender)
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop, poll=30))
    await asyncio.sleep(0.05)
    await put(database, clock, "7", "hello")
    w.wakeup()
    for _ in range(200):
        if sender.delivered:
            break
        await asyncio.sleep(0.01)
    stop.set()
    w.wakeup()
    await asyncio.wait_for(task, 5)
    assert sender.texts() == ["hello"]


async def test_deferred_rows_wait_without_using_attempts(
    desk: Desk, database: Database, clock: Clock
) -> None:
    sender = MemorySender()
    sender.script["7"].extend([Deferred(after=3), Deferred(after=3)])
    await put(database, clock, "7", "first")
    await put(database, clock, "7", "second")
    w = worker(database, desk, clock, sender)
    await w.run_once()
    first, second = await helpers.outbox(database)
    assert (first.status, first.attempts, first.last_error) == ("pending", 0, None)
    assert first.available_at == clock.now + timedelta(seconds=3)
    assert second.lease_owner is None and second.status == "pending"
    clock.advance(seconds=3)
    await w.run_once()
    clock.advance(seconds=3)
    await w.run_once()
    assert sender.texts() == ["first", "second"]
    assert [r.attempts for r in await helpers.outbox(database)] == [0, 0]


async def test_outcomes_of_one_round_are_each_recorded_as_they_happened(
    desk: Desk, database: Database, clock: Clock
) -> None:
    """Many recipients' outcomes share transactions; each row still gets exactly its own."""
    ids = {f"r{i}": await put(database, clock, f"r{i}", f"m{i}") for i in range(30)}
    sender = MemorySender()
    sender.script["r5"].append(RetryLater("busy", after=30))
    sender.script["r9"].append(Failed("no such chat"))
    sender.script["r12"].append(Deferred(after=5))
    w = worker(database, desk, clock, sender)

    assert await w.run_once() == 30

    rows = {
        row.recipient: row for row in await helpers.outbox(database, OutboxRow.kind == "receipt")
    }
    assert {r.id for r in rows.values()} == set(ids.values())
    delivered = {k for k, r in rows.items() if r.status == "delivered"}
    assert delivered == {f"r{i}" for i in range(30)} - {"r5", "r9", "r12"}
    assert all(rows[k].external_id == f"ext-{rows[k].id}" for k in delivered)
    assert all(r.lease_owner is None and r.lease_until is None for r in rows.values())
    retried = rows["r5"]
    assert (retried.status, retried.attempts, retried.last_error) == ("pending", 1, "busy")
    assert retried.available_at == clock.now + timedelta(seconds=30)
    assert (rows["r9"].status, rows["r9"].attempts) == ("failed", 1)
    assert (rows["r12"].status, rows["r12"].attempts) == ("pending", 0)
    assert rows["r12"].available_at == clock.now + timedelta(seconds=5)
    failures = [e for e in await helpers.audit(database) if e.action == "delivery_failed"]
    assert [e.details["outbox_id"] for e in failures] == [ids["r9"]]


async def test_replies_delivered_in_one_round_are_each_measured_as_if_alone(
    desk: Desk, database: Database, clock: Clock
) -> None:
    """A round's deliveries are recorded together; each answer still ends its own wait."""
    async with database.sessions.begin() as session:
        await add_agent(session, AGENT, Role.AGENT, "Sam", at=clock.now, actor="test")
    first_asked = clock.now
    ann = (await desk.receive(telegram(1001, "q1"))).ticket
    bob = (await desk.receive(telegram(1002, "help", name="Bob"))).ticket
    clock.advance(hours=1)
    await desk.reply(ann, AGENT, "a1")
    await desk.reply(bob, AGENT, "b1")
    await desk.reply(bob, AGENT, "b2, nothing was waiting for this one")
    clock.advance(minutes=5)
    second_asked = clock.now
    await desk.receive(telegram(1001, "q2, written after a1"))
    clock.advance(minutes=5)
    await desk.reply(ann, AGENT, "a2")
    clock.advance(minutes=5)
    third_asked = clock.now
    await desk.receive(telegram(1001, "q3, written after a2"))
    clock.advance(minutes=5)

    sender = MemorySender()
    assert await worker(database, desk, clock, sender).run_once() >= 4
    assert sender.texts("1001")[-2:] == ["a1", "a2"]

    responses = sorted(await helpers.responses(database), key=lambda r: r.message_id)
    assert [(r.ticket_id, r.waiting_since, r.answered_at) for r in responses] == [
        (ann, first_asked, clock.now),
        (bob, first_asked, clock.now),
        (ann, second_asked, clock.now),
    ]
    assert responses[0].business_hours == pytest.approx(80 / 60)
    assert responses[2].business_hours == pytest.approx(15 / 60)
    waiting = await helpers.ticket(database, ann)
    assert waiting.waiting_since == third_asked, "q3 came after a2 was written: a new wait"
    assert waiting.due_at == third_asked + timedelta(hours=24)
    assert (await helpers.ticket(database, bob)).waiting_since is None
    replies = await helpers.outbox(database, OutboxRow.kind == "reply")
    assert {r.status for r in replies} == {"delivered"}
    stored = [m for t in (ann, bob) for m in await helpers.messages(database, t)]
    assert {m.delivery for m in stored if m.direction == "out"} == {"delivered"}
    notices = await helpers.outbox(database, OutboxRow.kind == "agent_notice")
    told = [n.payload for n in notices if n.payload.get("event") == "delivered"]
    assert len(told) == 4, "the agents hear of every delivered reply"


class GatedSender(MemorySender):
    """Holds one recipient's rows until the test opens the gate."""

    def __init__(self, held: str) -> None:
        super().__init__()
        self.held = held
        self.gate = asyncio.Event()

    async def deliver(self, items: Sequence[OutboxItem], report: Report) -> None:
        if items[0].recipient == self.held:
            await self.gate.wait()
        await super().deliver(items, report)


async def test_the_run_loop_sends_the_next_batch_while_a_slow_one_finishes(
    desk: Desk, database: Database, clock: Clock
) -> None:
    await put(database, clock, "slow", "s1")
    for n in range(9):
        await put(database, clock, f"r{n}", f"m{n}")
    await put(database, clock, "slow", "s2")
    sender = GatedSender(held="slow")
    w = worker(database, desk, clock, sender, batch_size=5)
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop, poll=0.05))
    try:
        for _ in range(200):
            if len(sender.delivered) == 9:
                break
            await asyncio.sleep(0.01)
        # The first batch (s1, m0-m3) is held up by s1; the second (m4-m8) went out meanwhile,
        # but s2 waits behind s1.
        assert sorted(sender.texts()) == [f"m{n}" for n in range(9)]
        sender.gate.set()
        for _ in range(200):
            if len(sender.delivered) == 11:
                break
            await asyncio.sleep(0.01)
        assert sender.texts("slow") == ["s1", "s2"]
    finally:
        stop.set()
        w.wakeup()
        await asyncio.wait_for(task, 5)
    assert {r.status for r in await helpers.outbox(database)} == {"delivered"}


@postgres_only  # SQLite's single writer serialises every claim; the locks are PostgreSQL's
async def test_a_routes_claims_wait_for_each_other_but_not_for_other_routes(
    desk: Desk, database: Database, clock: Clock
) -> None:
    await put(database, clock, "7", "to a customer")
    async with database.sessions.begin() as session:
        enqueue(
            session,
            route=Route.AGENTS,
            recipient="agents",
            kind=OutboxKind.AGENT_NOTICE,
            payload={"text": "to the agents"},
            at=clock.now,
        )
    sender = MemorySender()
    customers = OutboxWorker(database.sessions, {Route.TELEGRAM: sender}, desk, clock=clock)
    agents = OutboxWorker(database.sessions, {Route.AGENTS: sender}, desk, clock=clock)
    async with database.engine.connect() as holder:
        # Another worker of the Telegram route is in the middle of its claim.
        await holder.execute(
            sql("SELECT pg_advisory_xact_lock(:key, :route)"),
            {"key": CLAIM_LOCK, "route": route_lock(Route.TELEGRAM.value)},
        )
        assert await asyncio.wait_for(agents.run_once(), 5) == 1
        waiting = asyncio.create_task(customers.run_once())
        await asyncio.sleep(0.3)
        assert not waiting.done(), "a claim of the same route waits for the one in progress"
        await holder.rollback()
        assert await asyncio.wait_for(waiting, 5) == 1
    assert sender.texts() == ["to the agents", "to a customer"]
