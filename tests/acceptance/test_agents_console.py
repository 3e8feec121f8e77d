"""End to end: the agents' console (issue 15, points 4, 6, 8, 9) through the running service.

Every test runs on SQLite and PostgreSQL against the local Bot API server; the assertions are
what the group, the customers and the agents' private chats received, and what the database
holds.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from sandbox.telegram import SentMessage, SimUser
from tests import helpers
from tests.acceptance.test_refunds_telegram import press
from tests.conftest import Database
from tests.mailservers import eventually
from tests.report_fixtures import seed_october
from tests.telegram_harness import Desk, running_desk
from tickets.agents import add_agent
from tickets.model import Direction, Role
from tickets.ports import utcnow
from tickets.tables import Agent, AuditEntry, Message, MessageEdit, TicketTag


async def says(desk: Desk, who: SimUser, text: str, *, thread_id: int | None = None) -> SentMessage:
    """`who` writes `text` in the group; the bot's answer to that very message."""
    sent = await desk.server.user_sends(who, chat=desk.group, text=text, thread_id=thread_id)

    def answer() -> SentMessage | None:
        for m in desk.server.sent_to(desk.group):
            if m.reply_to == sent["message_id"]:
                return m
        return None

    return await desk.server.wait_for(answer, 10)


def answers_to(desk: Desk, message_ids: set[int]) -> list[str]:
    return [m.text or "" for m in desk.server.sent_to(desk.group) if m.reply_to in message_ids]


async def tags(database: Database) -> list[tuple[int, str]]:
    async with database.sessions() as session:
        found = await session.execute(
            select(TicketTag.ticket_id, TicketTag.tag).order_by(TicketTag.ticket_id, TicketTag.tag)
        )
        return [(int(n), str(t)) for n, t in found.all()]


async def audit(database: Database, action: str) -> list[AuditEntry]:
    return [e for e in await helpers.rows(database, AuditEntry) if e.action == action]


async def test_whoami_and_chatid_answer_anyone_and_nothing_else_does(database: Database) -> None:
    async with running_desk(database) as desk:
        _, ticket = await desk.customer_opens("Ann", "hello")
        stranger = desk.stranger
        ignored = [
            await desk.server.user_sends(stranger, chat=desk.group, text=command)
            for command in ("/mine", f"/tag {ticket.id} x", f"/audit {ticket.id}", "/agent add 5")
        ]
        who = (await says(desk, stranger, "/whoami")).text or ""
        assert f"Your Telegram id: {stranger.id}" in who
        assert f"/agent add {stranger.id}" in who and "not an agent" in who
        assert f"This group's id: {desk.group.id}" in who
        assert (await says(desk, stranger, "/chatid")).text == f"This group's id: {desk.group.id}"
        # The stranger's lane is handled in order: their earlier commands got nothing.
        assert answers_to(desk, {m["message_id"] for m in ignored}) == []
        assert await tags(database) == []

        mine = (await says(desk, desk.agent, "/whoami")).text or ""
        assert f"Your Telegram id: {desk.agent.id}" in mine and "role agent" in mine
        assert "role admin" in ((await says(desk, desk.admin, "/whoami")).text or "")


async def test_admins_manage_agents_from_the_group_audited(database: Database) -> None:
    async with running_desk(database) as desk:
        nia = desk.server.add_user("Nia", username="Nia_Support")
        await desk.server.add_member(desk.group, nia)
        await says(desk, nia, "/whoami")  # the bot now knows @nia_support

        said = await says(desk, desk.agent, "/agent add @nia_support")
        assert said.text == "⚠️ only an admin can manage agents"
        said = await says(desk, desk.admin, "/agent add @ghost")
        assert "I have not seen @ghost in this group yet" in (said.text or "")
        for bad in ("/agent", "/agent add", "/agent hire 5", "/agent add 5 boss", "/agent add x"):
            said = await says(desk, desk.admin, bad)
            assert (said.text or "").startswith("⚠️ Usage: /agent add @user|ID"), bad

        said = await says(desk, desk.admin, "/agent add @NIA_support")
        assert said.text == f"Nia ({nia.id}) is now an agent: agent."
        assert "role agent" in ((await says(desk, nia, "/whoami")).text or "")
        said = await says(desk, desk.admin, f"/agent add {nia.id} admin")
        assert said.text == f"{nia.id} ({nia.id}) now has the role: admin."
        said = await says(desk, desk.admin, f"/agent remove {desk.admin.id}")
        assert "cannot remove yourself" in (said.text or "")
        said = await says(desk, desk.admin, f"/agent remove {nia.id}")
        assert said.text == f"{nia.id} ({nia.id}) is no longer an agent."
        assert "not an agent" in ((await says(desk, nia, "/whoami")).text or "")

        [row] = await helpers.rows(database, Agent, Agent.telegram_id == nia.id)
        assert row.removed_at is not None and row.role == "admin"
        actor = f"agent:{desk.admin.id}"
        [added] = [e for e in await audit(database, "agent_add") if e.actor != "test"]
        assert added.actor == actor and added.details["telegram_id"] == nia.id
        [changed] = await audit(database, "agent_role")
        assert changed.details["role"] == "admin"
        [removed] = await audit(database, "agent_remove")
        assert removed.actor == actor


async def test_assign_tells_the_assignee_or_the_assigner_why_not(database: Database) -> None:
    async with running_desk(database) as desk:
        _, ticket = await desk.customer_opens("Ann", "my refund?")
        n = ticket.id
        nia = desk.server.add_user("Nia", started=False)
        async with database.sessions.begin() as session:
            await add_agent(session, nia.id, Role.AGENT, "Nia", at=utcnow(), actor="test")
        await says(desk, desk.admin, "/whoami")  # the bot has seen @ada

        said = await says(desk, desk.agent, f"/assign {n} @ada")
        assert said.text == f"👤 #{n} is now Ada's. They were told in a private message."
        private = await desk.wait_customer(desk.admin, f"gave you ticket #{n}")
        assert private.text == f"👤 Sam gave you ticket #{n}. /mine lists your tickets."
        mine = (await says(desk, desk.admin, "/mine")).text or ""
        assert mine.startswith("Your tickets") and f"#{n} · due" in mine
        assert (await says(desk, desk.agent, "/mine")).text == "You hold no open tickets."

        said = await says(desk, desk.agent, f"/assign {n} {nia.id}")
        assert said.text == (
            f"👤 #{n} is now Nia's (was Ada). They have not started a chat with the bot, "
            "so they were not told privately."
        )
        assert desk.server.sent_to(nia.id) == []
        for bad in ("/assign", f"/assign {n}", f"/assign {n} sam", "/assign x @ada", "/mine 3"):
            assert ((await says(desk, desk.agent, bad)).text or "").startswith("⚠️ Usage: /"), bad
        said = await says(desk, desk.agent, f"/assign {n} {desk.stranger.id}")
        assert "is not an agent" in (said.text or "")
        said = await says(desk, desk.agent, f"/assign 999999 {nia.id}")
        assert "999999" in (said.text or "")

        assert (await helpers.ticket(database, n)).assignee_id is not None
        [nia_row] = await helpers.rows(database, Agent, Agent.telegram_id == nia.id)
        assert (await helpers.ticket(database, n)).assignee_id == nia_row.id
        first, second = await audit(database, "assign")
        assert first.actor == second.actor == f"agent:{desk.agent.id}"
        assert first.details == {"assignee": desk.admin.id, "previous_assignee": None}
        assert second.details == {"assignee": nia.id, "previous_assignee": desk.admin.id}


@pytest.mark.parametrize("forum", [True, False], ids=["topics", "cards"])
async def test_tags_show_on_the_card_and_topic_and_in_the_audit_trail(
    database: Database, forum: bool
) -> None:
    async with running_desk(database, forum=forum) as desk:
        _, ticket = await desk.customer_opens("Ann", "payment stuck")
        n = ticket.id
        card = await desk.card_of(n)
        said = await says(desk, desk.agent, f"/tag {n} Billing #refund billing")
        assert said.text == f"🏷 #{n}: billing, refund"

        def card_tagged() -> bool:
            shown = desk.server.message(desk.group, card.message_id) or {}
            return "🏷 billing refund" in str(shown.get("text", ""))

        await desk.server.wait_for(card_tagged, 10)
        await desk.wait_group(f"🏷 #{n} tagged billing, refund by Sam")
        if forum:
            await desk.server.wait_for(
                lambda: any("🏷 billing refund" in t.name for t in desk.server.topics(desk.group)),
                10,
            )
        said = await says(desk, desk.agent, f"/tag {n} bad!word")
        assert "one word of letters and digits" in (said.text or "")
        said = await says(desk, desk.agent, f"/tag {n} " + " ".join(f"t{i}" for i in range(9)))
        assert "at most 10 tags; this one has room for 8 more" in (said.text or "")
        said = await says(desk, desk.agent, f"/tag {n} " + "x" * 33)
        assert "at most 32 characters" in (said.text or "")
        assert ((await says(desk, desk.agent, f"/tag {n}")).text or "").startswith("⚠️ Usage")
        assert await tags(database) == [(n, "billing"), (n, "refund")]

        await says(desk, desk.agent, f"/take {n}")
        trail = (await says(desk, desk.agent, f"/audit {n}")).text or ""
        lines = trail.splitlines()
        assert lines[0] == f"Audit trail of #{n}"
        assert "· Sam · tag · added=['billing', 'refund']" in lines[1]
        assert lines[2].endswith("· Sam · claim")
        assert ((await says(desk, desk.agent, "/audit")).text or "").startswith("⚠️ Usage")


async def test_confirm_mode_drafts_are_sent_noted_or_discarded_once(database: Database) -> None:
    async with running_desk(database, extra={"REPLY_MODE": "confirm"}) as desk:
        ann, ticket = await desk.customer_opens("Ann", "is my payment in?")
        n = ticket.id
        topic = await desk.topic_of(n)

        panel = await says(desk, desk.agent, "Yes, it arrived.", thread_id=topic)
        assert f"📝 Draft for #{n}: not sent yet" in (panel.text or "")
        send, _note, discard = panel.callback_data()
        await asyncio.sleep(0.5)
        assert [m.text for m in desk.server.sent_to(ann)][-1] != "Yes, it arrived."

        assert "Only the agent who wrote" in await press(desk, desk.admin, panel, send)
        forged = send.replace(f":{n}:", f":{n}:9", 1)
        assert await press(desk, desk.agent, panel, forged, tampered=True) == (
            "This button is not valid."
        )
        assert await press(desk, desk.agent, panel, send) == "sent to the customer."
        await desk.wait_customer(ann, "Yes, it arrived.")
        # A second press (a client that had not seen the panel change yet) does nothing.
        assert "already sent" in await press(desk, desk.agent, panel, discard, tampered=True)
        assert "already sent" in await press(desk, desk.agent, panel, send, tampered=True)

        panel = await says(desk, desk.agent, "check the ledger first", thread_id=topic)
        kept = await press(desk, desk.agent, panel, panel.callback_data()[1])
        assert "kept as an internal note" in kept
        wrong = await desk.server.user_sends(
            desk.agent, chat=desk.group, thread_id=topic, text="Sorry, wrong ticket"
        )
        panel = await desk.server.wait_for(
            lambda: next(
                (m for m in desk.server.sent_to(desk.group) if m.reply_to == wrong["message_id"]),
                None,
            ),
            10,
        )
        await desk.server.user_edits(desk.agent, wrong, "Sorry, wrong ticket!!")
        await desk.wait_group("A draft keeps the text it had when you wrote it")
        assert "discarded" in await press(desk, desk.agent, panel, panel.callback_data()[2])
        await says(desk, desk.agent, "/stats")  # later than the presses' effects
        customer = [m.text for m in desk.server.sent_to(ann)]
        assert customer.count("Yes, it arrived.") == 1
        assert "check the ledger first" not in customer and "Sorry, wrong ticket" not in customer
        messages = await helpers.messages(database, n)
        assert [(m.direction, m.text) for m in messages[1:]] == [
            (Direction.OUT.value, "Yes, it arrived."),
            (Direction.NOTE.value, "check the ledger first"),
        ]


async def test_an_edited_reply_is_passed_on_within_the_window(
    database: Database,
) -> None:
    async with running_desk(database) as desk:
        ann, ticket = await desk.customer_opens("Ann", "balance?")
        n = ticket.id
        topic = await desk.topic_of(n)
        reply = await desk.server.user_sends(
            desk.agent, chat=desk.group, thread_id=topic, text="Your balance is $5."
        )
        copy = await desk.wait_customer(ann, "Your balance is $5.")

        async def delivered() -> bool:
            rows = await helpers.rows(database, Message, Message.direction == "out")
            return bool(rows) and rows[0].delivered_at is not None

        await eventually(delivered)
        await desk.server.user_edits(desk.agent, reply, "Your balance is $6.")
        await desk.wait_group("Your edit was passed on")
        shown = desk.server.message(ann.id, copy.message_id) or {}
        assert shown.get("text") == "Your balance is $6."
        [edit] = await helpers.rows(database, MessageEdit)
        assert edit.text == "Your balance is $5."
        [out] = await helpers.rows(database, Message, Message.direction == "out")
        assert out.text == "Your balance is $6."
        [entry] = await audit(database, "reply_edit")
        assert entry.details["passed_on"] == "telegram"


async def test_an_edit_after_the_window_is_said_not_passed_on(database: Database) -> None:
    async with running_desk(database, extra={"REPLY_EDIT_MINUTES": "0"}) as desk:
        ann, ticket = await desk.customer_opens("Bea", "balance?")
        topic = await desk.topic_of(ticket.id)
        reply = await desk.server.user_sends(
            desk.agent, chat=desk.group, thread_id=topic, text="It is $7."
        )
        copy = await desk.wait_customer(ann, "It is $7.")
        await desk.server.user_edits(desk.agent, reply, "It is $8.")
        told = await desk.wait_group("was not passed on")
        assert "more than 0 minutes ago" in (told.text or "")
        assert (desk.server.message(ann.id, copy.message_id) or {}).get("text") == "It is $7."


async def test_report_breaks_down_by_tag(database: Database) -> None:
    """Sorted hours per ticket: 2 1 4 30 5 8. billing: 2, 4, 30; refund: 4; untagged: not shown."""
    numbers = await seed_october(database)
    async with running_desk(database) as desk:
        for number in (numbers[0], numbers[2], numbers[3]):
            await says(desk, desk.agent, f"/tag {number} billing")
        await says(desk, desk.agent, f"/tag {numbers[2]} refund")
        await desk.server.user_sends(desk.agent, chat=desk.group, text="/report 2026-10")
        text = (await desk.wait_group("SLA report October 2026")).text or ""
        tag_part = text.split("\nTag\n", 1)[1]
        assert tag_part.startswith(
            " billing           3    4.0   30.0  66.7%  66.7%\n"
            " refund            1    4.0    4.0 100.0% 100.0%\n"
        )
