"""Answered waits written straight into the database, for report tests of a past month."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from tests.conftest import Database
from tickets.tables import Agent, Customer, Message, Response, Ticket

OCTOBER = datetime(2026, 10, 1, tzinfo=UTC)

# (plan, channel, agent name, business hours); answered on successive October days at 12:00.
# Sorted: 1 2 4 5 8 30 → p50 rank 3 = 4, p90 rank ceil(5.4) = 6 = 30; within 6 h 4 of 6,
# within 24 h 5 of 6. Pro: 2 30. Basic: 1 4 5 8.
OCTOBER_RESPONSES: Sequence[tuple[str, str, str, float]] = (
    ("pro", "telegram", "Report Sam", 2.0),
    ("basic", "telegram", "Report Sam", 1.0),
    ("basic", "email", "Report Ada", 4.0),
    ("pro", "email", "Report Ada", 30.0),
    ("basic", "telegram", "Report Ada", 5.0),
    ("basic", "email", "Report Sam", 8.0),
)


async def seed_october(database: Database) -> list[int]:
    """Write OCTOBER_RESPONSES (tickets, answers, responses); return the ticket numbers."""
    numbers: list[int] = []
    async with database.sessions.begin() as session:
        agents: dict[str, Agent] = {}
        for index, name in enumerate(("Report Sam", "Report Ada")):
            agents[name] = Agent(
                telegram_id=7_000_000 + index, name=name, role="agent", added_at=OCTOBER
            )
            session.add(agents[name])
        customer = Customer(name="Olga", plan="basic", created_at=OCTOBER)
        session.add(customer)
        await session.flush()
        for day, (plan, channel, agent, hours) in enumerate(OCTOBER_RESPONSES, start=1):
            answered = OCTOBER + timedelta(days=day, hours=12)
            since = answered - timedelta(hours=hours)  # the stored hours are what counts
            ticket = Ticket(
                customer_id=customer.id,
                channel=channel,
                status="open",
                plan=plan,
                opened_at=since,
                updated_at=answered,
            )
            session.add(ticket)
            await session.flush()
            reply = Message(
                ticket_id=ticket.id,
                direction="out",
                channel=channel,
                author_agent_id=agents[agent].id,
                text="answer",
                created_at=answered,
            )
            session.add(reply)
            await session.flush()
            session.add(
                Response(
                    ticket_id=ticket.id,
                    message_id=reply.id,
                    agent_id=agents[agent].id,
                    plan=plan,
                    channel=channel,
                    waiting_since=since,
                    answered_at=answered,
                    business_hours=hours,
                )
            )
            numbers.append(ticket.id)
    return numbers
