"""Search, history and merge in the core (issue 15, points 1 and 3), on SQLite and PostgreSQL.

The assertions are what the database holds and what the outbox would send.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from alembic import command
from sqlalchemy import select, text, update

from accounts.lookups import customers_paying
from accounts.tables import Account, Payment
from supportbot import db
from tests import helpers
from tests.conftest import Clock, Database
from tickets.agents import add_agent
from tickets.desk import Desk
from tickets.errors import AgentNotFound, InvalidAction, TicketNotFound
from tickets.model import Direction, OutboxKind, Role, TicketStatus
from tickets.search import QueryKind, SearchQuery, parse_query
from tickets.tables import AuditEntry, MailId, Message, OutboxRow, Ticket, TicketTag

AGENT = 500


@pytest.fixture
async def agent(database: Database, clock: Clock) -> int:
    async with database.sessions.begin() as session:
        await add_agent(session, AGENT, Role.AGENT, "Sam", at=clock(), actor="test")
    return AGENT


async def found(desk: Desk, query: str, customers: list[int] | None = None) -> list[int]:
    parsed = parse_query(query)
    assert parsed is not None
    return [t.number for t in await desk.search.search(parsed, AGENT, customers or [])]


async def test_text_search_finds_messages_and_subjects_newest_first(desk: Desk, agent: int) -> None:
    a = await desk.receive(helpers.telegram(1, "My withdrawal to the Tron wallet is stuck"))
    b = await desk.receive(helpers.email("bob@example.org", "hello", subject="Tron refund"))
    c = await desk.receive(helpers.telegram(3, "invoice please", name="Cy"))
    assert await found(desk, "tron") == [b.ticket, a.ticket]
    assert await found(desk, "TRON wallet") == [a.ticket]  # every word, any case
    assert await found(desk, "invoice") == [c.ticket]
    assert await found(desk, "nowhere") == []
    # FTS5 operators and quotes in the query are only words
    assert await found(desk, 'tron" OR "invoice') == []
    assert await found(desk, "wallet* (tron)") == [a.ticket]


async def test_search_follows_edits_and_moves(desk: Desk, agent: int) -> None:
    first = await desk.receive(helpers.telegram(1, "parrot"))
    async with desk.sessions.begin() as session:
        await session.execute(
            update(Message).where(Message.id == first.message_id).values(text="pelican")
        )
    assert await found(desk, "parrot") == []
    assert await found(desk, "pelican") == [first.ticket]


async def test_email_number_and_tx_queries(database: Database, desk: Desk, agent: int) -> None:
    a = await desk.receive(helpers.email("Ann@Example.org", "hi", name="Ann"))
    b = await desk.receive(helpers.telegram(2, "hello"))
    assert await found(desk, "ann@example.org") == [a.ticket]
    assert await found(desk, "ANN@example.org") == [a.ticket]
    assert await found(desk, f"#{b.ticket}") == [b.ticket]
    assert await found(desk, "#999999") == []

    tx = "0x" + "ab" * 32
    async with database.sessions.begin() as session:
        account = Account(
            email="ann@example.org",
            created_at=desk._clock(),
            updated_at=desk._clock(),
        )
        session.add(account)
        await session.flush()
        session.add(
            Payment(
                account_id=account.id,
                external_id="p1",
                purpose="topup",
                amount_usd=Decimal("20"),
                crypto_amount="20",
                currency="USDT",
                chain="tron",
                wallet="TWallet",
                tx_hash=tx,
                paid_at=desk._clock(),
            )
        )
    customers = await customers_paying(database.sessions, tx.upper().replace("0X", "0x"))
    assert customers and await found(desk, tx, customers) == [a.ticket]
    assert await customers_paying(database.sessions, "0x" + "cd" * 32) == []


async def test_history_lists_the_customers_other_tickets(desk: Desk, agent: int) -> None:
    first = await desk.receive(helpers.telegram(1, "one"))
    await desk.close(first.ticket, AGENT)
    second = await desk.receive(helpers.telegram(1, "two", new_ticket=True))
    other = await desk.receive(helpers.telegram(2, "someone else"))
    this, earlier = await desk.search.history(second.ticket, AGENT)
    assert this.number == second.ticket and this.customer == "Ann"
    assert [t.number for t in earlier] == [first.ticket]
    assert earlier[0].status == TicketStatus.CLOSED.value
    _, none = await desk.search.history(other.ticket, AGENT)
    assert none == []
    with pytest.raises(TicketNotFound):
        await desk.search.history(9999, AGENT)
    with pytest.raises(AgentNotFound):
        await desk.search.history(second.ticket, 12345)
    with pytest.raises(AgentNotFound):
        await desk.search.search(SearchQuery(QueryKind.TEXT, "one"), 12345)


async def test_merge_moves_messages_thread_keys_waits_and_tells_both_channels(
    database: Database, desk: Desk, clock: Clock, agent: int
) -> None:
    # The same person: first by email (earlier, still unanswered), then on Telegram.
    mail = await desk.receive(
        helpers.email("bob@example.org", "card declined", subject="Payment", external_id="<m1@x>")
    )
    async with database.sessions.begin() as session:
        session.add(TicketTag(ticket_id=mail.ticket, tag="billing", created_at=clock()))
    mailed = await helpers.ticket(database, mail.ticket)
    clock.advance(hours=2)
    chat = await desk.receive(helpers.telegram(7, "any news?", name="Bob"))
    done = await desk.merger.merge(mail.ticket, chat.ticket, AGENT)

    assert done.merged == mail.ticket and done.survivor == chat.ticket
    assert done.messages == 1 and done.other_customer
    assert done.told == ("email (bob@example.org)", "Telegram")
    survivor = await helpers.ticket(database, chat.ticket)
    merged = await helpers.ticket(database, mail.ticket)
    texts = [m.text for m in await helpers.messages(database, chat.ticket)]
    assert texts == ["card declined", "any news?"]
    # the earlier unanswered wait is the one kept: its due time was promised first
    assert survivor.waiting_since == mailed.waiting_since
    assert survivor.due_at == mailed.due_at
    assert survivor.waiting_message_id == mail.message_id
    assert merged.status == TicketStatus.CLOSED.value and merged.due_at is None
    [pointer] = await helpers.messages(database, mail.ticket)
    assert pointer.direction == Direction.NOTE.value
    assert pointer.text.startswith(f"Merged into #{chat.ticket}")
    async with database.sessions() as session:
        keys = (await session.scalars(select(MailId.ticket_id))).all()
        tags = (
            await session.scalars(select(TicketTag.tag).where(TicketTag.ticket_id == chat.ticket))
        ).all()
    assert set(keys) == {chat.ticket} and list(tags) == ["billing"]

    notices = await helpers.outbox(
        database, OutboxRow.kind == OutboxKind.NOTICE.value, OutboxRow.ticket_id == chat.ticket
    )
    assert sorted((n.route, n.recipient) for n in notices) == [
        ("email", "bob@example.org"),
        ("telegram", "7"),
    ]
    for n in notices:
        assert f"#{mail.ticket} has been joined with ticket #{chat.ticket}" in n.payload["text"]
    [mailed_notice] = [n for n in notices if n.route == "email"]
    assert mailed_notice.payload["subject_line"].startswith(f"[#{chat.ticket}]")
    assert "<m1@x>" in mailed_notice.payload["references"]

    actions = {(e.action, e.ticket_id) for e in await helpers.audit(database)}
    assert {("merge", chat.ticket), ("merged", mail.ticket)} <= actions

    # Later mail in the old thread joins the survivor.
    later = await desk.receive(
        helpers.email("bob@example.org", "still declined", thread_refs=("<m1@x>",))
    )
    assert later.ticket == chat.ticket


async def test_merge_keeps_the_survivors_wait_when_it_is_earlier(
    database: Database, desk: Desk, clock: Clock, agent: int
) -> None:
    first = await desk.receive(helpers.telegram(1, "first"))
    clock.advance(hours=1)
    second = await desk.receive(helpers.email("ann@example.org", "second"))
    before = await helpers.ticket(database, first.ticket)
    done = await desk.merger.merge(second.ticket, first.ticket, AGENT)
    after = await helpers.ticket(database, first.ticket)
    assert after.waiting_since == before.waiting_since and after.due_at == before.due_at
    assert done.messages == 1


async def test_merge_refusals_change_nothing(
    database: Database, desk: Desk, clock: Clock, agent: int
) -> None:
    a = await desk.receive(helpers.telegram(1, "a"))
    b = await desk.receive(helpers.telegram(2, "b"))
    c = await desk.receive(helpers.telegram(3, "c"))
    with pytest.raises(InvalidAction, match="into itself"):
        await desk.merger.merge(a.ticket, a.ticket, AGENT)
    with pytest.raises(TicketNotFound):
        await desk.merger.merge(999, a.ticket, AGENT)
    with pytest.raises(AgentNotFound):
        await desk.merger.merge(b.ticket, a.ticket, 12345)
    await desk.close(c.ticket, AGENT)
    with pytest.raises(InvalidAction, match="closed; reopen it first"):
        await desk.merger.merge(a.ticket, c.ticket, AGENT)
    await desk.merger.merge(b.ticket, a.ticket, AGENT)
    # b is closed now: nothing merges into it, and it cannot be merged a second time
    with pytest.raises(InvalidAction, match="closed"):
        await desk.merger.merge(a.ticket, b.ticket, AGENT)
    await desk.reopen(b.ticket, AGENT)
    await desk.reopen(c.ticket, AGENT)
    with pytest.raises(InvalidAction, match=f"already merged into #{a.ticket}"):
        await desk.merger.merge(b.ticket, c.ticket, AGENT)
    assert [m.text for m in await helpers.messages(database, a.ticket)] == ["a", "b"]
    assert [e.action for e in await helpers.audit(database) if e.action.startswith("merge")] == [
        "merge",
        "merged",
    ]


@pytest.mark.timeout(60)
async def test_migration_indexes_rows_already_there(database: Database, desk: Desk) -> None:
    """Rows written before migration 0013 are found after it."""
    old = await desk.receive(helpers.email("ann@example.org", "albatross", subject="Seabird"))

    def down(connection: object) -> None:
        # 0009 is 0013's down revision.
        command.downgrade(db._alembic_config(connection), "0009")  # type: ignore[arg-type]

    def up(connection: object) -> None:
        command.upgrade(db._alembic_config(connection), "head")  # type: ignore[arg-type]

    try:
        async with database.engine.begin() as connection:
            await connection.run_sync(down)
        async with database.engine.begin() as connection:
            await connection.execute(
                text("UPDATE messages SET text = 'cormorant' WHERE id = :id"),
                {"id": old.message_id},
            )
    finally:
        async with database.engine.begin() as connection:
            await connection.run_sync(up)
    async with database.sessions.begin() as session:
        await add_agent(session, AGENT, Role.AGENT, "Sam", at=desk._clock(), actor="test")
    assert await found(desk, "cormorant") == [old.ticket]
    assert await found(desk, "seabird") == [old.ticket]
    assert await found(desk, "albatross") == []


async def test_audit_entry_of_merge_names_both(
    database: Database, desk: Desk, clock: Clock, agent: int
) -> None:
    a = await desk.receive(helpers.telegram(1, "a"))
    clock.advance(minutes=5)
    b = await desk.receive(helpers.telegram(1, "b", new_ticket=True))
    await desk.merger.merge(b.ticket, a.ticket, AGENT)
    async with database.sessions() as session:
        entry = await session.scalar(select(AuditEntry).where(AuditEntry.action == "merge"))
        closed = await session.get(Ticket, b.ticket)
    assert entry is not None and entry.actor == f"agent:{AGENT}"
    assert entry.details == {"merged": b.ticket, "messages": 1, "other_customer": False}
    assert closed is not None and closed.closed_at == clock() - timedelta(0)


async def test_later_messages_of_a_merged_ticket_join_the_survivor(
    database: Database, desk: Desk, clock: Clock, agent: int
) -> None:
    """Telegram merged into email: the Telegram customer's next message, and a mail tagged with
    the merged ticket's number, both land in the survivor."""
    mail = await desk.receive(helpers.email("bob@example.org", "first by mail"))
    chat = await desk.receive(helpers.telegram(7, "then on Telegram", name="Bob"))
    await desk.merger.merge(chat.ticket, mail.ticket, AGENT)
    clock.advance(hours=1)
    again = await desk.receive(helpers.telegram(7, "and again", name="Bob"))
    assert again.ticket == mail.ticket and not again.opened and not again.reopened
    tagged = await desk.receive(
        helpers.email(
            "bob@example.org", "tagged", subject=f"Re: [#{chat.ticket}] hi", ticket_tag=chat.ticket
        )
    )
    assert tagged.ticket == mail.ticket
    merged = await helpers.ticket(database, chat.ticket)
    assert merged.status == TicketStatus.CLOSED.value and merged.merged_into_id == mail.ticket
    texts = [m.text for m in await helpers.messages(database, mail.ticket)]
    assert texts == ["first by mail", "then on Telegram", "and again", "tagged"]
