"""End to end: the satisfaction ask (issue 15, point 7) through the running service.

Telegram: after an agent closes an answered ticket, the customer gets one ask with five signed
buttons; the first press counts, a tampered one is refused. Email: the ask carries signed links
to the service's own endpoint on `CSAT_LISTEN`, which records the score on its confirm button.
The scores show per agent in `/report`.
"""

from __future__ import annotations

import re

from aiohttp import ClientSession
from sqlalchemy import select

from tests import helpers
from tests.acceptance.test_agents_console import says
from tests.acceptance.test_refunds_telegram import press
from tests.conftest import Database
from tests.mailservers import (  # noqa: F401 - fixtures are found by name
    Dovecot,
    SmtpServer,
    customer_mail,
    dovecot_fixture,
    eventually,
    free_port,
    mailbox_fixture,
    service_mail_settings,
    smtp_server_fixture,
    tls_files_fixture,
)
from tests.telegram_harness import running_desk
from tickets.tables import SatisfactionAsk


def csat_settings(port: int) -> dict[str, str]:
    return {
        "CSAT_ENABLED": "true",
        "CSAT_BASE_URL": f"http://127.0.0.1:{port}",
        "CSAT_LISTEN": f"127.0.0.1:{port}",
    }


async def scores(database: Database) -> list[int | None]:
    async with database.sessions() as session:
        return list(await session.scalars(select(SatisfactionAsk.score)))


async def test_telegram_customer_scores_with_a_button_once(database: Database) -> None:
    async with running_desk(database, extra=csat_settings(free_port())) as desk:
        ann, ticket = await desk.customer_opens("Ann", "How do I top up?")
        n = ticket.id
        topic = await desk.topic_of(n)
        await desk.server.user_sends(
            desk.agent, chat=desk.group, text="Use /topup.", thread_id=topic
        )
        await desk.wait_group(f"✅ #{n}: reply sent on Telegram")
        await says(desk, desk.agent, "/close", thread_id=topic)
        ask = await desk.wait_customer(ann, f"Ticket #{n} is closed. How did we do?")
        buttons = ask.callback_data()
        assert len(buttons) == 5

        forged = buttons[3].replace(f":{n}:", f":{n + 1}:")
        assert await press(desk, ann, ask, forged, tampered=True) == "This button is not valid."
        assert await scores(database) == [None]
        assert await press(desk, ann, ask, buttons[3]) == "Thank you! Your score: 4/5."
        assert await scores(database) == [4]
        answer = await press(desk, ann, ask, buttons[0], tampered=True)  # its keyboard is gone
        assert answer == "Your score for this ticket was already counted. Thank you!"
        assert await scores(database) == [4]

        await desk.server.user_sends(desk.agent, chat=desk.group, text="/close")  # no ticket
        texts = [m.text or "" for m in desk.server.sent_to(ann)]
        assert sum("How did we do?" in t for t in texts) == 1

        await desk.server.user_sends(desk.agent, chat=desk.group, text="/report")
        report = (await desk.wait_group("SLA report")).text or ""
        assert re.search(r"^ Sam\s+1\s+4\.0$", report, re.MULTILINE), report


async def test_mail_customer_scores_through_the_signed_link(
    database: Database, dovecot: Dovecot, mailbox: str, smtp_server: SmtpServer
) -> None:
    port = free_port()
    settings = {**service_mail_settings(dovecot, mailbox, smtp_server), **csat_settings(port)}
    async with running_desk(database, extra=settings) as desk:
        dovecot.append(mailbox, customer_mail("Carol <carol@example.org>", "Top-up", "Missing?"))
        [ticket] = await eventually(lambda: helpers.tickets(database), within=15)
        n = ticket.id
        topic = await desk.topic_of(n)
        await desk.server.user_sends(desk.agent, chat=desk.group, text="Found it.", thread_id=topic)
        await desk.wait_group("sent by email to carol@example.org", within=15)
        await says(desk, desk.agent, "/close", thread_id=topic)

        async def asked() -> str:
            for received in smtp_server.received:
                body = received.message.get_body(("plain",))
                text = body.get_content() if body is not None else ""
                if "How did we do?" in text:
                    return str(text)
            return ""

        text = await eventually(asked, within=15)
        links = dict(re.findall(r"^(\d): (http\S+)$", text.replace("\r\n", "\n"), re.MULTILINE))
        assert sorted(links) == ["1", "2", "3", "4", "5"]
        async with ClientSession() as http:
            async with http.get(links["5"]) as shown:
                assert shown.status == 200 and "5/5" in await shown.text()
            assert await scores(database) == [None], "a fetched link gives no score"
            async with http.post(links["5"]) as posted:
                assert f"Your score for ticket #{n}: 5/5" in await posted.text()
            async with http.post(links["2"]) as again:
                assert "already counted" in await again.text()
            tampered = links["2"][:-3] + "AAA"
            async with http.post(tampered) as refused:
                assert refused.status == 403
        assert await scores(database) == [5]
