"""Satisfaction (issue 15, point 7): one ask per ticket after a close, the first score counts,
signed links by mail served by the service's endpoint, scores per agent in the report."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from sqlalchemy import select

from supportbot.web import score_app
from tests import helpers
from tests.conftest import Clock, Database
from tests.helpers import email, telegram
from tickets.agents import add_agent
from tickets.desk import Desk
from tickets.model import Role
from tickets.outbox import Delivery
from tickets.policy import SlaPolicy
from tickets.rendering import Templates
from tickets.reports import monthly
from tickets.satisfaction import Satisfaction, Scored, ScoreLinks
from tickets.tables import OutboxRow, SatisfactionAsk

AGENT, ADMIN = 9002, 9001
LINKS = ScoreLinks("a test secret of some length", "https://support.example.com/")


def asking_desk(
    database: Database, policy: SlaPolicy, clock: Clock, *, auto_close_days: int = 0
) -> Desk:
    satisfaction = Satisfaction(database.sessions, Templates(), LINKS, clock=clock)
    return Desk(
        database.sessions,
        policy,
        Templates(),
        clock=clock,
        satisfaction=satisfaction,
        auto_close_days=auto_close_days,
    )


async def add_agents(database: Database, clock: Clock) -> None:
    async with database.sessions.begin() as session:
        await add_agent(session, AGENT, Role.AGENT, "Sam", at=clock(), actor="test")
        await add_agent(session, ADMIN, Role.ADMIN, "Ada", at=clock(), actor="test")


async def answer(desk: Desk, database: Database, clock: Clock, number: int, agent: int) -> None:
    await desk.reply(number, agent, "Here is how.")
    async with database.sessions.begin() as session:
        rows = await helpers.rows(database, OutboxRow, OutboxRow.kind == "reply")
        stored = await session.get(OutboxRow, rows[-1].id)
        assert stored is not None
        await desk.delivered(session, [Delivery(stored, clock.now, f"1:{stored.id}")])


async def asks(database: Database) -> list[OutboxRow]:
    rows = await helpers.outbox(database, OutboxRow.kind == "notice")
    return [r for r in rows if r.payload.get("event") == "csat"]


async def test_one_ask_per_ticket_after_a_close_with_an_answer(
    database: Database, policy: SlaPolicy, clock: Clock
) -> None:
    await add_agents(database, clock)
    desk = asking_desk(database, policy, clock)
    answered = await desk.receive(telegram(1001, "question"))
    unanswered = await desk.receive(telegram(1002, "another"))
    await answer(desk, database, clock, answered.ticket, AGENT)
    await desk.close(answered.ticket, AGENT)
    await desk.close(unanswered.ticket, AGENT)
    [ask] = await asks(database)
    assert ask.recipient == "1001" and ask.payload["csat"] == answered.ticket
    assert ask.payload["text"].startswith(f"Ticket #{answered.ticket} is closed. How did we do?")
    assert "https://" not in ask.payload["text"], "Telegram gets buttons, not links"

    await desk.reopen(answered.ticket, AGENT)
    await desk.receive(telegram(1001, "one more thing"))
    await answer(desk, database, clock, answered.ticket, ADMIN)
    await desk.close(answered.ticket, ADMIN)
    assert len(await asks(database)) == 1, "never more than one ask per ticket"


async def test_off_by_default(desk: Desk, database: Database, clock: Clock) -> None:
    await add_agents(database, clock)
    intake = await desk.receive(telegram(1001, "question"))
    await answer(desk, database, clock, intake.ticket, AGENT)
    await desk.close(intake.ticket, AGENT)
    assert await asks(database) == []


async def test_mail_gets_signed_links_and_the_first_score_counts(
    database: Database, policy: SlaPolicy, clock: Clock
) -> None:
    await add_agents(database, clock)
    desk = asking_desk(database, policy, clock)
    intake = await desk.receive(email("bob@example.com", "question"))
    n = intake.ticket
    await answer(desk, database, clock, n, AGENT)
    await desk.close(n, AGENT)
    [ask] = await asks(database)
    assert ask.route == "email" and ask.recipient == "bob@example.com"
    assert ask.payload["message_id"] and ask.payload["subject_line"].startswith(f"[#{n}]")
    urls = re.findall(r"^(\d): (\S+)$", ask.payload["text"], re.MULTILINE)
    assert [score for score, _ in urls] == ["1", "2", "3", "4", "5"]
    for score, url in urls:
        assert url.startswith(f"https://support.example.com/csat/{n}/{score}/")
        token = url.rsplit("/", 1)[1]
        assert LINKS.check(n, int(score), token)
        assert not LINKS.check(n + 1, int(score), token), "bound to its ticket"
        assert not LINKS.check(n, 6 - int(score) if score != "3" else 4, token), "and its score"

    scores = desk.satisfaction
    assert scores is not None
    assert await scores.record(n, 9) is Scored.NOT_ASKED
    assert await scores.record(n + 5, 3) is Scored.NOT_ASKED
    assert await scores.record(n, 4) is Scored.RECORDED
    assert await scores.record(n, 1) is Scored.ALREADY
    async with database.sessions() as session:
        stored = (await session.scalars(select(SatisfactionAsk))).one()
    assert (stored.score, stored.answered_at, stored.channel) == (4, clock.now, "email")


async def test_a_telegram_score_counts_only_from_the_tickets_customer(
    database: Database, policy: SlaPolicy, clock: Clock
) -> None:
    await add_agents(database, clock)
    desk = asking_desk(database, policy, clock)
    intake = await desk.receive(telegram(1001, "question"))
    await answer(desk, database, clock, intake.ticket, AGENT)
    await desk.close(intake.ticket, AGENT)
    scores = desk.satisfaction
    assert scores is not None
    assert await scores.record(intake.ticket, 5, telegram_id=1002) is Scored.NOT_ASKED
    assert await scores.record(intake.ticket, 5, telegram_id=1001) is Scored.RECORDED


async def test_auto_close_asks_too(database: Database, policy: SlaPolicy, clock: Clock) -> None:
    await add_agents(database, clock)
    desk = asking_desk(database, policy, clock, auto_close_days=1)
    intake = await desk.receive(telegram(1001, "question"))
    await answer(desk, database, clock, intake.ticket, AGENT)
    clock.advance(days=1)
    await desk.pending.sweep()
    assert [a.payload["csat"] for a in await asks(database)] == [intake.ticket]


async def test_report_shows_scores_per_agent(
    database: Database, policy: SlaPolicy, clock: Clock
) -> None:
    await add_agents(database, clock)
    desk = asking_desk(database, policy, clock)
    scores = desk.satisfaction
    assert scores is not None
    for user, agent, score in ((1001, AGENT, 5), (1002, AGENT, 4), (1003, ADMIN, 2)):
        intake = await desk.receive(telegram(user, "q"))
        await answer(desk, database, clock, intake.ticket, agent)
        await desk.close(intake.ticket, agent)
        assert await scores.record(intake.ticket, score) is Scored.RECORDED
    clock.advance(minutes=1)
    report, _ = await monthly.load(database.sessions, policy, clock())
    assert [(s.name, s.count, s.average) for s in report.satisfaction] == [
        ("Sam", 2, 4.5),
        ("Ada", 1, 2.0),
    ]
    text = monthly.report_text(Templates(), report)
    assert "Satisfaction (scores 1–5 given this month, per agent)" in text
    assert re.search(r"^ Sam\s+2\s+4\.5$", text, re.MULTILINE), text
    clock.now = datetime(2027, 1, 5, 9, tzinfo=UTC)
    later, _ = await monthly.load(database.sessions, policy, clock())
    assert later.satisfaction == (), "counted in the month the score was given"


async def test_the_link_endpoint_confirms_then_records_once(
    database: Database, policy: SlaPolicy, clock: Clock
) -> None:
    await add_agents(database, clock)
    desk = asking_desk(database, policy, clock)
    intake = await desk.receive(email("bob@example.com", "question"))
    n = intake.ticket
    await answer(desk, database, clock, n, AGENT)
    await desk.close(n, AGENT)
    assert desk.satisfaction is not None
    server = TestServer(score_app(desk.satisfaction))
    await server.start_server()
    try:
        async with ClientSession() as http:
            path = LINKS.url(n, 3).removeprefix("https://support.example.com")
            url = str(server.make_url(path))
            async with http.get(url) as shown:
                page = await shown.text()
                assert shown.status == 200 and "<form method='post'>" in page and "3/5" in page
            async with database.sessions() as session:
                assert (await session.scalars(select(SatisfactionAsk.score))).one() is None
            async with http.post(url) as posted:
                assert posted.status == 200
                assert f"Your score for ticket #{n}: 3/5" in await posted.text()
            async with http.post(url) as again:
                assert "was already counted" in await again.text()
            forged = str(server.make_url(f"/csat/{n}/5/{LINKS.token(n, 3)}"))
            for bad in (
                forged,
                str(server.make_url(f"/csat/{n}/3/x")),
                str(server.make_url("/csat/x/3/y")),
            ):
                async with http.post(bad) as refused:
                    assert refused.status in (403, 404)
    finally:
        await server.close()
    async with database.sessions() as session:
        assert (await session.scalars(select(SatisfactionAsk.score))).one() == 3
