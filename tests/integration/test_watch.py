"""The SLA watch, as agents meet it: which warnings reach the group, once per wait."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from tests import helpers
from tests.conftest import Clock, Database
from tests.helpers import email, telegram
from tickets.agents import add_agent
from tickets.desk import Desk
from tickets.model import Role
from tickets.outbox import Delivery
from tickets.policy import SlaPolicy
from tickets.rendering import Templates
from tickets.tables import AuditEntry, OutboxRow, SlaAlert
from tickets.watch import Alert, SlaWatch, WatchRules

ADMIN = 9001
AGENT = 9002


def watch(
    database: Database,
    policy: SlaPolicy,
    clock: Clock,
    *,
    escalate_after_hours: float = 2.0,
    stale_claim_hours: float = 4.0,
) -> SlaWatch:
    rules = WatchRules(
        escalate_after_hours=escalate_after_hours, stale_claim_hours=stale_claim_hours
    )
    return SlaWatch(database.sessions, policy, Templates(), rules=rules, clock=clock)


async def add_agents(database: Database, clock: Clock) -> None:
    async with database.sessions.begin() as session:
        await add_agent(session, ADMIN, Role.ADMIN, "Ada", at=clock(), actor="test")
        await add_agent(session, AGENT, Role.AGENT, "Sam", at=clock(), actor="test")


WATCH_EVENTS = ("sla_target", "sla_risk", "sla_breach", "escalated", "claim_released")
WARNINGS = WATCH_EVENTS[:3]


async def sla_notices(
    database: Database, events: tuple[str, ...] = WATCH_EVENTS
) -> list[tuple[int | None, str, str]]:
    rows = await helpers.outbox(database, OutboxRow.kind == "agent_notice")
    return [
        (row.ticket_id, row.payload["event"], row.payload["text"])
        for row in rows
        if row.payload["event"] in events
    ]


# -- pure rules ----------------------------------------------------------------------------


# -- warnings --------------------------------------------------------------------------------


async def test_target_risk_and_breach_are_each_told_once_per_wait(
    desk: Desk, database: Database, policy: SlaPolicy, clock: Clock
) -> None:
    intake = await desk.receive(telegram(1001, "My key stopped working"))
    sla = watch(database, policy, clock)

    clock.advance(hours=5, minutes=59)
    assert (await sla.sweep()).warned == {}
    clock.advance(minutes=1)
    assert (await sla.sweep()).warned == {intake.ticket: Alert.TARGET}
    assert (await sla.sweep()).warned == {}, "the same warning is never given twice"
    clock.advance(hours=14)  # 20 business hours waited: 4 left
    assert (await sla.sweep()).warned == {intake.ticket: Alert.RISK}
    clock.advance(hours=4)
    assert (await sla.sweep()).warned == {intake.ticket: Alert.BREACH}
    clock.advance(hours=30)
    assert (await sla.sweep()).warned == {}

    notices = await sla_notices(database, WARNINGS)
    assert [event for _, event, _ in notices] == ["sla_target", "sla_risk", "sla_breach"]
    target, risk, breach = (text for _, _, text in notices)
    assert target.startswith(f"⏱ #{intake.ticket} · BASIC has waited 6.0 business hours")
    assert "Nobody has claimed it." in target
    assert "4.0 business hours left" in risk
    assert "BREACHED the 24-hour SLA" in breach
    actions = [
        e.action for e in await helpers.rows(database, AuditEntry, AuditEntry.actor == "watch")
    ]
    assert actions == ["escalate", "sla_target", "sla_risk", "sla_breach"]


async def test_after_downtime_one_message_says_the_worst(
    desk: Desk, database: Database, policy: SlaPolicy, clock: Clock
) -> None:
    intake = await desk.receive(email("bob@example.com", "Hello?"))
    clock.advance(days=2)  # Thursday 09:00: 48 business hours later
    sla = watch(database, policy, clock)
    assert (await sla.sweep()).warned == {intake.ticket: Alert.BREACH}
    assert [event for _, event, _ in await sla_notices(database, WARNINGS)] == ["sla_breach"]
    kinds = {a.kind for a in await helpers.rows(database, SlaAlert)}
    assert kinds == {"target", "risk", "breach", "escalation"}, "the milder ones count as given"


async def test_business_time_only_counts(
    desk: Desk, database: Database, policy: SlaPolicy, clock: Clock
) -> None:
    clock.now = datetime(2026, 11, 27, 20, 0, tzinfo=UTC)  # Friday 20:00
    intake = await desk.receive(telegram(1001, "Friday evening question"))
    sla = watch(database, policy, clock)
    clock.now = datetime(2026, 11, 30, 1, 59, tzinfo=UTC)  # Monday 01:59: 5h59 of business time
    assert (await sla.sweep()).warned == {}
    clock.now = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)
    assert (await sla.sweep()).warned == {intake.ticket: Alert.TARGET}


async def test_a_new_wait_earns_new_warnings_and_an_answered_one_none(
    desk: Desk, database: Database, policy: SlaPolicy, clock: Clock
) -> None:
    await add_agents(database, clock)
    intake = await desk.receive(telegram(1001, "first"))
    sla = watch(database, policy, clock, stale_claim_hours=100)
    clock.advance(hours=6)
    await sla.sweep()
    await desk.reply(intake.ticket, AGENT, "answer")
    [reply] = await helpers.outbox(database, OutboxRow.kind == "reply")
    async with database.sessions.begin() as session:
        stored = await session.get(OutboxRow, reply.id)
        assert stored is not None
        await desk.delivered(session, [Delivery(stored, clock.now, "1")])
    clock.advance(hours=30)
    assert (await sla.sweep()).warned == {}, "an answered ticket is not waiting"

    await desk.receive(telegram(1001, "second question"))
    clock.advance(hours=6)
    assert (await sla.sweep()).warned == {intake.ticket: Alert.TARGET}
    events = [event for _, event, _ in await sla_notices(database, WARNINGS)]
    assert events == ["sla_target", "sla_target"]


async def test_closed_tickets_and_banned_customers_are_not_watched(
    desk: Desk, database: Database, policy: SlaPolicy, clock: Clock
) -> None:
    await add_agents(database, clock)
    closed = await desk.receive(telegram(1001, "never mind"))
    banned = await desk.receive(telegram(1002, "spam"))
    await desk.close(closed.ticket, AGENT)
    await desk.ban(banned.ticket, ADMIN)
    clock.advance(days=3)
    assert not (await watch(database, policy, clock).sweep()).changed
    assert await sla_notices(database) == []


async def test_two_watches_sweeping_at_once_warn_once(
    desk: Desk, database: Database, policy: SlaPolicy, clock: Clock
) -> None:
    for user in range(1001, 1011):
        await desk.receive(telegram(user, "hi"))
    clock.advance(hours=7)
    first, second = watch(database, policy, clock), watch(database, policy, clock)
    reports = await asyncio.gather(first.sweep(), second.sweep())
    warned = [number for report in reports for number in report.warned]
    assert sorted(warned) == list(range(1, 11))
    assert len(await sla_notices(database)) == 10 + 10  # ten targets, ten escalations


# -- escalation --------------------------------------------------------------------------


async def test_unclaimed_ticket_is_escalated_to_the_admins_once(
    desk: Desk, database: Database, policy: SlaPolicy, clock: Clock
) -> None:
    await add_agents(database, clock)
    unclaimed = await desk.receive(telegram(1001, "help"))
    claimed = await desk.receive(telegram(1002, "help too"))
    await desk.claim(claimed.ticket, AGENT)
    sla = watch(database, policy, clock, escalate_after_hours=2, stale_claim_hours=100)
    clock.advance(hours=1, minutes=59)
    assert (await sla.sweep()).escalated == []
    clock.advance(minutes=1)
    assert (await sla.sweep()).escalated == [unclaimed.ticket]
    clock.advance(hours=1)
    assert (await sla.sweep()).escalated == []

    [(number, event, text)] = await sla_notices(database)
    assert (number, event) == (unclaimed.ticket, "escalated")
    assert "nobody has claimed it" in text and "Admins: Ada." in text
    escalations = [
        row.payload
        for row in await helpers.outbox(database, OutboxRow.kind == "agent_notice")
        if row.payload["event"] == "escalated"
    ]
    assert escalations[0]["mentions"] == [[ADMIN, "Ada"]], "the group message mentions the admin"


# -- stale claims --------------------------------------------------------------------------


async def test_a_claim_with_no_reply_goes_back_to_the_queue_and_the_claimer_is_told(
    desk: Desk, database: Database, policy: SlaPolicy, clock: Clock
) -> None:
    await add_agents(database, clock)
    intake = await desk.receive(telegram(1001, "help"))
    clock.advance(hours=1)
    await desk.claim(intake.ticket, AGENT)
    sla = watch(database, policy, clock, escalate_after_hours=100, stale_claim_hours=3)
    clock.advance(hours=2, minutes=59)  # the wait is 3h59 old, the claim 2h59
    assert (await sla.sweep()).released == []
    clock.advance(minutes=1)
    assert (await sla.sweep()).released == [intake.ticket]

    ticket = await helpers.ticket(database, intake.ticket)
    assert ticket.assignee_id is None and ticket.claimed_at is None
    [released] = [n for n in await sla_notices(database) if n[1] == "claim_released"]
    assert "Sam claimed it but has not replied for 3.0 business hours" in released[2]
    [entry] = await helpers.rows(database, AuditEntry, AuditEntry.action == "release")
    assert entry.actor == "watch" and entry.details["reason"] == "stale claim"
    # The agent can claim it again, and the new claim has its own clock.
    await desk.claim(intake.ticket, AGENT)
    clock.advance(hours=2)
    assert (await sla.sweep()).released == []
