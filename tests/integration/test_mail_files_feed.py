"""Mailed files in the agents' group (issue 15, point 2): the feed posts them as outbox rows,
paced within the group's budget, against the local Bot API server enforcing the same budget.

The group's window is shrunk (8 messages in 4 s, on the server and in the limiter alike) so
that a mail with more files than the budget has room for runs in seconds.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import telegram

from bot.buttons import ButtonSigner
from bot.limits import Budget, TelegramLimiter
from bot.senders import AgentFeed
from sandbox.telegram import LocalBotApi, RateLimits
from sandbox.telegram.limits import Window
from tests import helpers
from tests.conftest import Database
from tests.helpers import email
from tickets.desk import Desk
from tickets.model import Attachment, Route
from tickets.outbox import Wakeup
from tickets.outbox_worker import OutboxWorker
from tickets.policy import SlaPolicy
from tickets.ports import utcnow
from tickets.rendering import Templates
from tickets.tables import OutboxRow

GROUP_WINDOW = (8, 4.0)
PENDING_IN_GROUP = (OutboxRow.status == "pending", OutboxRow.route == Route.AGENTS.value)


async def settle(database: Database, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not await helpers.outbox(database, *PENDING_IN_GROUP):
            return
        await asyncio.sleep(0.05)
    rows = await helpers.outbox(database, *PENDING_IN_GROUP)
    raise AssertionError(
        f"still pending: {[(r.id, r.payload.get('event'), r.progress) for r in rows]}"
    )


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_many_mailed_files_all_arrive_in_order_without_a_429(
    database: Database, policy: SlaPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "true")
    count, seconds = GROUP_WINDOW
    limits = RateLimits(group_chat=Window(count, seconds))
    async with LocalBotApi(limits=limits) as server:
        bot = telegram.Bot(
            server.token, base_url=server.base_url, base_file_url=server.base_file_url
        )
        async with bot:
            group = server.add_group("Support agents", forum=True)
            limiter = TelegramLimiter(group_chat=Budget(count, seconds))
            wakeup = Wakeup()
            desk = Desk(database.sessions, policy, Templates(), clock=utcnow, wakeup=wakeup)
            feed = AgentFeed(
                bot, limiter, database.sessions, group.id, True, ButtonSigner("s"), utcnow
            )
            worker = OutboxWorker(
                database.sessions, {Route.AGENTS: feed}, desk, clock=utcnow, wakeup=wakeup
            )
            files = tuple(
                Attachment(
                    "document",
                    f"imap:1:1:{i}",
                    filename=f"log-{i:02}.txt",
                    mime_type="text/plain",
                    size=len(f"line {i}\n"),
                    data=f"line {i}\n".encode(),
                )
                for i in range(12)
            )
            intake = await desk.receive(email("carol@example.org", "logs", attachments=files))
            stop = asyncio.Event()
            task = asyncio.create_task(worker.run(stop, poll=0.2))
            try:
                await settle(database, 45)
            finally:
                stop.set()
                wakeup()
                await asyncio.wait_for(task, 10)

    [topic] = server.topics(group)
    posted = [m for m in server.sent_to(group, topic.thread_id) if m.method == "sendDocument"]
    assert [m.file_name for m in posted] == [f"log-{i:02}.txt" for i in range(12)]
    assert [m.file_bytes for m in posted] == [f"line {i}\n".encode() for i in range(12)]
    assert all((m.text or "").startswith(f"📎 #{intake.ticket} · log-") for m in posted)
    assert server.stats.too_many_requests_total == 0
    stamps = sorted(m.time for m in server.sent_to(group))
    assert len(stamps) > count, "more messages than one window holds: pacing was needed"
    for i in range(len(stamps) - count):
        assert stamps[i + count] - stamps[i] >= seconds, "never more than the budget in a window"
