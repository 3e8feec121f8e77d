"""`/report` and `/stats` through the real service and the local Telegram server."""

from __future__ import annotations

from sandbox.telegram import SentMessage
from sandbox.telegram.media import sniff_image
from tests import helpers
from tests.conftest import Database
from tests.report_fixtures import seed_october
from tests.telegram_harness import Desk, running_desk
from tickets.tables import AuditEntry


async def photos(desk: Desk, count: int) -> list[SentMessage]:
    def sent() -> list[SentMessage]:
        found = [m for m in desk.server.sent_to(desk.group) if m.method == "sendPhoto"]
        return found if len(found) >= count else []

    return await desk.server.wait_for(sent, 30)


async def test_report_of_a_past_month_sends_the_figures_and_the_chart(database: Database) -> None:
    tickets = await seed_october(database)
    async with running_desk(database) as desk:
        await desk.server.user_sends(desk.agent, chat=desk.group, text="/report 2026-10")
        summary = await desk.wait_group("SLA report October 2026")
        text = summary.text or ""
        assert "All                6    4.0   30.0  66.7%  83.3%" in text
        assert " pro               2    2.0   30.0  50.0%  50.0%" in text
        assert " basic             4    4.0    8.0  75.0% 100.0%" in text
        assert " Report Ada        3    5.0   30.0  66.7%  66.7%" in text
        assert "Breaches: 1" in text
        assert f"#{tickets[3]} pro email · Report Ada · 30.0 h" in text
        assert summary.entities[0]["type"] == "pre"

        [photo] = await photos(desk, 1)
        assert photo.media == "photo" and photo.file_bytes is not None
        kind, width, height = sniff_image(photo.file_bytes) or ("", 0, 0)
        assert kind == "png" and width >= 800 and height >= 600
        assert "Response times October 2026" in (photo.text or "")
        assert photo.reply_to is not None


async def test_report_refuses_a_bad_month_and_audits_it(database: Database) -> None:
    async with running_desk(database) as desk:
        await desk.server.user_sends(desk.agent, chat=desk.group, text="/report 2026-13")
        refusal = await desk.wait_group("⚠️")
        assert refusal.text == "⚠️ there is no month '2026-13'"
        await desk.server.user_sends(desk.admin, chat=desk.group, text="/report 2999-01")
        await desk.wait_group("2999-01 has not begun yet")
        refused = [
            e.details["reason"]
            for e in await helpers.rows(database, AuditEntry)
            if e.action == "refused:report"
        ]
        assert refused == ["there is no month '2026-13'", "2999-01 has not begun yet"]
        assert not [m for m in desk.server.sent_to(desk.group) if m.method == "sendPhoto"]


async def test_stats_and_this_months_report_count_a_real_answer(database: Database) -> None:
    async with running_desk(database) as desk:
        ann, ticket = await desk.customer_opens("Ann", "Where is my top-up?")
        await desk.server.user_sends(desk.agent, chat=desk.group, text="/stats")
        before = await desk.wait_group("waiting on us")
        assert (before.text or "").splitlines()[-1] == "Today: 0 responses"
        assert "1 open · 1 waiting on us · 0 at risk · 0 breached" in (before.text or "")

        topic = await desk.topic_of(ticket.id)
        await desk.server.user_sends(
            desk.agent, chat=desk.group, thread_id=topic, text="It is there now."
        )
        await desk.wait_customer(ann, "It is there now.")
        await desk.wait_group("sent on Telegram")
        await desk.server.user_sends(desk.agent, chat=desk.group, text="/stats")
        after = await desk.wait_group("0 waiting on us")
        # Seconds after the customer wrote: well under 0.05 business hours.
        assert (after.text or "").splitlines()[-1] == "Today: 1 response, median 0.0 business hours"

        await desk.server.user_sends(desk.agent, chat=desk.group, text="/report")
        summary = await desk.wait_group("(so far, to ")
        assert "All                1    0.0    0.0 100.0% 100.0%" in (summary.text or "")
        assert " Sam               1    0.0    0.0 100.0% 100.0%" in (summary.text or "")
        await photos(desk, 1)
