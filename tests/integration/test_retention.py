"""Retention: what is older than RETENTION_DAYS is forgotten in batches; nothing else is."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from tests import helpers
from tests.conftest import START, Clock, Database
from tests.helpers import email, telegram
from tickets.desk import Desk
from tickets.model import Intake
from tickets.retention import Pruned, prune_once
from tickets.tables import InboundKey, Message, OutboxRow, RateWindow

KEEP = timedelta(days=30)


async def _windows(database: Database) -> list[RateWindow]:
    async with database.sessions() as session:
        return list(await session.scalars(select(RateWindow)))


async def _mark(database: Database, ticket: int, status: str, at: object) -> None:
    """The outbox worker's verdict on a ticket's rows, as it would have written it."""
    async with database.sessions.begin() as session:
        await session.execute(
            update(OutboxRow)
            .where(OutboxRow.ticket_id == ticket)
            .values(status=status, delivered_at=at if status == "delivered" else None)
        )


async def test_old_rows_are_pruned_young_and_undelivered_ones_kept_and_dedup_holds(
    desk: Desk, database: Database, clock: Clock
) -> None:
    old_mail = email("ann@example.com", "old", external_id="<old@x>", dedup_key=("imap", "7:1"))
    old_chat = telegram(101, "old chat", external_id="101:1", dedup_key=("telegram", "101:1"))
    stuck = email("dan@example.com", "stuck", external_id="<stuck@x>", dedup_key=("imap", "7:2"))
    first = await desk.receive(old_mail)
    second = await desk.receive(old_chat)
    third = await desk.receive(stuck)
    await _mark(database, first.ticket, "delivered", START + timedelta(hours=1))
    await _mark(database, second.ticket, "delivered", START + timedelta(hours=1))
    await _mark(database, third.ticket, "failed", None)  # given up: kept for the agents
    clock.advance(days=29)
    young_mail = email("cat@example.com", "young", external_id="<y@x>", dedup_key=("imap", "7:3"))
    young = await desk.receive(young_mail)
    await _mark(database, young.ticket, "delivered", clock.now)
    pending_old = await desk.receive(telegram(101, "later", dedup_key=("telegram", "101:2")))
    rows_before = await helpers.rows(database, OutboxRow)
    old_delivered = [
        r for r in rows_before if r.ticket_id in (first.ticket, second.ticket) and r.delivered_at
    ]
    assert len(old_delivered) >= 4  # receipts and agents' notices of the two old tickets
    windows_before = await _windows(database)
    spent = {(w.rule, w.holder) for w in windows_before if "cat@" not in w.holder}
    assert spent, "the old mail counted against the receipt and new-ticket limits"

    now = START + timedelta(days=31)
    pruned = await prune_once(database.sessions, now=now, keep=KEEP, batch=2, pause=0)

    assert pruned.outbox == len(old_delivered)
    assert pruned.inbound_keys == 3  # imap 7:1, telegram 101:1, imap 7:2
    kept_rows = await helpers.rows(database, OutboxRow)
    assert {r.id for r in kept_rows} == {r.id for r in rows_before} - {r.id for r in old_delivered}
    assert {r.status for r in kept_rows if r.ticket_id == third.ticket} == {"failed"}
    assert any(r.ticket_id == young.ticket for r in kept_rows), "young delivered rows stay"
    assert any(r.status == "pending" for r in kept_rows), "undelivered rows stay, however old"
    keys = {(k.source, k.key) for k in await helpers.rows(database, InboundKey)}
    assert keys == {("imap", "7:3"), ("telegram", "101:2")}
    windows = {(w.rule, w.holder) for w in await _windows(database)}
    assert pruned.rate_windows == len(spent)
    assert not windows & spent
    assert any("cat@" in holder for _, holder in windows), "a window still counting stays"
    assert pending_old.ticket == second.ticket

    # Dedup holds for what can still arrive: a young key is still known…
    again = await desk.receive(young_mail)
    assert again.duplicate and again.ticket == young.ticket
    # …and an old mail or chat message that came back anyway is not stored twice: the
    # messages' unique (channel, Message-ID / chat:message) refuses it.
    messages = len(await helpers.rows(database, Message))
    outcomes = await desk.receive_many([old_mail, old_chat])
    assert all(isinstance(outcome, IntegrityError) for outcome in outcomes), outcomes
    assert len(await helpers.rows(database, Message)) == messages

    assert await prune_once(database.sessions, now=now, keep=KEEP, pause=0) == Pruned()


async def test_a_spent_window_pruned_then_used_again_counts_as_before(
    desk: Desk, database: Database, clock: Clock
) -> None:
    """After its window is forgotten the sender gets a receipt again, as they would have."""
    for n in range(4):  # 3 receipts per address per hour: the fourth mail gets none
        await desk.receive(email("eve@example.com", f"m{n}", new_ticket=True))
    receipts = await helpers.outbox(database, OutboxRow.kind == "receipt")
    assert len(receipts) == 3
    clock.advance(days=40)
    pruned = await prune_once(database.sessions, now=clock.now, keep=KEEP, pause=0)
    assert pruned.rate_windows >= 1
    result = await desk.receive(email("eve@example.com", "much later", new_ticket=True))
    assert isinstance(result, Intake)
    assert len(await helpers.outbox(database, OutboxRow.kind == "receipt")) == 4


@pytest.mark.parametrize(("keep", "batch"), [(timedelta(hours=23), 1000), (timedelta(days=30), 0)])
async def test_a_retention_shorter_than_a_day_or_an_empty_batch_is_refused(
    database: Database, keep: timedelta, batch: int
) -> None:
    with pytest.raises(ValueError, match="at least"):
        await prune_once(database.sessions, now=START, keep=keep, batch=batch)
