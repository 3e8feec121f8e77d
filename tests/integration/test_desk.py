"""The operations as the channels use them, checked against what the database holds."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.exc import IntegrityError

from tests import helpers
from tests.conftest import Clock, Database
from tests.helpers import email, telegram
from tickets.agents import add_agent, remove_agent
from tickets.desk import Desk
from tickets.errors import AgentNotFound, InvalidAction, NotAllowed, TicketNotFound
from tickets.model import Attachment, Channel, Intake, OutboxKind, Role, Route
from tickets.outbox import Delivery
from tickets.tables import (
    Customer,
    CustomerEmail,
    InboundKey,
    MailId,
    Message,
    MessageEdit,
    OutboxRow,
    Quarantined,
)

ANN = 1001
ADMIN = 9001
AGENT = 9002
OTHER_AGENT = 9003


async def add_agents(database: Database, clock: Clock) -> None:
    async with database.sessions.begin() as session:
        await add_agent(session, ADMIN, Role.ADMIN, "Ada", at=clock(), actor="test")
        await add_agent(session, AGENT, Role.AGENT, "Sam", at=clock(), actor="test")
        await add_agent(session, OTHER_AGENT, Role.AGENT, "Kim", at=clock(), actor="test")


async def test_first_message_opens_a_ticket_with_receipt_and_agent_notice(
    desk: Desk, database: Database, clock: Clock
) -> None:
    intake = await desk.receive(telegram(ANN, "My payment is missing"))

    assert intake.opened and intake.receipt and not intake.duplicate
    [ticket] = await helpers.tickets(database)
    assert ticket.id == intake.ticket
    assert ticket.status == "open" and ticket.channel == "telegram" and ticket.plan == "basic"
    assert ticket.waiting_since == clock.now
    assert ticket.due_at == clock.now + timedelta(hours=24)  # Tuesday 09:00 → Wednesday 09:00
    receipt, notice = await helpers.outbox(database)
    assert (receipt.route, receipt.recipient, receipt.kind) == ("telegram", str(ANN), "receipt")
    assert f"#{ticket.id}" in receipt.payload["text"]
    assert "Wed 25 Nov 2026, 09:00 UTC" in receipt.payload["text"]
    assert (notice.route, notice.kind) == ("agents", "agent_notice")
    assert notice.payload["event"] == "opened"
    assert "My payment is missing" in notice.payload["text"]


async def test_follow_up_joins_the_ticket_without_receipt_and_keeps_the_wait(
    desk: Desk, database: Database, clock: Clock
) -> None:
    first = await desk.receive(telegram(ANN, "one"))
    started = clock.now
    clock.advance(hours=2)
    second = await desk.receive(telegram(ANN, "two"))

    assert second.ticket == first.ticket and not second.opened and not second.receipt
    ticket = await helpers.ticket(database, first.ticket)
    assert ticket.waiting_since == started
    kinds = [row.kind for row in await helpers.outbox(database)]
    assert kinds == ["receipt", "agent_notice", "agent_notice"]


@pytest.mark.parametrize(
    ("sent", "due"),
    [
        # The design's worked examples.
        (datetime(2026, 11, 28, 10, 0, tzinfo=UTC), datetime(2026, 12, 1, 0, 0, tzinfo=UTC)),
        (datetime(2026, 11, 27, 20, 0, tzinfo=UTC), datetime(2026, 11, 30, 20, 0, tzinfo=UTC)),
    ],
    ids=["saturday-counts-from-monday", "friday-evening-due-monday"],
)
async def test_due_time_follows_business_hours(
    desk: Desk, database: Database, clock: Clock, sent: datetime, due: datetime
) -> None:
    clock.now = sent
    intake = await desk.receive(telegram(ANN))
    ticket = await helpers.ticket(database, intake.ticket)
    assert ticket.waiting_since == sent
    assert ticket.due_at == due


async def test_redelivered_event_is_stored_once(desk: Desk, database: Database) -> None:
    first = await desk.receive(telegram(ANN, "hi", dedup_key=("telegram", "update:77")))
    again = await desk.receive(telegram(ANN, "hi", dedup_key=("telegram", "update:77")))

    assert again.duplicate and again.ticket == first.ticket and again.message_id == first.message_id
    assert len(await helpers.messages(database, first.ticket)) == 1
    assert len(await helpers.outbox(database)) == 2  # one receipt, one notice: nothing twice


async def test_concurrent_redelivery_is_stored_once(desk: Desk, database: Database) -> None:
    results = await asyncio.gather(
        *(desk.receive(telegram(ANN, "hi", dedup_key=("imap", "1:5"))) for _ in range(8))
    )
    assert sum(not r.duplicate for r in results) == 1
    assert len(await helpers.rows(database, Message)) == 1


async def test_concurrent_first_messages_make_one_customer_and_one_ticket(
    desk: Desk, database: Database
) -> None:
    results = await asyncio.gather(*(desk.receive(telegram(ANN, f"m{i}")) for i in range(12)))
    assert len({r.ticket for r in results}) == 1
    assert sum(r.opened for r in results) == 1
    assert len(await helpers.messages(database, results[0].ticket)) == 12


async def test_new_starts_a_separate_ticket_and_later_messages_join_it(desk: Desk) -> None:
    first = await desk.receive(telegram(ANN, "billing"))
    second = await desk.receive(telegram(ANN, "other topic", new_ticket=True))
    third = await desk.receive(telegram(ANN, "more on the other topic"))
    assert second.opened and second.ticket != first.ticket
    assert third.ticket == second.ticket


async def test_automated_mail_is_kept_but_starts_no_wait_and_gets_no_receipt(
    desk: Desk, database: Database
) -> None:
    intake = await desk.receive(email("bounce@example.com", "Out of office", automated=True))
    ticket = await helpers.ticket(database, intake.ticket)
    assert ticket.waiting_since is None and ticket.due_at is None
    assert [row.kind for row in await helpers.outbox(database)] == ["agent_notice"]
    [message] = await helpers.messages(database, intake.ticket)
    assert message.text == "Out of office" and not message.counts_for_sla


async def test_email_customer_is_found_by_address_whatever_its_case(desk: Desk) -> None:
    first = await desk.receive(email("Bob@Example.COM", "hi"))
    second = await desk.receive(email("bob@example.com", "again"))
    assert second.ticket == first.ticket


async def test_reply_goes_back_over_the_customers_channel_and_stops_the_clock_when_delivered(
    desk: Desk, database: Database, clock: Clock
) -> None:
    await add_agents(database, clock)
    intake = await desk.receive(
        email("bob@example.com", "Where is my refund?", external_id="<m1@x>")
    )
    clock.advance(hours=3)
    message_id = await desk.reply(intake.ticket, AGENT, "It is on its way.")

    ticket = await helpers.ticket(database, intake.ticket)
    assert ticket.waiting_since is not None, "queued is not delivered: the clock still runs"
    [row] = await helpers.outbox(database, OutboxRow.kind == "reply")
    assert (row.route, row.recipient, row.message_id) == ("email", "bob@example.com", message_id)
    assert row.payload["text"] == "It is on its way."
    assert row.payload["in_reply_to"] == "<m1@x>"

    clock.advance(minutes=1)
    async with database.sessions.begin() as session:
        stored = await session.get(OutboxRow, row.id)
        assert stored is not None
        await desk.delivered(session, [Delivery(stored, clock.now, "<reply-1@support>")])

    ticket = await helpers.ticket(database, intake.ticket)
    assert ticket.waiting_since is None and ticket.due_at is None
    [response] = await helpers.responses(database)
    assert response.business_hours == pytest.approx(3 + 1 / 60)
    assert response.channel == "email" and response.plan == "basic"
    notices = await helpers.outbox(database, OutboxRow.kind == "agent_notice")
    assert "sent by email to bob@example.com" in notices[-1].payload["text"]


async def test_an_agent_message_taken_in_again_queues_its_reply_once(
    desk: Desk, database: Database, clock: Clock
) -> None:
    """After a crash before Telegram's update was confirmed, the same agent message comes again."""
    await add_agents(database, clock)
    intake = await desk.receive(telegram(11, "Where is my refund?"))
    first, again = await asyncio.gather(
        desk.reply(intake.ticket, AGENT, "It is on its way.", key="-100:42"),
        desk.reply(intake.ticket, AGENT, "It is on its way.", key="-100:42"),
    )
    later = await desk.reply(intake.ticket, AGENT, "It is on its way.", key="-100:42")
    assert first == again == later
    assert len(await helpers.outbox(database, OutboxRow.kind == "reply")) == 1
    other = await desk.reply(intake.ticket, AGENT, "And the fee too.", key="-100:43")
    assert other != first
    assert len(await helpers.outbox(database, OutboxRow.kind == "reply")) == 2


async def test_message_written_after_the_reply_starts_the_next_wait(
    desk: Desk, database: Database, clock: Clock
) -> None:
    await add_agents(database, clock)
    intake = await desk.receive(telegram(ANN, "q1"))
    clock.advance(hours=1)
    await desk.reply(intake.ticket, AGENT, "a1")
    [row] = await helpers.outbox(database, OutboxRow.kind == "reply")
    clock.advance(minutes=5)
    later = clock.now
    await desk.receive(telegram(ANN, "q2, before a1 arrived"))
    clock.advance(minutes=5)
    async with database.sessions.begin() as session:
        stored = await session.get(OutboxRow, row.id)
        assert stored is not None
        await desk.delivered(session, [Delivery(stored, clock.now, None)])

    ticket = await helpers.ticket(database, intake.ticket)
    assert ticket.waiting_since == later
    assert ticket.due_at == later + timedelta(hours=24)
    assert len(await helpers.responses(database)) == 1


async def test_note_stays_internal(desk: Desk, database: Database, clock: Clock) -> None:
    await add_agents(database, clock)
    intake = await desk.receive(telegram(ANN))
    before = len(await helpers.outbox(database))
    await desk.note(intake.ticket, AGENT, "customer is on the old plan")
    assert len(await helpers.outbox(database)) == before
    note = (await helpers.messages(database, intake.ticket))[-1]
    assert (note.direction, note.text) == ("note", "customer is on the old plan")
    assert (await helpers.ticket(database, intake.ticket)).waiting_since is not None


async def test_claim_release_close_reopen_are_checked_and_audited(
    desk: Desk, database: Database, clock: Clock
) -> None:
    await add_agents(database, clock)
    n = (await desk.receive(telegram(ANN))).ticket
    await desk.claim(n, AGENT)
    with pytest.raises(InvalidAction, match="already claimed by Sam"):
        await desk.claim(n, OTHER_AGENT)
    with pytest.raises(NotAllowed):
        await desk.release(n, OTHER_AGENT)
    assert (await helpers.ticket(database, n)).waiting_since is not None, "claiming stops no clock"
    await desk.release(n, ADMIN)
    with pytest.raises(InvalidAction, match="not claimed"):
        await desk.release(n, AGENT)
    await desk.close(n, AGENT)
    with pytest.raises(InvalidAction, match="already closed"):
        await desk.close(n, AGENT)
    with pytest.raises(InvalidAction, match="closed"):
        await desk.reply(n, AGENT, "late")
    await desk.reopen(n, OTHER_AGENT)
    ticket = await helpers.ticket(database, n)
    assert ticket.status == "open" and ticket.waiting_since is None

    actions = [(e.action, e.actor) for e in await helpers.audit(database) if e.ticket_id == n]
    assert actions == [
        ("claim", f"agent:{AGENT}"),
        ("release", f"agent:{ADMIN}"),
        ("close", f"agent:{AGENT}"),
        ("reopen", f"agent:{OTHER_AGENT}"),
    ]


async def test_strangers_and_removed_agents_cannot_act(
    desk: Desk, database: Database, clock: Clock
) -> None:
    await add_agents(database, clock)
    n = (await desk.receive(telegram(ANN))).ticket
    with pytest.raises(AgentNotFound):
        await desk.reply(n, 424242, "hi")
    async with database.sessions.begin() as session:
        await remove_agent(session, AGENT, at=clock.now, actor="test")
    with pytest.raises(AgentNotFound):
        await desk.claim(n, AGENT)
    with pytest.raises(TicketNotFound, match="#999"):
        await desk.claim(999, ADMIN)
    with pytest.raises(InvalidAction, match="empty"):
        await desk.reply(n, ADMIN, "   ")
    kinds = {row.kind for row in await helpers.outbox(database)}
    assert "reply" not in kinds


async def test_customer_message_reopens_a_recently_closed_ticket(
    desk: Desk, database: Database, clock: Clock
) -> None:
    await add_agents(database, clock)
    n = (await desk.receive(telegram(ANN, "q"))).ticket
    await desk.close(n, AGENT)
    clock.advance(days=6, hours=23)
    again = await desk.receive(telegram(ANN, "it happened again"))
    assert again.ticket == n and again.reopened and again.receipt
    ticket = await helpers.ticket(database, n)
    assert ticket.status == "open" and ticket.waiting_since == clock.now
    receipts = await helpers.outbox(database, OutboxRow.kind == OutboxKind.RECEIPT.value)
    assert "reopened" in receipts[-1].payload["text"]


async def test_customer_message_after_the_reopen_window_opens_a_new_ticket(
    desk: Desk, database: Database, clock: Clock
) -> None:
    await add_agents(database, clock)
    n = (await desk.receive(telegram(ANN, "q"))).ticket
    await desk.close(n, AGENT)
    clock.advance(days=7)
    again = await desk.receive(telegram(ANN, "new problem"))
    assert again.opened and again.ticket != n
    assert (await helpers.ticket(database, n)).status == "closed"


async def test_threaded_email_joins_the_named_ticket(desk: Desk, database: Database) -> None:
    n = (await desk.receive(email("bob@example.com", "first"))).ticket
    other = await desk.receive(email("bob@example.com", "unthreaded", new_ticket=True))
    threaded = await desk.receive(email("carol@example.com", "cc'd colleague answers", ticket=n))
    assert other.ticket != n and threaded.ticket == n and not threaded.opened


async def test_attachments_and_long_text_are_kept_whole(desk: Desk, database: Database) -> None:
    text = "x" * 50_000 + "\u202e\x00end"
    photo = Attachment(kind="photo", ref="file-1", filename=None, mime_type="image/jpeg", size=3)
    intake = await desk.receive(telegram(ANN, text, attachments=(photo,)))
    [message] = await helpers.messages(database, intake.ticket)
    assert message.text == "x" * 50_000 + "\u202e\ufffdend"  # NUL kept visibly, never dropped
    assert message.attachments == [photo.to_json()]
    notice = (await helpers.outbox(database, OutboxRow.route == Route.AGENTS.value))[0]
    assert notice.payload["truncated"] is True and "1 attachment" in notice.payload["text"]


async def test_odd_identities_are_stored_without_failing(desk: Desk, database: Database) -> None:
    huge_id = "<" + "a" * 2000 + "@example.com>"
    name = "N\x00" * 300
    first = await desk.receive(
        email("odd@example.com", "hi", name=name, external_id=huge_id, dedup_key=("mid", huge_id))
    )
    again = await desk.receive(
        email("odd@example.com", "hi", external_id=huge_id, dedup_key=("mid", huge_id))
    )
    assert again.duplicate and again.message_id == first.message_id
    [message] = await helpers.messages(database, first.ticket)
    assert message.external_id is not None and message.external_id.startswith("sha256:")


async def test_banned_customer_gets_nothing_and_nothing_is_stored(
    desk: Desk, database: Database, clock: Clock
) -> None:
    await add_agents(database, clock)
    n = (await desk.receive(telegram(ANN, "spam"))).ticket
    with pytest.raises(NotAllowed):
        await desk.ban(n, AGENT)
    await desk.ban(n, ADMIN)
    before = len(await helpers.outbox(database))
    ignored = await desk.receive(telegram(ANN, "more spam", dedup_key=("telegram", "1:2")))
    assert ignored.ignored and not ignored.duplicate
    assert len(await helpers.messages(database, n)) == 1
    assert len(await helpers.outbox(database)) == before
    await desk.ban(n, ADMIN, banned=False)
    again = await desk.receive(telegram(ANN, "sorry", dedup_key=("telegram", "1:2")))
    assert not again.ignored and not again.duplicate, "an ignored message leaves no dedup key"
    assert [e.action for e in await helpers.audit(database)][-2:] == ["ban", "unban"]


async def test_new_request_makes_the_next_message_a_separate_ticket(desk: Desk) -> None:
    first = await desk.receive(telegram(ANN, "one"))
    await desk.request_new_ticket(telegram(ANN).customer)
    second = await desk.receive(telegram(ANN, "another topic"))
    third = await desk.receive(telegram(ANN, "more about it"))
    assert second.opened and second.ticket != first.ticket and third.ticket == second.ticket


async def test_edit_keeps_the_old_text_and_tells_agents(desk: Desk, database: Database) -> None:
    intake = await desk.receive(telegram(ANN, "I paid 10", external_id="5:1"))
    assert await desk.record_edit(Channel.TELEGRAM, "5:1", "I paid 100") == intake.ticket
    assert await desk.record_edit(Channel.TELEGRAM, "5:999", "unknown") is None
    [message] = await helpers.messages(database, intake.ticket)
    assert message.text == "I paid 100"
    [edit] = await helpers.rows(database, MessageEdit)
    assert edit.text == "I paid 10"
    notice = (await helpers.outbox(database))[-1]
    assert notice.payload["event"] == "edited" and "I paid 100" in notice.payload["text"]


async def test_quarantine_keeps_the_raw_event_and_reports_it(
    desk: Desk, database: Database
) -> None:
    qid = await desk.quarantine("telegram", "update 7", b'{"odd": true}', "ValueError: boom")
    [row] = await helpers.rows(database, Quarantined)
    assert (row.id, row.raw, row.resolved_at) == (qid, b'{"odd": true}', None)
    notice = (await helpers.outbox(database))[-1]
    assert notice.route == "agents" and f"quarantine #{qid}" in notice.payload["text"]


async def test_refusals_are_audited(desk: Desk, database: Database) -> None:
    await desk.refused(555, "claim", "not an agent", 999)
    [entry] = await helpers.audit(database)
    assert (entry.action, entry.actor, entry.ticket_id) == ("refused:claim", "telegram:555", None)
    assert entry.details == {"reason": "not an agent"}


async def test_email_threading_by_headers_then_by_own_tag_never_by_subject(
    desk: Desk, database: Database, clock: Clock
) -> None:
    await add_agents(database, clock)
    first = await desk.receive(
        email(
            "bob@example.com",
            "help",
            subject="Refund",
            external_id="<c1@example.com>",
            new_ticket=True,
        )
    )
    await desk.reply(first.ticket, AGENT, "Sure")
    [reply] = await helpers.outbox(database, OutboxRow.kind == "reply")
    headers = reply.payload
    assert headers["subject_line"] == f"[#{first.ticket}] Re: Refund"
    assert headers["in_reply_to"] == "<c1@example.com>"
    assert headers["message_id"].endswith("@supportbot.invalid>")
    assert "<c1@example.com>" in headers["references"]

    answer = await desk.receive(
        email(
            "bob@example.com",
            "thanks",
            new_ticket=True,
            external_id="<c2@example.com>",
            thread_refs=(headers["message_id"],),
        )
    )
    tagged = await desk.receive(
        email(
            "bob@example.com",
            "again",
            new_ticket=True,
            ticket_tag=first.ticket,
            external_id="<c3@example.com>",
        )
    )
    stranger = await desk.receive(
        email("eve@example.net", "let me in", new_ticket=True, ticket_tag=first.ticket)
    )
    same_subject = await desk.receive(
        email("bob@example.com", "new", subject="Refund", new_ticket=True)
    )
    assert answer.ticket == first.ticket and tagged.ticket == first.ticket
    assert first.ticket not in (stranger.ticket, same_subject.ticket)


async def test_bounce_of_our_reply_is_shown_on_its_ticket(
    desk: Desk, database: Database, clock: Clock
) -> None:
    await add_agents(database, clock)
    first = await desk.receive(email("bob@example.com", "help", new_ticket=True))
    await desk.reply(first.ticket, AGENT, "Sure")
    [reply] = await helpers.outbox(database, OutboxRow.kind == "reply")
    bounce = await desk.receive(
        email(
            "mailer-daemon@example.com",
            "550 no such user",
            new_ticket=True,
            automated=True,
            bounce_of=(reply.payload["message_id"],),
        )
    )
    assert bounce.ticket == first.ticket and not bounce.receipt
    out = [m for m in await helpers.messages(database, first.ticket) if m.direction == "out"]
    assert out[0].delivery == "bounced"
    notice = (await helpers.outbox(database))[-1]
    assert notice.payload["event"] == "bounced" and "did not arrive" in notice.payload["text"]


async def test_email_receipts_are_limited_per_address(desk: Desk, database: Database) -> None:
    for i in range(5):
        await desk.receive(email("loop@example.com", f"mail {i}", new_ticket=True))
    receipts = await helpers.outbox(database, OutboxRow.kind == "receipt")
    assert len(receipts) == 3
    assert len(await helpers.tickets(database)) == 5, "every mail is still a ticket"


async def test_failed_authentication_is_shown_to_agents(desk: Desk, database: Database) -> None:
    intake = await desk.receive(
        email("bob@example.com", "send my refund to this wallet", new_ticket=True, auth="fail")
    )
    [message] = await helpers.messages(database, intake.ticket)
    assert message.auth == "fail"
    notice = (await helpers.outbox(database, OutboxRow.route == "agents"))[0]
    assert "sender not verified" in notice.payload["text"]


async def test_message_stored_after_the_reply_starts_a_wait_even_with_an_older_timestamp(
    desk: Desk, database: Database, clock: Clock
) -> None:
    # A message sent before the agent wrote, but stored after (it waited for a lock, or
    # Telegram delivered it late), was not seen by the agent: the answer does not cover it.
    await add_agents(database, clock)
    intake = await desk.receive(telegram(ANN, "q1"))
    clock.advance(hours=1)
    written = clock.now
    await desk.reply(intake.ticket, AGENT, "a1")
    late = await desk.receive(telegram(ANN, "q2", received_at=written - timedelta(minutes=5)))
    [row] = await helpers.outbox(database, OutboxRow.kind == "reply")
    clock.advance(minutes=1)
    async with database.sessions.begin() as session:
        stored = await session.get(OutboxRow, row.id)
        assert stored is not None
        await desk.delivered(session, [Delivery(stored, clock.now, None)])
    ticket = await helpers.ticket(database, intake.ticket)
    assert ticket.waiting_since == written - timedelta(minutes=5)
    assert ticket.waiting_message_id == late.message_id


async def test_bounce_of_a_receipt_finds_its_ticket(desk: Desk, database: Database) -> None:
    first = await desk.receive(email("typo@example.com", "help", new_ticket=True))
    [receipt] = await helpers.outbox(database, OutboxRow.kind == "receipt")
    bounce = await desk.receive(
        email(
            "mailer-daemon@example.com",
            "550 unknown user",
            new_ticket=True,
            automated=True,
            bounce_of=(receipt.payload["message_id"],),
        )
    )
    assert bounce.ticket == first.ticket
    assert (await helpers.outbox(database))[-1].payload["event"] == "bounced"


async def test_reply_goes_to_the_customer_not_to_an_auto_reply(
    desk: Desk, database: Database, clock: Clock
) -> None:
    await add_agents(database, clock)
    first = await desk.receive(email("bob@example.com", "help", new_ticket=True))
    await desk.receive(email("robot@example.com", "I am away", ticket=first.ticket, automated=True))
    await desk.reply(first.ticket, AGENT, "answer")
    [reply] = await helpers.outbox(database, OutboxRow.kind == "reply")
    assert reply.recipient == "bob@example.com"


async def test_known_customers_spend_no_new_ids(desk: Desk, database: Database) -> None:
    for i in range(5):
        await desk.receive(telegram(ANN, f"m{i}"))
    second = await desk.receive(telegram(ANN + 1, "other person"))
    [_, other] = await helpers.rows(database, Customer)
    assert other.id == 2, "no customer id was used up by the known customer's messages"
    assert second.ticket == 2


async def test_a_batch_keeps_every_message_but_the_one_that_cannot_be_stored(
    desk: Desk, database: Database
) -> None:
    """One transaction for the batch; the failing message is split off, the rest are stored."""
    taken = await desk.receive(email("bob@example.com", "first", external_id="<taken@x>"))
    batch = [
        email("ann@example.com", "before", external_id="<a@x>", dedup_key=("imap", "1:1")),
        # the same Message-ID under another dedup key: the message's unique index refuses it
        email("eve@example.com", "clash", external_id="<taken@x>", dedup_key=("imap", "1:2")),
        email("ann@example.com", "after", external_id="<c@x>", dedup_key=("imap", "1:3")),
        telegram(ANN, "from telegram", dedup_key=("telegram", "u:9")),
    ]

    results = await desk.receive_many(batch)

    assert isinstance(results[1], IntegrityError)
    before, after, chat = results[0], results[2], results[3]
    assert isinstance(before, Intake) and isinstance(after, Intake) and isinstance(chat, Intake)
    assert before.opened and after.ticket == before.ticket and not after.opened
    assert [m.text for m in await helpers.messages(database, before.ticket)] == ["before", "after"]
    assert [m.text for m in await helpers.messages(database, chat.ticket)] == ["from telegram"]
    assert len(await helpers.rows(database, Message)) == 4  # with the earlier "first"
    keys = {(k.source, k.key) for k in await helpers.rows(database, InboundKey)}
    assert ("imap", "1:2") not in keys, "nothing of the refused message was kept"
    assert {("imap", "1:1"), ("imap", "1:3"), ("telegram", "u:9")} <= keys
    addresses = {a.address for a in await helpers.rows(database, CustomerEmail)}
    assert addresses == {"bob@example.com", "ann@example.com"}
    assert taken.ticket != before.ticket


async def test_concurrent_callers_each_get_their_own_outcome_in_arrival_order(
    desk: Desk, database: Database
) -> None:
    """Concurrent messages share transactions, yet each caller sees only its own result."""
    await desk.receive(email("bob@example.com", "first", external_id="<taken@x>"))
    arrivals = [telegram(ANN, f"m{i}", dedup_key=("telegram", f"u:{i}")) for i in range(20)]
    arrivals[7] = email("eve@example.com", "clash", external_id="<taken@x>")
    arrivals[12] = telegram(ANN, "m3 again", dedup_key=("telegram", "u:3"))

    results = await asyncio.gather(*(desk.receive(m) for m in arrivals), return_exceptions=True)

    assert isinstance(results[7], IntegrityError)
    assert isinstance(results[12], Intake) and results[12].duplicate
    assert results[12].message_id == results[3].message_id  # type: ignore[union-attr]
    stored = [r for i, r in enumerate(results) if i not in (7, 12)]
    assert all(isinstance(r, Intake) and not r.duplicate for r in stored)
    [ticket] = {r.ticket for r in stored}  # type: ignore[union-attr]
    texts = [m.text for m in await helpers.messages(database, ticket)]
    assert texts == [f"m{i}" for i in range(20) if i not in (7, 12)], "one chat stays in order"


async def test_a_batch_sees_its_own_earlier_messages(
    desk: Desk, database: Database, clock: Clock
) -> None:
    """Within one transaction: a reopen, a follow-up, the receipt limit and a redelivery."""
    await add_agents(database, clock)
    n = (await desk.receive(telegram(ANN, "q"))).ticket
    await desk.close(n, AGENT)
    clock.advance(hours=1)
    reopened_at = clock.now
    batch = [
        telegram(ANN, "again", dedup_key=("telegram", "u:1"), received_at=reopened_at),
        telegram(ANN, "and more", received_at=reopened_at + timedelta(minutes=1)),
        telegram(ANN, "again", dedup_key=("telegram", "u:1")),
        *(email("loop@example.com", f"mail {i}", new_ticket=True) for i in range(5)),
    ]

    results = await desk.receive_many(batch)

    first, follow_up, redelivered, *mails = results
    assert isinstance(first, Intake) and first.ticket == n and first.reopened and first.receipt
    assert isinstance(follow_up, Intake) and follow_up.ticket == n and not follow_up.reopened
    assert isinstance(redelivered, Intake) and redelivered.duplicate
    assert redelivered.message_id == first.message_id
    ticket = await helpers.ticket(database, n)
    assert ticket.status == "open" and ticket.closed_at is None
    assert ticket.waiting_since == reopened_at, "the follow-up keeps the wait the reopen started"
    assert ticket.waiting_message_id == first.message_id
    assert [m.text for m in await helpers.messages(database, n)] == ["q", "again", "and more"]
    assert [getattr(m, "receipt", None) for m in mails] == [True, True, True, False, False]
    receipts = await helpers.outbox(
        database, OutboxRow.kind == "receipt", OutboxRow.route == "email"
    )
    assert len(receipts) == 3, "the per-address limit counts the batch's own receipts"
    notices = await helpers.outbox(database, OutboxRow.kind == "agent_notice")
    events = [row.payload["event"] for row in notices][-7:]
    assert events == ["reopened", "message", *["opened"] * 5]


async def test_a_batch_reads_its_senders_ahead_and_keeps_them_current(
    desk: Desk, database: Database
) -> None:
    """Senders are read once per batch; what the batch changes, its later messages see."""
    for i in range(2):  # two receipts to this address within the hour already
        await desk.receive(email("loop@example.com", f"earlier {i}", new_ticket=True))
    first = await desk.receive(telegram(ANN, "one", name="Ann"))
    await desk.request_new_ticket(telegram(ANN).customer)
    batch = [
        telegram(ANN, "a new topic", name="Ann Lee"),
        telegram(ANN, "more about it", name="Ann Lee"),
        email("new@example.com", "first mail", name="Neil", new_ticket=True),
        email("New@Example.com", "second mail", name="Neil", new_ticket=True),
        *(email("loop@example.com", f"mail {i}", new_ticket=True) for i in range(2)),
    ]

    topic, more, neil, neil_again, *loop = await desk.receive_many(batch)

    assert isinstance(topic, Intake) and topic.opened and topic.ticket != first.ticket
    assert isinstance(more, Intake) and more.ticket == topic.ticket, "/new was used up once"
    assert isinstance(neil, Intake) and isinstance(neil_again, Intake)
    assert [getattr(r, "receipt", None) for r in loop] == [True, False], "3 an hour, not 4"
    names = sorted(c.name for c in await helpers.rows(database, Customer))
    assert names == ["Ann Lee", "Bob", "Neil"], "one customer per sender, names kept current"
    assert not (await helpers.rows(database, Customer, Customer.name == "Ann Lee"))[
        0
    ].wants_new_ticket
    opened = {(await helpers.ticket(database, r.ticket)).customer_id for r in (neil, neil_again)}
    assert len(opened) == 1


async def test_a_mail_threads_onto_a_ticket_opened_earlier_in_its_batch(
    desk: Desk, database: Database
) -> None:
    batch = [
        email("bob@example.com", "first", external_id="<m1@x>", new_ticket=True),
        email("ann@example.com", "other", external_id="<a1@x>", new_ticket=True),
        email(
            "bob@example.com",
            "second",
            external_id="<m2@x>",
            new_ticket=True,
            thread_refs=("<unknown@x>", "<m1@x>"),
        ),
    ]

    first, other, second = await desk.receive_many(batch)

    assert isinstance(first, Intake) and isinstance(second, Intake) and isinstance(other, Intake)
    assert second.ticket == first.ticket and not second.opened and other.ticket != first.ticket
    [receipt] = await helpers.outbox(
        database, OutboxRow.kind == "receipt", OutboxRow.ticket_id == first.ticket
    )
    assert receipt.payload["references"] == ["<m1@x>"]
    assert receipt.payload["subject_line"].startswith(f"[#{first.ticket}]")
    kept = {(m.message_id, m.ticket_id) for m in await helpers.rows(database, MailId)}
    assert {("<m1@x>", first.ticket), ("<m2@x>", first.ticket), ("<a1@x>", other.ticket)} <= kept
    assert (receipt.payload["message_id"], first.ticket) in kept
    assert len(kept) == 5  # three mails and two receipts
