"""End to end: refunds through the real service and the local Telegram (and SMTP) servers."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from accounts.tables import Payout, Refund
from sandbox.telegram import SentMessage
from tests import helpers
from tests import refund_data as data
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
from tests.telegram_harness import Desk, running_desk
from tickets.ports import utcnow
from tickets.tables import AuditEntry, Customer, Ticket


async def account_for(
    desk: Desk, customer_telegram_id: int | None, email: str, **extra: str
) -> int:
    """An account with top-ups of 30 (3 days ago, TOld) and 20 (yesterday, TNew), minus 5 used."""
    now = utcnow()
    async with desk.database.sessions.begin() as session:
        owner = await data.account(session, email, at=now - timedelta(days=30))
        await data.payment(session, owner, "30", at=now - timedelta(days=3), wallet="TOld")
        await data.payment(session, owner, "20", at=now - timedelta(days=1), wallet="TNew")
        await data.usage(session, owner, "5", at=now - timedelta(hours=5))
        await data.imported(session, at=now)
        if customer_telegram_id is not None:
            customer_id = await session.scalar(
                select(Customer.id).where(Customer.telegram_id == customer_telegram_id)
            )
            assert customer_id is not None
            await data.link(session, owner, customer_id, at=now)
        return owner.id


async def press(desk: Desk, who: object, message: SentMessage, data_: str, **kw: bool) -> str:
    query = await desk.server.press_button(who, message, data_, **kw)  # type: ignore[arg-type]
    answer = await desk.server.wait_for(lambda: desk.server.callback_answer(query))
    return answer.text or ""


async def test_agent_refunds_admin_approves_and_marks_paid_customer_sees_it(
    database: Database,
) -> None:
    extra = {"REFUND_APPROVAL_ABOVE_USD": "30"}
    async with running_desk(database, extra=extra) as desk:
        ann, ticket = await desk.customer_opens("Ann", "Please refund my balance")
        await account_for(desk, ann.id, "ann@example.org")
        card = await desk.card_of(ticket.id)
        *_, refund_button = card.callback_data()

        assert "Refund panel" in await press(desk, desk.agent, card, refund_button)
        panel = await desk.wait_group(f"💸 Refund for #{ticket.id}")
        text = panel.text or ""
        assert "$20.00 of $20.00" in text and "TNew" in text and "$25.00 of $30.00" in text
        assert "Total: $45.00" in text and "an admin, must approve" in text
        [confirm] = panel.callback_data()
        assert len(confirm.encode()) <= 64

        forged = confirm.replace(f":{ticket.id}:", f":{ticket.id + 1}:")
        assert "not valid" in await press(desk, desk.agent, panel, forged, tampered=True)
        assert "waiting for an admin" in await press(desk, desk.agent, panel, confirm)
        held = await desk.wait_group("is waiting for an admin")
        [approve] = held.callback_data()
        assert "only an admin" in await press(desk, desk.agent, held, approve)
        assert "done" in await press(desk, desk.admin, held, approve)
        assert "already" in await press(desk, desk.admin, held, approve)  # a replayed press

        notice = await desk.wait_customer(ann, "Your refund is on its way")
        assert "$20.00 in USDT on tron to TNew" in (notice.text or "")
        assert "$25.00 in USDT on tron to TOld" in (notice.text or "")

        payouts = await helpers.rows(database, Payout)
        assert [p.status for p in payouts] == ["pending", "pending"]
        await desk.server.user_sends(
            desk.agent, chat=desk.group, text=f"/paid {payouts[0].id} 0xdeadbeef42"
        )
        await desk.wait_group("only an admin can mark a payout sent")
        await desk.server.user_sends(
            desk.admin, chat=desk.group, text=f"/paid {payouts[0].id} 0xdeadbeef42"
        )
        await desk.wait_group(f"Payout {payouts[0].id} marked sent")
        sent = await desk.wait_customer(ann, "Transaction hash: 0xdeadbeef42")
        assert "$20.00 in USDT on tron to TNew" in (sent.text or "")

        [refund] = await helpers.rows(database, Refund)
        assert refund.status == "executed" and refund.ticket_id == ticket.id
        actions = [e.action for e in await helpers.rows(database, AuditEntry)]
        for expected in (
            "refund_panel",
            "refund_confirm",
            "refused:refund_approve",
            "refund_approve",
            "refund_execute",
            "refused:payout_sent",
            "payout_sent",
        ):
            assert expected in actions, expected
        assert "refused:button" in actions


async def test_customer_refund_request_opens_a_ticket_with_the_summary(database: Database) -> None:
    async with running_desk(database) as desk:
        ann, _ = await desk.customer_opens("Ann", "hello")
        stranger = desk.server.add_user("Zed")
        await desk.server.user_sends(stranger, text="/refund")
        await desk.wait_customer(stranger, "first link this chat")
        await account_for(desk, ann.id, "ann@example.org")
        await desk.server.user_sends(ann, text="/refund changed my mind")
        await desk.server.wait_for(
            lambda: (
                len([m for m in desk.server.sent_to(ann.id) if "ticket number" in (m.text or "")])
                >= 2
            )
        )
        async with database.sessions() as session:
            request = (
                await session.scalars(select(Ticket).order_by(Ticket.id.desc()).limit(1))
            ).one()
        card = await desk.card_of(request.id)
        text = card.text or ""
        assert "Refund request" in text and "changed my mind" in text
        assert "Refundable now: $45.00" in text and "TNew" in text
        assert len(await helpers.tickets(database)) == 2, "Zed's /refund opened no ticket"


async def test_email_customer_is_told_by_mail_what_goes_where_and_the_hash(
    database: Database, dovecot: Dovecot, mailbox: str, smtp_server: SmtpServer
) -> None:
    settings = service_mail_settings(dovecot, mailbox, smtp_server)
    async with running_desk(database, extra=settings) as desk:
        await account_for(desk, None, "carol@example.org")
        dovecot.append(
            mailbox,
            customer_mail(
                "Carol <carol@example.org>",
                "Refund please",
                "I topped up by mistake, please refund.",
                message_id="<refund-1@example.org>",
            ),
        )
        [ticket] = await eventually(lambda: helpers.tickets(database), within=30)
        topic = await desk.topic_of(ticket.id)
        await eventually(lambda: _mails(smtp_server, 1), within=30)  # the receipt

        # No SPF/DKIM/DMARC pass on that mail: the panel offers no Confirm until an agent vouches.
        await desk.server.user_sends(desk.agent, chat=desk.group, thread_id=topic, text="/refund")
        first = await desk.wait_group("Identity NOT verified")
        assert first.callback_data() == []
        await desk.server.user_sends(
            desk.agent, chat=desk.group, thread_id=topic, text="/refund verified"
        )
        panel = await desk.wait_group("You vouched for it")
        [confirm] = panel.callback_data()
        assert "done" in await press(desk, desk.agent, panel, confirm)

        notice = (await eventually(lambda: _mails(smtp_server, 2), within=30))[1].message
        assert notice["To"] == "carol@example.org" and notice["Auto-Submitted"] == "auto-generated"
        assert notice["Subject"] == f"[#{ticket.id}] Refund please"
        assert notice["In-Reply-To"] == "<refund-1@example.org>"
        body = notice.get_body(("plain",))
        assert body is not None
        text = body.get_content()
        assert "$20.00 in USDT on tron to TNew" in text and "$25.00 in USDT on tron to TOld" in text

        payouts = await helpers.rows(database, Payout)
        await desk.server.user_sends(
            desk.admin, chat=desk.group, text=f"/paid {payouts[1].id} 0xfeed00cafe"
        )
        await desk.wait_group("The customer is told by email (carol@example.org)")
        paid = (await eventually(lambda: _mails(smtp_server, 3), within=30))[2].message
        paid_body = paid.get_body(("plain",))
        assert paid_body is not None
        assert "Transaction hash: 0xfeed00cafe" in paid_body.get_content()
        assert "$25.00 in USDT on tron to TOld" in paid_body.get_content()


async def _mails(server: SmtpServer, count: int) -> list[Received]:
    got = server.received
    return got if len(got) >= count else []


async def test_the_running_service_reports_an_overdue_payout_once(database: Database) -> None:
    old = utcnow() - timedelta(days=5, hours=1)
    async with database.sessions.begin() as session:
        owner = await data.account(session, "late@example.org", at=old)
        paid = await data.payment(session, owner, "12", at=old, wallet="TLate")
        refund = Refund(
            account_id=owner.id,
            key="k-late",
            status="executed",
            total=paid.amount_usd,
            created_at=old,
            executed_at=old,
        )
        session.add(refund)
        await session.flush()
        session.add(
            Payout(
                refund_id=refund.id,
                payment_id=paid.id,
                amount_usd=paid.amount_usd,
                currency="USDT",
                chain="tron",
                wallet="TLate",
                status="pending",
                created_at=old,
            )
        )
    async with running_desk(database) as desk:
        alert = await desk.wait_group("has been pending since")
        assert "$12.00 USDT on tron to TLate" in (alert.text or "")
    [payout] = await helpers.rows(database, Payout)
    assert payout.alerted_at is not None
    alerts = [e for e in await helpers.rows(database, AuditEntry) if e.action == "payout_overdue"]
    assert len(alerts) == 1
