"""End to end: a customer emails, an agent answers from Telegram, the customer answers back."""

from __future__ import annotations

from email.utils import getaddresses

from tests import helpers
from tests.conftest import Database
from tests.mailservers import (  # noqa: F401 - fixtures are found by name
    SUPPORT,
    Dovecot,
    Received,
    SmtpServer,
    customer_mail,
    dovecot_fixture,
    eventually,
    mailbox_fixture,
    service_mail_settings,
    smtp_server_fixture,
    tls_files_fixture,
)
from tests.telegram_harness import running_desk
from tickets.tables import Message


async def test_mail_answered_from_telegram_threads_both_ways(
    database: Database, dovecot: Dovecot, mailbox: str, smtp_server: SmtpServer
) -> None:
    settings = service_mail_settings(dovecot, mailbox, smtp_server)
    async with running_desk(database, extra=settings) as desk:
        first_id = "<first-1@example.org>"
        dovecot.append(
            mailbox,
            customer_mail(
                "Carol <carol@example.org>",
                "Deposit not credited",
                "I sent 20 USDT (TRC-20) an hour ago.",
                message_id=first_id,
            ),
        )
        tickets = await eventually(lambda: helpers.tickets(database), within=15)
        [ticket] = tickets
        topic = await desk.topic_of(ticket.id)
        card = await desk.card_of(ticket.id)
        assert "I sent 20 USDT" in (card.text or "") and "email" in (card.text or "")

        # The receipt goes out by mail, threaded to the customer's message.
        receipt = (await eventually(lambda: _received(smtp_server, 1), within=15))[0]
        assert receipt.message["Auto-Submitted"] == "auto-generated"
        assert receipt.message["In-Reply-To"] == first_id

        await desk.server.user_sends(
            desk.agent, chat=desk.group, thread_id=topic, text="Credited now, sorry for the wait."
        )
        answer = (await eventually(lambda: _received(smtp_server, 2), within=15))[1]
        mail = answer.message
        assert [a for _n, a in getaddresses([mail["To"]])] == ["carol@example.org"]
        assert SUPPORT in mail["From"]
        assert mail["Subject"] == f"[#{ticket.id}] Re: Deposit not credited"
        assert mail["In-Reply-To"] == first_id
        assert (
            first_id in mail["References"] and receipt.message["Message-ID"] in mail["References"]
        )
        plain = mail.get_body(("plain",))
        assert plain is not None and "Credited now, sorry for the wait." in plain.get_content()
        assert mail.get_body(("html",)) is not None
        await desk.wait_group("sent by email to carol@example.org", within=15)

        dovecot.append(
            mailbox,
            customer_mail(
                "Carol <carol@example.org>",
                f"Re: [#{ticket.id}] Re: Deposit not credited",
                "Thanks, I see it.",
                in_reply_to=mail["Message-ID"],
                references=[first_id, mail["Message-ID"]],
            ),
        )

        async def three_messages() -> list[Message]:
            found = [m for m in await helpers.messages(database, ticket.id) if m.direction == "in"]
            return found if len(found) == 2 else []

        inbound = await eventually(three_messages, within=15)
        assert inbound[1].text.strip() == "Thanks, I see it."
        assert len(await helpers.tickets(database)) == 1
        await desk.wait_group("Thanks, I see it.", within=15)


async def _received(server: SmtpServer, count: int) -> list[Received]:
    got = server.received
    return got if len(got) >= count else []


async def test_an_edited_answer_to_a_mail_goes_out_as_a_correction(
    database: Database, dovecot: Dovecot, mailbox: str, smtp_server: SmtpServer
) -> None:
    """Issue 15, point 9: a sent mail cannot be edited; the edit goes as a short correction."""
    settings = service_mail_settings(dovecot, mailbox, smtp_server)
    async with running_desk(database, extra=settings) as desk:
        dovecot.append(
            mailbox,
            customer_mail("Carol <carol@example.org>", "Balance", "How much is left?"),
        )
        [ticket] = await eventually(lambda: helpers.tickets(database), within=15)
        topic = await desk.topic_of(ticket.id)
        await eventually(lambda: _received(smtp_server, 1), within=15)  # the receipt
        answer = await desk.server.user_sends(
            desk.agent, chat=desk.group, thread_id=topic, text="You have $12 left."
        )
        first = (await eventually(lambda: _received(smtp_server, 2), within=15))[1].message
        await desk.server.user_edits(desk.agent, answer, "You have $21 left.")
        await desk.wait_group("goes to the customer as a short correction mail", within=15)
        correction = (await eventually(lambda: _received(smtp_server, 3), within=15))[2].message
        plain = correction.get_body(("plain",))
        assert plain is not None
        assert "A correction to our previous answer" in plain.get_content()
        assert "You have $21 left." in plain.get_content()
        assert correction["Subject"] == f"[#{ticket.id}] Re: Balance"
        assert first["Message-ID"] in correction["References"]
        outgoing = [m for m in await helpers.messages(database, ticket.id) if m.direction == "out"]
        assert outgoing[0].text == "You have $21 left."
        assert len(smtp_server.received) == 3
