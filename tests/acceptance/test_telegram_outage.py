"""A 403 on the agents' group is an outage, not a verdict: the running service loses nothing.

The bot is removed from the agents' group of the local Bot API server for ten seconds, as an
admin editing the group's permissions might do; a customer writes meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from tests import helpers
from tests.conftest import Database
from tests.telegram_harness import running_desk
from tickets.tables import OutboxRow

OUTAGE = 10.0


@pytest.mark.parametrize("forum", [False, True], ids=["cards", "topics"])
@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_follow_up_written_during_a_ten_second_403_reaches_the_agents(
    database: Database, caplog: pytest.LogCaptureFixture, forum: bool
) -> None:
    caplog.set_level(logging.WARNING, logger="bot")
    async with running_desk(database, forum=forum) as desk:
        ann, ticket = await desk.customer_opens("Ann", "My deposit is missing")
        await desk.card_of(ticket.id)
        removed = time.monotonic()
        desk.server.set_bot_status(desk.group, "kicked")
        await desk.server.user_sends(ann, text="It was 50 USDT on Tron, tx 0xabc")

        alert = await desk.wait_customer(desk.admin, "cannot post in the agents' group")
        assert "bot was kicked" in (alert.text or "")
        [row] = await helpers.outbox(
            database, OutboxRow.route == "agents", OutboxRow.status == "pending"
        )
        assert row.attempts == 0 and row.last_error is None, "an outage uses up no attempts"
        await asyncio.sleep(max(OUTAGE - (time.monotonic() - removed), 0))
        assert "It was 50 USDT" not in "\n".join(desk.group_texts())
        desk.server.set_bot_status(desk.group, "administrator")

        follow_up = await desk.wait_group("It was 50 USDT on Tron, tx 0xabc", within=60)
        back = await desk.wait_customer(desk.admin, "can post in the agents' group")
        assert "again" in (back.text or "")
        if forum:
            assert follow_up.thread_id == await desk.topic_of(ticket.id)

        texts = desk.group_texts()
        assert sum("It was 50 USDT" in text for text in texts) == 1
        assert not any("could not be delivered" in text for text in texts)
        assert desk.server.sent_to(desk.agent.id) == [], "only admins are alerted"
    rows = await helpers.outbox(database, OutboxRow.route == "agents")
    assert {row.status for row in rows} == {"delivered"}
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("cannot post in the agents' group" in message for message in errors), errors
    assert any("works again" in r.getMessage() for r in caplog.records)
