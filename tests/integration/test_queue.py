"""The queue's order, computed by the database, against the policy's reference order."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest

from tests.conftest import START, Clock, Database
from tests.helpers import telegram
from tickets import queue
from tickets.desk import Desk
from tickets.model import Plan, Urgency
from tickets.policy import SlaPolicy, queue_key
from tickets.tables import Customer, Ticket


async def seed(database: Database, specs: list[tuple[Plan, datetime | None, str]]) -> list[int]:
    """Insert tickets directly: (plan, due_at or None when not waiting, status)."""
    async with database.sessions.begin() as session:
        customer = Customer(name="c", plan="basic", created_at=START)
        session.add(customer)
        await session.flush()
        made = []
        for plan, due, status in specs:
            ticket = Ticket(
                customer_id=customer.id,
                channel="telegram",
                subject="",
                status=status,
                plan=plan.value,
                waiting_since=due - timedelta(hours=24) if due else None,
                due_at=due,
                opened_at=START,
                updated_at=START,
            )
            session.add(ticket)
            made.append(ticket)
        await session.flush()
        return [t.id for t in made]


def h(hours: float) -> datetime:
    return START + timedelta(hours=hours)


async def test_urgent_first_then_pro_then_the_rest(database: Database, policy: SlaPolicy) -> None:
    # START is Tuesday 09:00, so the next 4 business hours end at 13:00 the same day.
    basic_far, pro_far, basic_risk, pro_mid, breached, not_waiting, closed = await seed(
        database,
        [
            (Plan.BASIC, h(20), "open"),
            (Plan.PRO, h(30), "open"),
            (Plan.BASIC, h(3), "open"),
            (Plan.PRO, h(10), "open"),
            (Plan.BASIC, h(-1), "open"),
            (Plan.PRO, None, "open"),
            (Plan.PRO, None, "closed"),
        ],
    )
    async with database.sessions() as session:
        entries = await queue.top(session, policy, START, 20)
    assert [e.ticket for e in entries] == [breached, basic_risk, pro_mid, pro_far, basic_far]
    assert [e.urgency for e in entries[:3]] == [Urgency.BREACHED, Urgency.AT_RISK, Urgency.ON_TRACK]
    assert entries[1].hours_left == pytest.approx(3)
    assert not_waiting not in [e.ticket for e in entries] and closed not in [
        e.ticket for e in entries
    ]


async def test_risk_window_boundary_is_exact(database: Database, policy: SlaPolicy) -> None:
    at_edge, just_outside, pro = await seed(
        database,
        [
            (Plan.BASIC, h(4), "open"),
            (Plan.BASIC, h(4) + timedelta(seconds=1), "open"),
            (Plan.PRO, h(50), "open"),
        ],
    )
    async with database.sessions() as session:
        entries = await queue.top(session, policy, START, 3)
    assert [e.ticket for e in entries] == [at_edge, pro, just_outside]


async def test_pro_priority_never_pushes_basic_into_a_breach(
    database: Database, policy: SlaPolicy
) -> None:
    # A steady stream of Pro work and one Basic ticket. Agents answer the top of the queue every
    # 30 minutes; pure "Pro first" would leave the Basic ticket until all 30 Pro tickets were done
    # (15 hours, far past its due time). The risk band brings it up in time.
    pro = await seed(database, [(Plan.PRO, h(20 + i), "open") for i in range(30)])
    [basic] = await seed(database, [(Plan.BASIC, h(8), "open")])
    answered_at = None
    now = START
    for _ in range(40):
        async with database.sessions.begin() as session:
            [first] = await queue.top(session, policy, now, 1)
            if first.ticket == basic:
                answered_at = now
                break
            assert first.ticket in pro
            answered = await session.get(Ticket, first.ticket)
            assert answered is not None
            answered.due_at = answered.waiting_since = None
        now += timedelta(minutes=30)
    assert answered_at is not None and answered_at < h(8), "Basic answered before its due time"


@pytest.mark.parametrize("seed_value", [1, 2, 3])
async def test_database_order_matches_the_policy_reference(
    database: Database, policy: SlaPolicy, seed_value: int
) -> None:
    rng = random.Random(seed_value)
    specs = [
        (
            Plan.PRO if rng.random() < 0.2 else Plan.BASIC,
            h(rng.uniform(-30, 300)) if rng.random() < 0.9 else None,
            "open",
        )
        for _ in range(300)
    ]
    ids = await seed(database, specs)
    now = h(rng.uniform(0, 100))
    expected = sorted(
        (queue_key(policy, plan, due, number, now), number)
        for number, (plan, due, _status) in zip(ids, specs, strict=True)
        if due is not None
    )
    async with database.sessions() as session:
        entries = await queue.top(session, policy, now, 40)
    assert [e.ticket for e in entries] == [number for _key, number in expected[:40]]


async def test_plan_change_moves_open_tickets_to_the_pro_tier(
    desk: Desk, database: Database, clock: Clock, policy: SlaPolicy
) -> None:
    basic = (await desk.receive(telegram(1, "early"))).ticket
    clock.advance(minutes=10)
    upgraded = await desk.receive(telegram(2, "later"))
    async with database.sessions() as session:
        customer_id = (await session.get(Ticket, upgraded.ticket)).customer_id  # type: ignore[union-attr]
    await desk.set_plan(customer_id, Plan.PRO)
    async with database.sessions() as session:
        entries = await queue.top(session, policy, clock.now, 5)
    assert [(e.ticket, e.plan) for e in entries] == [
        (upgraded.ticket, Plan.PRO),
        (basic, Plan.BASIC),
    ]


async def test_stats_count_waiting_at_risk_and_breached(
    database: Database, policy: SlaPolicy
) -> None:
    await seed(
        database,
        [
            (Plan.BASIC, h(-2), "open"),
            (Plan.PRO, h(2), "open"),
            (Plan.BASIC, h(3), "open"),
            (Plan.BASIC, h(30), "open"),
            (Plan.BASIC, None, "open"),
            (Plan.BASIC, None, "closed"),
        ],
    )
    async with database.sessions() as session:
        stats = await queue.stats(session, policy, START)
    assert (stats.open, stats.waiting, stats.at_risk, stats.breached) == (5, 4, 2, 1)
    assert stats.oldest_wait == h(-26)
