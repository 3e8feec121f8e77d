"""End to end: a careless or hostile press cannot spend the agents' group, nor act elsewhere.

The real service runs against the local Telegram server; the assertions are what the group and
the customers received, what the callback queries were answered, and what the database holds.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from accounts.tables import Payout, Refund
from bot.store import AgentPost
from sandbox.telegram import SentMessage, SimUser
from tests import helpers
from tests.acceptance.test_refunds_telegram import account_for, press
from tests.conftest import Database
from tests.mailservers import eventually
from tests.telegram_harness import Desk, running_desk
from tickets.agents import add_agent
from tickets.model import Role
from tickets.ports import utcnow
from tickets.tables import AuditEntry

HOLD = 12.0  # seconds a request is held at the server (the bot's read timeout is 15)


async def answers(desk: Desk, queries: list[str]) -> list[str]:
    """The answers to these callback queries, once every one is answered."""

    def answered() -> list[str] | None:
        found = [desk.server.callback_answer(q) for q in queries]
        return [a.text or "" for a in found if a is not None] if all(found) else None

    texts = await desk.server.wait_for(answered, 30)
    assert texts is not None
    return texts


async def press_many(
    desk: Desk, who: SimUser, message: SentMessage, data: str, times: int
) -> list[str]:
    """Press a button `times` times without waiting in between; the answers, in order."""
    return await answers(
        desk, [await desk.server.press_button(who, message, data) for _ in range(times)]
    )


async def posted(desk: Desk, needle: str) -> SentMessage:
    """A message the bot posted in the group, once it is recorded as its ticket's (the bot
    records a post right after Telegram accepted it; a press in between is refused)."""
    message = await desk.wait_group(needle)

    async def recorded() -> bool:
        async with desk.database.sessions() as session:
            found = await session.scalar(
                select(AgentPost.id).where(AgentPost.message_id == message.message_id)
            )
        return found is not None

    await eventually(recorded)
    return message


async def audited(database: Database, action: str) -> list[AuditEntry]:
    return [e for e in await helpers.rows(database, AuditEntry) if e.action == action]


async def test_repeated_presses_are_answered_on_the_button_and_post_once(
    database: Database,
) -> None:
    async with running_desk(database) as desk:
        zoe, other = await desk.customer_opens("Zoe", "a question")
        zoe_topic = await desk.topic_of(other.id)
        ann, ticket = await desk.customer_opens("Ann", "Please refund my balance")
        await account_for(desk, ann.id, "ann@example.org")
        card = await desk.card_of(ticket.id)
        _claim, _close, balance, refund = card.callback_data()

        said = await press_many(desk, desk.agent, card, refund, 5)
        assert said[0] == f"Refund panel of #{ticket.id}"
        assert all("posted less than a minute ago" in a for a in said[1:])
        panel = await desk.wait_group(f"💸 Refund for #{ticket.id}")
        [confirm] = panel.callback_data()

        # Twenty presses of Confirm while an admin answers another customer.
        queries = [await desk.server.press_button(desk.agent, panel, confirm) for _ in range(10)]
        await desk.server.user_sends(desk.admin, chat=desk.group, thread_id=zoe_topic, text="Yes!")
        queries += [await desk.server.press_button(desk.agent, panel, confirm) for _ in range(10)]
        await desk.wait_customer(zoe, "Yes!")
        texts = await answers(desk, queries)
        assert sum("was already done" in t for t in texts) == 19
        assert sum(" done:" in t and "already" not in t for t in texts) == 1

        said = await press_many(desk, desk.agent, card, balance, 5)
        assert all("posted less than a minute ago" in a for a in said[1:])
        await desk.wait_group("💰 ann@example.org")

        group = desk.group_texts()
        assert sum(f"💸 Refund for #{ticket.id}" in t for t in group) == 1
        assert sum(t.startswith("✅ Refund") for t in group) == 1
        assert sum(t.startswith("💰 ann@example.org") for t in group) == 1
        assert len(await helpers.rows(database, Refund)) == 1
        assert len(await helpers.rows(database, Payout)) == 2


@pytest.mark.parametrize("forum", [True, False], ids=["topics", "cards"])
async def test_a_button_of_another_ticket_is_refused_on_this_card(
    database: Database, forum: bool
) -> None:
    async with running_desk(database, forum=forum) as desk:
        _, one = await desk.customer_opens("Ann", "first")
        _, two = await desk.customer_opens("Bob", "second")
        card_one = await desk.card_of(one.id)
        card_two = await desk.card_of(two.id)
        claim_two = card_two.callback_data()[0]

        answer = await press(desk, desk.agent, card_one, claim_two, tampered=True)
        assert answer == "This button does not belong to this message."
        assert desk.server.edits_in(desk.group) == [], "no card's buttons changed"
        assert (await helpers.ticket(database, two.id)).assignee_id is None
        [refused] = await audited(database, "refused:claim")
        assert refused.ticket_id == one.id
        assert (
            refused.details["reason"] == f"a button of #{two.id} pressed on a message of #{one.id}"
        )

        # On its own card the same button works.
        assert await press(desk, desk.agent, card_two, claim_two) == f"#{two.id}: claim done."
        assert (await helpers.ticket(database, two.id)).assignee_id is not None


async def test_approval_presses_are_audited_on_the_refunds_ticket(database: Database) -> None:
    """Issue 12: the audit entry of an approval press named the refund id as the ticket."""
    extra = {"REFUND_APPROVAL_ABOVE_USD": "30"}
    async with running_desk(database, extra=extra) as desk:
        _, first = await desk.customer_opens("Zed", "unrelated")
        await desk.customer_opens("Yan", "unrelated too")
        ann, ticket = await desk.customer_opens("Ann", "Please refund my balance")
        await account_for(desk, ann.id, "ann@example.org")
        second_admin = desk.server.add_user("Bea")
        await desk.server.add_member(desk.group, second_admin)
        async with database.sessions.begin() as session:
            await add_agent(session, second_admin.id, Role.ADMIN, "Bea", at=utcnow(), actor="test")

        await desk.server.user_sends(desk.admin, chat=desk.group, text=f"/refund {ticket.id}")
        panel = await posted(desk, f"💸 Refund for #{ticket.id}")
        [confirm] = panel.callback_data()
        assert "waiting for an admin" in await press(desk, desk.admin, panel, confirm)
        held = await posted(desk, "is waiting for an admin")
        [approve] = held.callback_data()
        [refund] = await helpers.rows(database, Refund)
        assert refund.id != ticket.id, "the test tells a refund id from a ticket number"

        assert "Only agents" in await press(desk, desk.stranger, held, approve)
        assert "only an admin" in await press(desk, desk.agent, held, approve)
        assert "a second admin" in await press(desk, desk.admin, held, approve)
        card = await desk.card_of(first.id)
        tampered = await press(desk, second_admin, card, approve, tampered=True)
        assert tampered == "This button does not belong to this message."
        assert (await helpers.rows(database, Refund))[0].status == "awaiting_approval"
        assert "done" in await press(desk, second_admin, held, approve)
        assert "already done" in await press(desk, second_admin, held, approve)

        stranger, elsewhere = await audited(database, "refused:rappr")
        assert (stranger.ticket_id, stranger.details["reason"]) == (ticket.id, "not an agent")
        assert elsewhere.ticket_id == first.id
        assert elsewhere.details["reason"].startswith(f"a button of #{ticket.id} pressed on")
        refusals = await audited(database, "refused:refund_approve")
        assert [(e.ticket_id, e.details["refund_id"]) for e in refusals] == [
            (ticket.id, refund.id),
            (ticket.id, refund.id),
        ]
        [approved] = await audited(database, "refund_approve")
        assert approved.ticket_id == ticket.id
        assert sum(t.startswith("✅ Refund") for t in desk.group_texts()) == 1


@pytest.mark.slow
async def test_one_agent_waiting_for_telegram_holds_back_no_other_agent(
    database: Database,
) -> None:
    async with running_desk(database) as desk:
        zoe, ticket = await desk.customer_opens("Zoe", "help")
        topic = await desk.topic_of(ticket.id)
        await desk.card_of(ticket.id)
        desk.server.hold_next("sendMessage", seconds=HOLD, chat_id=desk.group)
        await desk.server.user_sends(desk.agent, chat=desk.group, text="/stats")
        await desk.server.wait_for(lambda: desk.server.stats.held_requests == 1)

        await desk.server.user_sends(desk.admin, chat=desk.group, thread_id=topic, text="On it!")
        await desk.wait_customer(zoe, "On it!")
        assert not any("waiting on us" in t for t in desk.group_texts()), "still held"
        await desk.wait_group("waiting on us", within=HOLD + 10)
