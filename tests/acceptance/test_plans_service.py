"""The plan follows the account, through the running service: import, /link, a refunded upgrade.

The real service runs against the local Telegram server (and Dovecot and aiosmtpd where mail is
part of the story); the assertions are the queue's order, the tickets' plans, the cards and topic
titles the agents see, and what the reports count.
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from accounts.importer import import_file
from accounts.plans import sync_plans
from tests import helpers
from tests import refund_data as data
from tests.acceptance.test_accounts_telegram import mails_to, smtp_settings
from tests.conftest import Database
from tests.integration.test_plans import ledger
from tests.mailservers import (  # noqa: F401 - fixtures are found by name
    SUPPORT,
    Dovecot,
    SmtpServer,
    customer_mail,
    dovecot_fixture,
    eventually,
    mailbox_fixture,
    service_mail_settings,
    smtp_server_fixture,
    tls_files_fixture,
)
from tests.telegram_harness import Desk, running_desk
from tickets import queue
from tickets.policy import SlaPolicy
from tickets.ports import utcnow
from tickets.rendering import Templates
from tickets.sla import BusinessCalendar
from tickets.tables import AuditEntry, Customer, Response, Ticket

PASSING = (
    "mx.example.net; spf=pass smtp.mailfrom=example.com; dkim=pass header.d=example.com; "
    "dmarc=pass header.from=example.com"
)


async def queue_order(desk: Desk) -> list[int]:
    policy = SlaPolicy(calendar=BusinessCalendar())
    async with desk.database.sessions() as session:
        return [entry.ticket for entry in await queue.top(session, policy, utcnow(), 20)]


async def plan_of(database: Database, number: int) -> str:
    return (await helpers.ticket(database, number)).plan


async def topic_title(desk: Desk, number: int) -> str:
    thread = await desk.topic_of(number)
    [topic] = [t for t in desk.server.topics(desk.group) if t.thread_id == thread]
    return topic.name


async def card_text(desk: Desk, number: int) -> str:
    card = await desk.card_of(number)
    shown = desk.server.message(desk.group, card.message_id)
    assert shown is not None
    return str(shown.get("text") or "")


@pytest.mark.slow
async def test_import_then_mail_from_the_pro_address_gives_a_pro_ticket_first(
    database: Database, dovecot: Dovecot, mailbox: str, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    settings = service_mail_settings(dovecot, mailbox, smtp_server)
    async with running_desk(database, extra=settings) as desk:
        # Two Basic customers write first: their tickets are due earlier.
        _bob, first = await desk.customer_opens("Bob", "My key stopped working.")
        _cy, second = await desk.customer_opens("Cy", "How do I rotate a key?")
        report = await import_file(
            database.sessions, ledger(tmp_path), at=utcnow(), templates=Templates()
        )
        assert report.accounts_created == 3
        dovecot.append(
            mailbox,
            customer_mail(
                "Pia Pro <pia.pro@example.com>",
                "Invoice question",
                "Could you resend the November invoice?",
                headers={"Authentication-Results": PASSING},
            ),
        )

        async def third() -> list[Ticket]:
            found = await helpers.tickets(database)
            return list(found) if len(found) == 3 else []

        tickets = await eventually(third, within=15)
        pia = tickets[-1].id
        assert [t.plan for t in tickets] == ["basic", "basic", "pro"]
        assert (tickets[-1].due_at or utcnow()) >= (second.due_at or utcnow())
        assert await queue_order(desk) == [pia, first.id, second.id], "Pro first, none at risk"
        assert " · PRO · email · Pia Pro" in await card_text(desk, pia)
        assert (await topic_title(desk, pia)).startswith(f"#{pia} · PRO ·")

        # Answered, the response counts under Pro in the reports.
        topic = await desk.topic_of(pia)
        await desk.server.user_sends(desk.agent, chat=desk.group, thread_id=topic, text="Sent!")
        [response] = await eventually(lambda: helpers.rows(database, Response), within=15)
        assert response.ticket_id == pia and response.plan == "pro"


async def test_link_turns_an_open_basic_ticket_into_a_pro_one(
    database: Database, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    await import_file(database.sessions, ledger(tmp_path), at=utcnow(), templates=Templates())
    async with running_desk(database, extra=smtp_settings(smtp_server)) as desk:
        _bob, earlier = await desk.customer_opens("Bob", "A question about limits.")
        ann, ticket = await desk.customer_opens("Ann", "My Pro limits do not apply.")
        assert ticket.plan == "basic", "an unlinked chat is nobody's account yet"
        assert await queue_order(desk) == [earlier.id, ticket.id]
        assert (await topic_title(desk, ticket.id)).startswith(f"#{ticket.id} · BASIC ·")

        await desk.server.user_sends(ann, text="/link ann@example.com")
        [mail] = await eventually(lambda: mails_to(smtp_server, "ann@example.com"), within=15)
        body = mail.message.get_body(("plain",))
        assert body is not None
        code = re.search(r"account: (\d{6})", body.get_content())
        assert code is not None
        await desk.server.user_sends(ann, text=f"/link {code.group(1)}")
        await desk.wait_customer(ann, "linked to the account ann@example.com")

        notice = await desk.wait_group(f"#{ticket.id} is now PRO (was BASIC)")
        assert notice.thread_id == await desk.topic_of(ticket.id), "told in the ticket's topic"
        assert await plan_of(database, ticket.id) == "pro"
        assert await queue_order(desk) == [ticket.id, earlier.id]

        async def restated() -> bool:
            title = await topic_title(desk, ticket.id)
            return title.startswith(f"#{ticket.id} · PRO ·") and " · PRO · " in await card_text(
                desk, ticket.id
            )

        await eventually(restated, within=15)
    async with database.sessions() as session:
        customer = await session.scalar(select(Customer).where(Customer.telegram_id == ann.id))
        moved = (
            await session.scalars(select(AuditEntry).where(AuditEntry.action == "plan_change"))
        ).one()
    assert customer is not None and customer.plan == "pro"
    assert moved.ticket_id == ticket.id and moved.details["reason"] == "linked to ann@example.com"


@pytest.mark.slow
async def test_refunding_the_upgrade_puts_the_customer_back_on_basic_and_requeues(
    database: Database,
) -> None:
    now = utcnow()
    async with running_desk(database) as desk:
        ann = desk.server.add_user("Ann")
        async with database.sessions.begin() as session:
            customer = await data.telegram_customer(session, ann.id, "Ann", at=now)
            owner = await data.account(
                session, "ann@example.org", at=now - timedelta(days=30), plan="pro",
                pro_since=now - timedelta(days=2),
            )  # fmt: skip
            await data.payment(session, owner, "20", at=now - timedelta(days=1), wallet="TAnn")
            await data.payment(
                session, owner, "19", at=now - timedelta(days=2), purpose="pro_upgrade",
                wallet="bc1ann", currency="BTC", chain="bitcoin",
            )  # fmt: skip
            await data.imported(session, at=now)
            await data.link(session, owner, customer.id, at=now)
            await session.flush()
            await sync_plans(session, Templates(), at=now, reason="test", customers=[customer.id])
        _bob, basic = await desk.customer_opens("Bob", "Where is my invoice?")
        await desk.server.user_sends(ann, text="Please refund my Pro upgrade, I don't need it.")
        await desk.wait_customer(ann, "ticket number")
        [_, pro] = await helpers.tickets(database)
        assert pro.plan == "pro"
        await desk.server.user_sends(ann, text="/new")
        await desk.server.user_sends(ann, text="And a second question.")

        async def three() -> bool:
            return len(await helpers.tickets(database)) == 3

        await eventually(three, within=15)
        second_pro = (await helpers.tickets(database))[-1].id
        assert await queue_order(desk) == [pro.id, second_pro, basic.id]

        await desk.server.user_sends(desk.agent, chat=desk.group, text=f"/refund {pro.id}")
        panel = await desk.wait_group(f"💸 Refund for #{pro.id}")
        labels = [b["text"] for b in panel.buttons()]
        assert labels == [
            "✅ Refund everything: $39.00",
            "✅ Only the Pro upgrade: $19.00",
            "✅ Only the balance: $20.00",
        ]
        only_upgrade = panel.callback_data()[1]
        await desk.server.press_button(desk.agent, panel, only_upgrade)
        await desk.wait_group("only the Pro upgrade, Pro upgrade included (account back on Basic)")
        await desk.wait_customer(ann, "back on the Basic plan")
        await desk.wait_group(f"#{pro.id} is now BASIC (was PRO): the Pro upgrade was refunded")
        await desk.wait_group(f"#{second_pro} is now BASIC (was PRO)")
        assert await plan_of(database, pro.id) == "basic"
        assert await plan_of(database, second_pro) == "basic"
        assert await queue_order(desk) == [basic.id, pro.id, second_pro]

        async def restated() -> bool:
            return (await topic_title(desk, pro.id)).startswith(f"#{pro.id} · BASIC ·")

        await eventually(restated, within=15)  # from spare budget if the notice was digested
    async with database.sessions() as session:
        balance_debits = await session.scalar(
            select(AuditEntry.details).where(AuditEntry.action == "refund_execute")
        )
    assert balance_debits is not None and Decimal(balance_debits["debited"]) == 0, "Pro only"
