"""A customer's refund request goes to the top of its tier, never ahead of tickets at risk."""

from __future__ import annotations

from datetime import timedelta

from tests import helpers
from tests.conftest import START, Clock, Database
from tickets import queue
from tickets.desk import Desk
from tickets.model import Plan, Urgency
from tickets.policy import SlaPolicy
from tickets.queue import first_in_tier


async def test_request_goes_first_in_its_tier_after_tickets_at_risk(
    database: Database, desk: Desk, clock: Clock, policy: SlaPolicy
) -> None:
    clock.now = START - timedelta(hours=22)  # Monday 11:00: due Tuesday 11:00, at risk by then
    risky = await desk.receive(helpers.telegram(1, "old question", name="Risky"))
    clock.now = START - timedelta(hours=2)
    pro = await desk.receive(helpers.telegram(2, "pro question", name="Pro"))
    customer = (await helpers.ticket(database, pro.ticket)).customer_id
    await desk.set_plan(customer, Plan.PRO)
    clock.now = START - timedelta(hours=1)
    basic = await desk.receive(helpers.telegram(3, "basic question", name="Basic"))
    clock.now = START
    request = await desk.receive(helpers.telegram(4, "Refund request", name="Asks"))

    moved = await first_in_tier(database.sessions, policy, request.ticket, START)
    earlier = (await helpers.ticket(database, basic.ticket)).due_at
    assert moved is not None and earlier is not None and moved == earlier - timedelta(seconds=1)

    async with database.sessions() as session:
        order = await queue.top(session, policy, START, 10)
    assert [e.ticket for e in order] == [risky.ticket, pro.ticket, request.ticket, basic.ticket]
    assert order[0].urgency is Urgency.AT_RISK
    assert order[2].urgency is Urgency.ON_TRACK, "the request did not jump into the risk band"
    # A ticket already first in its tier keeps the due time the SLA gave it.
    before = (await helpers.ticket(database, pro.ticket)).due_at
    later = await desk.receive(helpers.telegram(5, "another", name="Later"))
    await desk.set_plan((await helpers.ticket(database, later.ticket)).customer_id, Plan.PRO)
    assert await first_in_tier(database.sessions, policy, pro.ticket, START) is None
    assert (await helpers.ticket(database, pro.ticket)).due_at == before
