"""End to end: /link by mailed code, /balance for customers and agents, the Balance button.

The real service runs against the local Telegram server and a real SMTP server (aiosmtpd); the
assertions are what those servers received and what the database holds.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from accounts.tables import AccountLink
from tests import helpers
from tests.conftest import Database
from tests.integration.test_accounts_import import imported
from tests.mailservers import (  # noqa: F401 - fixtures are found by name
    SUPPORT,
    Received,
    SmtpServer,
    eventually,
    smtp_server_fixture,
)
from tests.telegram_harness import running_desk
from tickets.tables import AuditEntry, OutboxRow


def smtp_settings(server: SmtpServer) -> dict[str, str]:
    return {
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(server.port),
        "SMTP_TLS": "none",
        "SUPPORT_ADDRESS": SUPPORT,
    }


async def mails_to(server: SmtpServer, address: str) -> list[Received]:
    return [r for r in server.received if address in r.rcpt_tos]


@pytest.mark.slow
async def test_link_by_mailed_code_then_balance_for_customer_and_agents(
    database: Database, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    await imported(database, tmp_path)
    async with running_desk(database, extra=smtp_settings(smtp_server)) as desk:
        ann = desk.server.add_user("Ann")
        await desk.server.user_sends(ann, text="/balance")
        await desk.wait_customer(ann, "not linked to an account yet")

        await desk.server.user_sends(ann, text="/link Ann@Example.com")
        await desk.wait_customer(ann, "If an account exists for ann@example.com")
        [mail] = await eventually(lambda: mails_to(smtp_server, "ann@example.com"), within=15)
        message = mail.message
        assert message["Auto-Submitted"] == "auto-generated"
        assert SUPPORT in message["From"]
        body = message.get_body(("plain",))
        assert body is not None
        found = re.search(r"account: (\d{6})", body.get_content())
        assert found is not None
        code = found.group(1)

        wrong = "000000" if code != "000000" else "111111"
        await desk.server.user_sends(ann, text=f"/link {wrong}")
        await desk.wait_customer(ann, "You have 4 attempts left")
        await desk.server.user_sends(ann, text=f"/link {code}")
        await desk.wait_customer(ann, "linked to the account ann@example.com")
        await desk.server.user_sends(ann, text="/balance")
        mine = await desk.wait_customer(ann, "Balance: $48.749999")
        assert "Plan: PRO" in (mine.text or "") and "19.00 · 0.00031 BTC" in (mine.text or "")

        # A stranger asking for an address without an account hears the same, and no mail goes.
        eve = desk.server.add_user("Eve")
        await desk.server.user_sends(eve, text="/link ghost@example.com")
        await desk.wait_customer(eve, "If an account exists for ghost@example.com")
        rows = await helpers.rows(database, OutboxRow, OutboxRow.route == "email")
        assert [r.recipient for r in rows] == ["ann@example.com"]

        # Agents see who the customer is on the card, and look the balance up three ways.
        await desk.server.user_sends(ann, text="Where is my refund?")
        await desk.wait_customer(ann, "ticket number is #")
        [ticket] = await helpers.tickets(database)
        topic = await desk.topic_of(ticket.id)
        card = await desk.card_of(ticket.id)
        assert "👤 ann@example.com · linked by email code" in (card.text or "")

        await desk.server.user_sends(desk.agent, chat=desk.group, thread_id=topic, text="/balance")
        answer = await desk.wait_group("from wallet TWalletAnn1")
        assert answer.thread_id == topic
        assert "Balance: $48.749999" in (answer.text or "")
        assert "Who: linked by email code" in (answer.text or "")
        assert "Spent this month: $" in (answer.text or "")  # the import's month is not today's
        assert "refundable now" in (answer.text or "").lower()  # the refund eligibility lines
        await desk.server.user_sends(desk.agent, chat=desk.group, text="/balance bob@example.org")
        await desk.wait_group("from wallet 0xBobWallet")
        await desk.server.user_sends(desk.agent, chat=desk.group, text="/balance ghost@example.com")
        await desk.wait_group("no account has the address ghost@example.com")

        # The card's Balance button, as an agent, a stranger and a forger press it.
        [balance_button] = [d for d in card.callback_data() if d.startswith("balance:")]
        before = len(desk.server.sent_to(desk.group, thread_id=topic))
        press = await desk.server.press_button(desk.admin, card, balance_button)
        await desk.server.wait_for(lambda: desk.server.callback_answer(press))

        def posted() -> bool:
            return len(desk.server.sent_to(desk.group, thread_id=topic)) > before

        await desk.server.wait_for(posted)
        shown = desk.server.sent_to(desk.group, thread_id=topic)[-1]
        assert "Balance: $48.749999" in (shown.text or "")
        stranger = await desk.server.press_button(desk.stranger, card, balance_button)
        refused = await desk.server.wait_for(lambda: desk.server.callback_answer(stranger))
        assert "Only agents" in (refused.text or "") and refused.show_alert
        forged = balance_button.replace(f":{ticket.id}:", f":{ticket.id + 1}:")
        forged_press = await desk.server.press_button(desk.stranger, card, forged, tampered=True)
        bad = await desk.server.wait_for(lambda: desk.server.callback_answer(forged_press))
        assert "not valid" in (bad.text or "")

    [link] = await helpers.rows(database, AccountLink)
    assert link.method == "code"
    audit = [(e.action, e.actor, e.ticket_id) for e in await helpers.rows(database, AuditEntry)]
    lookups = [a for a in audit if a[0] == "balance_lookup"]
    assert lookups == [
        ("balance_lookup", f"agent:{desk.agent.id}", ticket.id),
        ("balance_lookup", f"agent:{desk.agent.id}", None),
        ("balance_lookup", f"agent:{desk.admin.id}", ticket.id),
    ]
    actions = [a[0] for a in audit]
    for expected in ("link_requested", "link", "refused:link", "customer_balance"):
        assert expected in actions
    assert ("refused:balance", f"agent:{desk.agent.id}", None) in audit
    assert ("refused:balance", f"telegram:{desk.stranger.id}", ticket.id) in audit
    assert ("refused:button", f"telegram:{desk.stranger.id}", None) in audit


async def test_agents_balance_from_the_deployments_own_billing(
    database: Database, tmp_path: Path
) -> None:
    await imported(database, tmp_path)
    extra = {"BILLING_FACTORY": "tests.integration.test_accounts_link:billing_of_record"}
    async with running_desk(database, forum=False, extra=extra) as desk:
        await desk.server.user_sends(desk.agent, chat=desk.group, text="/balance vip@example.com")
        shown = await desk.wait_group("Balance: $777.77")
        assert "from wallet TVipWallet" in (shown.text or "")
        await desk.server.user_sends(desk.agent, chat=desk.group, text="/balance ann@example.com")
        await desk.wait_group("no account has the address ann@example.com")
        ann = desk.server.add_user("Ann")
        await desk.server.user_sends(ann, text="/link ann@example.com")
        await desk.wait_customer(ann, "not available here")  # no SMTP: no codes
