"""`/account N EMAIL`: an agent ties a ticket to an account; the code given back proves it."""

from __future__ import annotations

import re
from pathlib import Path

from accounts.importer import import_file
from accounts.tables import AccountLink
from tests import helpers
from tests.acceptance.test_accounts_telegram import mails_to, smtp_settings
from tests.conftest import Database
from tests.integration.test_plans import ledger
from tests.mailservers import (  # noqa: F401 - fixtures are found by name
    SmtpServer,
    eventually,
    smtp_server_fixture,
)
from tests.telegram_harness import running_desk
from tickets.ports import utcnow
from tickets.rendering import Templates
from tickets.tables import AuditEntry


async def test_an_agent_ties_a_ticket_and_the_code_given_back_proves_it(
    database: Database, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    await import_file(database.sessions, ledger(tmp_path), at=utcnow(), templates=Templates())
    async with running_desk(database, extra=smtp_settings(smtp_server)) as desk:
        ann, ticket = await desk.customer_opens("Ann", "I wrote from my phone; my account is ann@…")
        number = ticket.id
        group = desk.group

        await desk.server.user_sends(desk.agent, chat=group, text="/account")
        await desk.wait_group("use /account N EMAIL")
        await desk.server.user_sends(desk.agent, chat=group, text=f"/account {number} nobody@x.io")
        await desk.wait_group("no account has the address nobody@x.io")
        await desk.server.user_sends(desk.stranger, chat=group, text=f"/account {number} x@y.io")

        await desk.server.user_sends(
            desk.agent, chat=group, text=f"/account {number} ANN@example.com"
        )
        await desk.wait_group(f"A code went to ann@example.com. #{number} is tied to that account")
        [mail] = await eventually(lambda: mails_to(smtp_server, "ann@example.com"), within=15)
        body = mail.message.get_body(("plain",))
        assert body is not None and f"tie support ticket #{number}" in body.get_content()
        found = re.search(r"your account: (\d{6})", body.get_content())
        assert found is not None
        code = found.group(1)
        # The plan follows at once; money waits for proof.
        await desk.wait_group(f"#{number} is now PRO (was BASIC): tied to ann@example.com")
        await desk.server.user_sends(desk.agent, chat=group, text=f"/refund {number}")
        panel = await desk.wait_group("Identity NOT verified")
        assert panel.buttons() == []

        wrong = "000000" if code != "000000" else "111111"
        await desk.server.user_sends(desk.agent, chat=group, text=f"/account {number} {wrong}")
        await desk.wait_group("not the code for #")
        await desk.server.user_sends(desk.agent, chat=group, text=f"/account {number} {code}")
        await desk.wait_group(f"#{number} is tied to ann@example.com: the customer gave the code")
        before = len(desk.group_texts())
        await desk.server.user_sends(desk.agent, chat=group, text=f"/refund {number}")

        def second_panel() -> bool:
            return any("Identity: linked." in t for t in desk.group_texts()[before:])

        await desk.server.wait_for(second_panel, 10)
        assert (await helpers.ticket(database, number)).plan == "pro"
        assert ann.id  # the customer never had to write from the account's address
    [tie] = await helpers.rows(database, AccountLink)
    assert tie.method == "code"
    audit = [
        (e.action, e.details.get("verified")) for e in await helpers.rows(database, AuditEntry)
    ]
    assert ("account_tie", False) in audit and ("account_tie", True) in audit
    refusals = [a for a, _v in audit if a == "refused:account_tie"]
    assert len(refusals) == 3, "usage, an unknown address, a wrong code (the stranger is ignored)"
