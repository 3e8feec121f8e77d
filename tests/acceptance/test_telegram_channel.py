"""End to end: customers and agents use the real bot through the local Bot API server."""

from __future__ import annotations

import asyncio
import re

import pytest
from sqlalchemy import select

from sandbox.telegram import RateLimits, sample_png
from tests import helpers
from tests.conftest import Database
from tests.telegram_harness import running_desk
from tickets.tables import AuditEntry, Customer, Message, MessageEdit, Ticket


async def only_ticket_eventually(database: Database) -> Ticket:
    for _ in range(100):
        found = await helpers.tickets(database)
        if found:
            return await only_ticket(database)
        await asyncio.sleep(0.05)
    raise AssertionError("no ticket was opened")


async def only_ticket(database: Database) -> Ticket:
    [ticket] = await helpers.tickets(database)
    return ticket


async def test_customer_writes_agent_answers_from_the_topic(database: Database) -> None:
    async with running_desk(database) as desk:
        ann = desk.server.add_user("Ann")
        await desk.server.user_sends(ann, text="My top-up of 50 USDT is not on my balance <b>&")

        receipt = await desk.wait_customer(ann, "ticket number is #")
        ticket = await only_ticket(database)
        assert f"#{ticket.id}" in (receipt.text or "")
        topic = await desk.topic_of(ticket.id)
        card = await desk.server.wait_for_sent(desk.group, thread_id=topic)
        assert "My top-up of 50 USDT is not on my balance <b>&" in (card[0].text or "")
        assert len(card[0].callback_data()) == 4  # claim, close, balance; refund

        await desk.server.user_sends(
            desk.agent, chat=desk.group, thread_id=topic, text="We see it now; it is credited."
        )
        answer = await desk.wait_customer(ann, "We see it now")
        assert answer.text == "We see it now; it is credited."
        await desk.wait_group("sent on Telegram")
        stored = await helpers.ticket(database, ticket.id)
        assert stored.waiting_since is None, "the delivered answer stopped the clock"
        assert len(await helpers.responses(database)) == 1


async def test_agent_answers_by_replying_to_the_card_without_topics(database: Database) -> None:
    async with running_desk(database, forum=False) as desk:
        bob = desk.server.add_user("Bob")
        await desk.server.user_sends(bob, text="How do refunds work?")
        card = await desk.card_of((await only_ticket_eventually(database)).id)
        assert "How do refunds work?" in (card.text or "")
        assert desk.server.topics(desk.group) == []
        await desk.server.user_sends(
            desk.agent,
            chat=desk.group,
            reply_to=card.message_id,
            text="Within 7 days, to the paying wallet.",
        )
        answer = await desk.wait_customer(bob, "Within 7 days")
        assert answer.text == "Within 7 days, to the paying wallet."


async def test_follow_ups_and_media_land_in_the_same_topic(database: Database) -> None:
    async with running_desk(database) as desk:
        ann = desk.server.add_user("Ann")
        await desk.server.user_sends(ann, text="first")
        await desk.wait_customer(ann, "ticket number")
        await desk.server.user_sends(ann, photo=sample_png(4, 4), caption="screenshot")
        ticket = await only_ticket(database)
        topic = await desk.topic_of(ticket.id)
        sent = await desk.server.wait_for(
            lambda: [m for m in desk.server.sent_to(desk.group, topic) if m.media == "photo"]
        )
        assert sent, "the customer's photo was copied into the topic"
        assert len(await helpers.tickets(database)) == 1
        receipts = [m for m in desk.server.sent_to(ann.id) if "ticket number" in (m.text or "")]
        assert len(receipts) == 1, "a follow-up gets no second receipt"


async def test_note_stays_internal_and_commands_work(database: Database) -> None:
    async with running_desk(database) as desk:
        ann, ticket = await desk.customer_opens("Ann", "help")
        topic = await desk.topic_of(ticket.id)
        before = len(desk.server.sent_to(ann.id))

        await desk.server.user_sends(
            desk.agent, chat=desk.group, thread_id=topic, text="/note she is on the old plan"
        )
        await desk.wait_group("Note added")
        await desk.server.user_sends(desk.agent, chat=desk.group, text=f"/take {ticket.id}")
        await desk.wait_group(f"#{ticket.id} claimed")
        await desk.server.user_sends(desk.agent, chat=desk.group, text="/queue")
        queue = await desk.wait_group("Queue")
        assert f"#{ticket.id}" in (queue.text or "") and "Sam" in (queue.text or "")
        await desk.server.user_sends(desk.agent, chat=desk.group, text="/stats")
        stats = await desk.wait_group("waiting on us")
        assert "1 open" in (stats.text or "")
        await desk.server.user_sends(desk.agent, chat=desk.group, text="/close 999")
        await desk.wait_group("there is no ticket #999")

        assert len(desk.server.sent_to(ann.id)) == before, "nothing of that reached the customer"
        messages = await helpers.messages(database, ticket.id)
        assert [(m.direction, m.text) for m in messages][-1] == ("note", "she is on the old plan")
        assert (await helpers.ticket(database, ticket.id)).assignee_id is not None


async def test_buttons_are_checked_on_every_press(database: Database) -> None:
    async with running_desk(database) as desk:
        _ann, ticket = await desk.customer_opens("Ann", "help")
        card = await desk.card_of(ticket.id)
        claim, close, _balance, _refund = card.callback_data()

        stranger_press = await desk.server.press_button(desk.stranger, card, claim)
        forged = claim.replace(f":{ticket.id}:", f":{ticket.id + 1}:")
        forged_press = await desk.server.press_button(desk.agent, card, forged, tampered=True)
        await desk.server.wait_for(lambda: desk.server.callback_answer(forged_press))
        assert (await helpers.ticket(database, ticket.id)).assignee_id is None

        claim_press = await desk.server.press_button(desk.agent, card, claim)
        answer = await desk.server.wait_for(lambda: desk.server.callback_answer(claim_press))
        assert "claim" in (answer.text or "")
        close_press = await desk.server.press_button(desk.agent, card, close)
        await desk.server.wait_for(lambda: desk.server.callback_answer(close_press))
        again = await desk.server.press_button(desk.admin, card, close)
        late = await desk.server.wait_for(lambda: desk.server.callback_answer(again))
        assert "already closed" in (late.text or "")

        stored = await helpers.ticket(database, ticket.id)
        assert stored.status == "closed" and stored.assignee_id is not None
        stranger_answer = desk.server.callback_answer(stranger_press)
        assert stranger_answer is not None and "Only agents" in (stranger_answer.text or "")
        audit = [e.action for e in await helpers.rows(database, AuditEntry)]
        assert "refused:claim" in audit and "refused:button" in audit and "refused:close" in audit


async def test_strangers_are_ignored_and_learn_nothing(database: Database) -> None:
    async with running_desk(database) as desk:
        ann, ticket = await desk.customer_opens("Ann", "help")
        topic = await desk.topic_of(ticket.id)
        await desk.server.user_sends(
            desk.stranger, chat=desk.group, thread_id=topic, text="I am not an agent but I answer"
        )
        await desk.server.user_sends(desk.stranger, chat=desk.group, text=f"/close {ticket.id}")
        await desk.server.user_sends(desk.stranger, text="/queue")
        reply = await desk.wait_customer(desk.stranger, "I don't know /queue")
        assert "#" not in (reply.text or "")
        await desk.server.wait_until_confirmed()
        assert [m.text for m in desk.server.sent_to(ann.id)][-1].startswith("Thank you")  # type: ignore[union-attr]
        assert (await helpers.ticket(database, ticket.id)).status == "open"
        # The stranger's private /queue opened no ticket, and nothing answered in the group.
        assert len(await helpers.tickets(database)) == 1
        assert not any("closed" in t for t in desk.group_texts())


async def test_unsupported_types_edits_and_other_groups(database: Database) -> None:
    async with running_desk(database) as desk:
        ann = desk.server.add_user("Ann")
        await desk.server.user_sends(ann, sticker="😀")
        await desk.wait_customer(ann, "can't pass this kind of message")
        first = await desk.server.user_sends(ann, text="I paid 10 USDT")
        await desk.wait_customer(ann, "ticket number")
        await desk.server.user_edits(ann, first, "I paid 100 USDT")
        await desk.wait_group("edited a message")
        other = desk.server.add_group("Random chat")
        await desk.server.add_member(other, ann)
        await desk.server.user_sends(ann, chat=other, text="hello everyone")
        await desk.server.wait_until_confirmed()

        ticket = await only_ticket(database)
        [message] = await helpers.messages(database, ticket.id)
        assert message.text == "I paid 100 USDT"
        [edit] = await helpers.rows(database, MessageEdit)
        assert edit.text == "I paid 10 USDT"
        assert desk.server.sent_to(other) == []


async def test_a_banned_customer_gets_nothing_and_nothing_is_stored(database: Database) -> None:
    async with running_desk(database) as desk:
        ann, ticket = await desk.customer_opens("Ann", "buy my followers")
        topic = await desk.topic_of(ticket.id)
        await desk.server.user_sends(desk.admin, chat=desk.group, thread_id=topic, text="/ban")
        await desk.wait_group("is banned")
        answered = len(desk.server.sent_to(ann.id))
        group_posts = len(desk.group_texts())
        await desk.server.user_sends(ann, text="cheap followers, write me")
        await desk.server.user_sends(ann, sticker="😀")
        await desk.server.user_sends(ann, text="/start")
        await desk.server.user_sends(ann, text="/status")
        await desk.server.wait_until_confirmed()
        await asyncio.sleep(0.3)  # whatever the outbox would send has had time to go out
        assert len(desk.server.sent_to(ann.id)) == answered
        assert len(desk.group_texts()) == group_posts
        assert [m.text for m in await helpers.messages(database, ticket.id)] == ["buy my followers"]
        assert len(await helpers.tickets(database)) == 1


async def test_blocked_customer_is_reported_to_agents(database: Database) -> None:
    async with running_desk(database) as desk:
        ann, ticket = await desk.customer_opens("Ann", "help")
        desk.server.block_bot(ann)
        await desk.server.user_sends(
            desk.agent,
            chat=desk.group,
            thread_id=await desk.topic_of(ticket.id),
            text="Here is your answer",
        )
        await desk.wait_group("could not be delivered")
        async with database.sessions() as session:
            customer = await session.scalar(select(Customer).where(Customer.telegram_id == ann.id))
        assert customer is not None and customer.unreachable_at is not None
        [reply] = [m for m in await helpers.messages(database, ticket.id) if m.direction == "out"]
        assert reply.delivery == "failed"


async def test_a_429_is_waited_out_and_the_answer_arrives_once(database: Database) -> None:
    async with running_desk(database) as desk:
        ann, ticket = await desk.customer_opens("Ann", "help")
        desk.server.fail_next("sendMessage", status=429, retry_after=1, chat_id=ann.id)
        await desk.server.user_sends(
            desk.agent,
            chat=desk.group,
            thread_id=await desk.topic_of(ticket.id),
            text="Answer after a flood wait",
        )
        await desk.wait_customer(ann, "Answer after a flood wait", within=15)
        await desk.wait_group("sent on Telegram")
        texts = [m.text for m in desk.server.sent_to(ann.id)]
        assert texts.count("Answer after a flood wait") == 1


@pytest.mark.slow
async def test_a_burst_is_coalesced_without_loss_or_429(database: Database) -> None:
    async with running_desk(database, limits=RateLimits.telegram()) as desk:
        customers = [desk.server.add_user(f"C{i}") for i in range(120)]
        for i, user in enumerate(customers):
            await desk.server.user_sends(user, text=f"burst message {i}")
        for i, user in enumerate(customers[:40]):  # follow-ups while the burst is on
            await desk.server.user_sends(user, text=f"and a follow-up {i}")

        async def every_message_visible() -> bool:
            stored = await helpers.rows(database, Message, Message.direction == "in")
            if len(stored) < 160:
                return False
            texts = desk.group_texts()
            return all(
                any(m.text in t and re.search(rf"#{m.ticket_id}(?!\d)", t) for t in texts)
                for m in stored
            )

        deadline = asyncio.get_running_loop().time() + 90
        while not await every_message_visible():
            assert asyncio.get_running_loop().time() < deadline, "not every message reached agents"
            await asyncio.sleep(0.2)
        assert desk.server.stats.too_many_requests_total == 0
        group_messages = len(desk.server.sent_to(desk.group)) + len(desk.server.topics(desk.group))
        assert group_messages <= 20, "notifications were coalesced within the group's minute"
        assert len(await helpers.tickets(database)) == len(customers)
        receipts = await desk.server.wait_for(
            lambda: all(desk.server.sent_to(u.id) for u in customers), 30
        )
        assert receipts
        for user in customers:
            assert len(desk.server.sent_to(user.id)) == 1, "each customer got one receipt"


async def test_reply_by_number_reaches_a_ticket_from_anywhere_in_the_group(
    database: Database,
) -> None:
    async with running_desk(database) as desk:
        ann, ticket = await desk.customer_opens("Ann", "help")
        await desk.server.user_sends(
            desk.agent, chat=desk.group, text=f"/reply {ticket.id} Answered from General."
        )
        answer = await desk.wait_customer(ann, "Answered from General.")
        assert answer.text == "Answered from General."
        await desk.server.user_sends(desk.agent, chat=desk.group, text="/reply 999 lost")
        await desk.wait_group("there is no ticket #999")
