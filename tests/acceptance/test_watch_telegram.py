"""The SLA watch in the running service, as agents see it in their Telegram group."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from tests.conftest import Database
from tests.telegram_harness import running_desk
from tickets.policy import SlaPolicy
from tickets.ports import utcnow
from tickets.sla import BusinessCalendar
from tickets.tables import Ticket

FAST_WATCH = {"SLA_WATCH_INTERVAL_SECONDS": "1", "SLA_ESCALATE_AFTER_HOURS": "2"}


async def _has_waited(database: Database, number: int, days: int) -> None:
    """Move a ticket's wait into the past, as if the customer wrote `days` days ago."""
    since = utcnow() - timedelta(days=days)
    due = SlaPolicy(calendar=BusinessCalendar()).due_at(since)
    async with database.sessions.begin() as session:
        await session.execute(
            update(Ticket).where(Ticket.id == number).values(waiting_since=since, due_at=due)
        )


async def test_breach_is_told_in_the_tickets_topic_and_its_title_says_so(
    database: Database,
) -> None:
    async with running_desk(database, extra=FAST_WATCH) as desk:
        _, ticket = await desk.customer_opens("Ann", "My API key was revoked")
        thread = await desk.topic_of(ticket.id)
        await _has_waited(database, ticket.id, days=5)

        breach = await desk.wait_group(f"#{ticket.id} · BASIC BREACHED the 24-hour SLA")
        assert breach.thread_id == thread, "the warning goes where agents work the ticket"
        escalation = await desk.wait_group(f"#{ticket.id} · BASIC has waited")
        assert "nobody has claimed it" in (escalation.text or "")
        mentioned = {
            entity.get("user", {}).get("id") or entity.get("url")
            for entity in escalation.entities
            if entity["type"] in ("text_mention", "text_link")
        }
        assert mentioned == {f"tg://user?id={desk.admin.id}"}, escalation.entities

        def retitled() -> bool:
            [topic] = [t for t in desk.server.topics(desk.group) if t.thread_id == thread]
            return "BREACHED" in topic.name

        await desk.server.wait_for(retitled, 10)
        texts = desk.group_texts()
        assert sum("BREACHED the 24-hour SLA" in t for t in texts) == 1, (
            "told once, not every sweep"
        )


async def test_without_topics_the_card_turns_red_and_a_stale_claimer_is_mentioned(
    database: Database,
) -> None:
    extra = {**FAST_WATCH, "SLA_STALE_CLAIM_HOURS": "1"}
    async with running_desk(database, forum=False, extra=extra) as desk:
        _, ticket = await desk.customer_opens("Bo", "Where is my top-up?")
        card = await desk.card_of(ticket.id)
        await desk.server.user_sends(desk.agent, chat=desk.group, text=f"/take {ticket.id}")
        await desk.wait_group(f"#{ticket.id} claimed.")
        await _has_waited(database, ticket.id, days=5)
        async with database.sessions.begin() as session:
            await session.execute(
                update(Ticket)
                .where(Ticket.id == ticket.id)
                .values(claimed_at=utcnow() - timedelta(days=4))
            )

        released = await desk.wait_group(f"#{ticket.id} is back in the queue")
        assert "Sam claimed it but has not replied" in (released.text or "")
        links = [e.get("url") for e in released.entities if e["type"] == "text_link"]
        assert links == [f"tg://user?id={desk.agent.id}"]
        assert released.reply_to == card.message_id, "said under the ticket's card"

        def reddened() -> bool:
            edits = [e for e in desk.server.edits_in(desk.group) if e.message_id == card.message_id]
            return any((e.text or "").startswith(f"🔴 #{ticket.id}") for e in edits)

        await desk.server.wait_for(reddened, 10)
