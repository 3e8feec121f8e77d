"""End to end: customers read the bot's automatic texts in their own language, on Telegram
(the local Bot API server, the real python-telegram-bot client) and by mail (Dovecot in,
aiosmtpd out); the agents' group stays in its one language."""

from __future__ import annotations

import re

from sqlalchemy import select

from tests import helpers
from tests.conftest import Database
from tests.mailservers import (  # noqa: F401 - fixtures are found by name
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
from tickets.tables import Customer

_RUSSIAN_DATE = re.compile(
    r"не позднее (пн|вт|ср|чт|пт|сб|вс), \d{1,2} \w+\. \d{4}\u202fг\., \d\d:\d\d UTC"
)


async def _language_of(database: Database, telegram_id: int) -> tuple[str | None, str | None]:
    async with database.sessions() as session:
        row = (
            await session.execute(
                select(Customer.language, Customer.client_language).where(
                    Customer.telegram_id == telegram_id
                )
            )
        ).one()
    return row.language, row.client_language


async def test_a_russian_customer_is_answered_in_russian_and_can_switch_to_spanish(
    database: Database,
) -> None:
    async with running_desk(database) as desk:
        ivan = desk.server.add_user("Иван", language_code="ru-RU")
        await desk.server.user_sends(ivan, text="Пополнение на 50 USDT не пришло на баланс")

        receipt = await desk.wait_customer(ivan, "Номер вашего обращения")
        [ticket] = await helpers.tickets(database)
        text = receipt.text or ""
        assert text.startswith(
            f"Спасибо, мы получили ваше сообщение. Номер вашего обращения — #{ticket.id}."
        )
        assert _RUSSIAN_DATE.search(text), text
        assert "(в течение 24 рабочих часов)" in text
        assert await _language_of(database, ivan.id) == (None, "ru")

        # The agents' group keeps its one language (AGENT_LANGUAGE, English by default).
        card = await desk.card_of(ticket.id)
        assert "Пополнение на 50 USDT" in (card.text or "")
        assert "Спасибо" not in (card.text or "")

        await desk.server.user_sends(ivan, text="/status")
        status = await desk.wait_customer(ivan, "Ваши открытые обращения:")
        assert f"#{ticket.id} — ждёт нашего ответа, срок — " in (status.text or "")
        await desk.server.user_sends(ivan, text="/start")
        start = await desk.wait_customer(ivan, "Здравствуйте, Иван!")
        assert "/language — сменить язык" in (start.text or "")

        await desk.server.user_sends(ivan, text="/language es")
        await desk.wait_customer(ivan, "Hecho: a partir de ahora le escribiré en español.")
        assert await _language_of(database, ivan.id) == ("es", "ru")
        await desk.server.user_sends(ivan, text="/status")
        status = await desk.wait_customer(ivan, "Sus tickets abiertos:")
        assert f"#{ticket.id} — esperando nuestra respuesta, plazo: " in (status.text or "")

        # A bad code gets one line naming the choices, in the language picked; nothing changes.
        await desk.server.user_sends(ivan, text="/language klingon")
        usage = await desk.wait_customer(ivan, "Envíe /language")
        assert usage.text == (
            "Envíe /language y una de estas opciones: en (English), ru (Русский), "
            "zh (简体中文), es (Español). Por ejemplo: /language es"
        )
        assert await _language_of(database, ivan.id) == ("es", "ru")

        # The pick wins over the client's language for a new ticket's receipt too.
        await desk.server.user_sends(ivan, text="/new ¿Y mi reembolso?")
        spanish = await desk.wait_customer(ivan, "Su número de ticket es #")
        assert "como muy tarde el " in (spanish.text or "")
        assert "(en un plazo de 24 horas hábiles)" in (spanish.text or "")

        await desk.server.user_sends(ivan, text="/language English")
        await desk.wait_customer(ivan, "Done: I will write to you in English from now on.")
        assert await _language_of(database, ivan.id) == ("en", "ru")


async def test_the_command_menu_is_set_in_each_language(database: Database) -> None:
    async with running_desk(database) as desk:
        private = {"type": "all_private_chats"}

        def menu(language: str) -> dict[str, str]:
            return {c["command"]: c["description"] for c in desk.server.commands(private, language)}

        assert menu("")["language"] == "Choose your language"
        assert menu("ru")["language"] == "Выбрать язык"
        assert menu("zh")["status"] == "您的未结工单"
        assert menu("es")["new"] == "Abrir un ticket aparte"
        assert (
            list(menu("ru"))
            == list(menu(""))
            == [
                "start",
                "new",
                "status",
                "link",
                "balance",
                "refund",
                "language",
            ]
        )


async def test_a_customer_whose_telegram_speaks_no_shipped_language_reads_english(
    database: Database,
) -> None:
    async with running_desk(database) as desk:
        hans = desk.server.add_user("Hans", language_code="de")
        await desk.server.user_sends(hans, text="Hallo")
        receipt = await desk.wait_customer(hans, "ticket number is #")
        assert (receipt.text or "").startswith("Thank you, we have your message.")
        assert await _language_of(database, hans.id) == (None, None)


async def test_a_mail_in_chinese_gets_a_chinese_receipt_and_footer(
    database: Database, dovecot: Dovecot, mailbox: str, smtp_server: SmtpServer
) -> None:
    settings = service_mail_settings(dovecot, mailbox, smtp_server)
    async with running_desk(database, extra=settings) as desk:
        first_id = "<zh-1@example.cn>"
        _append_in(
            dovecot,
            mailbox,
            customer_mail(
                "李明 <li.ming@example.cn>",
                "充值未到账",
                "我一小时前转了 20 USDT (TRC-20)。",
                message_id=first_id,
            ),
            "zh-Hans",
        )
        [ticket] = await eventually(lambda: helpers.tickets(database), within=15)
        receipt = (await eventually(lambda: _received(smtp_server, 1), within=15))[0].message
        assert receipt["Subject"] == f"[#{ticket.id}] 充值未到账"
        assert receipt["Auto-Submitted"] == "auto-generated"
        plain = receipt.get_body(("plain",))
        html = receipt.get_body(("html",))
        assert plain is not None and html is not None
        body = plain.get_content()
        assert body.startswith(f"谢谢，我们已收到您的消息。您的工单编号是 #{ticket.id}。")
        assert re.search(r"最迟将于 2\d{3}年\d{1,2}月\d{1,2}日周. \d\d:\d\d UTC 前回复您", body)
        assert '<html lang="zh-Hans">' in html.get_content()

        topic = await desk.topic_of(ticket.id)
        await desk.server.user_sends(
            desk.agent, chat=desk.group, thread_id=topic, text="已到账，抱歉久等。"
        )
        answer = (await eventually(lambda: _received(smtp_server, 2), within=15))[1].message
        reply = answer.get_body(("plain",))
        assert reply is not None
        assert (
            reply.get_content()
            .rstrip()
            .endswith(
                f"工单 #{ticket.id}：如需补充，请直接回复此邮件，并在主题中保留 [#{ticket.id}]。"
            )
        )
        await desk.wait_group("sent by email to li.ming@example.cn", within=15)


async def test_a_mail_without_a_subject_gets_the_tag_line_in_spanish(
    database: Database, dovecot: Dovecot, mailbox: str, smtp_server: SmtpServer
) -> None:
    settings = service_mail_settings(dovecot, mailbox, smtp_server)
    async with running_desk(database, extra=settings):
        _append_in(
            dovecot,
            mailbox,
            customer_mail(
                "Lucía <lucia@example.es>",
                "",
                "No veo mi recarga.",
            ),
            "es-ES",
        )
        [ticket] = await eventually(lambda: helpers.tickets(database), within=15)
        receipt = (await eventually(lambda: _received(smtp_server, 1), within=15))[0].message
        assert receipt["Subject"] == f"[#{ticket.id}] Su solicitud de soporte"
        plain = receipt.get_body(("plain",))
        assert plain is not None
        assert plain.get_content().startswith(
            f"Gracias, hemos recibido su mensaje. Su número de ticket es #{ticket.id}."
        )


def _append_in(dovecot: Dovecot, mailbox: str, raw: bytes, language: str) -> None:
    """The mail with a `Content-Language` header, as a client writing in that language sends
    it (`customer_mail` builds its body after its headers, which drops Content-* ones)."""
    dovecot.append(mailbox, f"Content-Language: {language}\r\n".encode() + raw)


async def _received(server: SmtpServer, count: int) -> list[Received]:
    got = server.received
    return got if len(got) >= count else []
