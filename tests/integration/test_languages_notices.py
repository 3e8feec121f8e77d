"""Notices sent long after the customer wrote (a refund, its payout) are in the language the
customer picked, on both databases."""

from __future__ import annotations

from accounts.payouts import PayoutDesk
from accounts.tables import Payout
from tests import helpers
from tests.conftest import Clock, Database
from tests.integration.test_refunds import ADMIN, AGENT, refunds_of, setup
from tickets.desk import Desk
from tickets.model import CustomerRef
from tickets.rendering import Templates
from tickets.tables import OutboxRow


async def test_refund_and_payout_notices_are_in_the_customers_language(
    database: Database, desk: Desk, clock: Clock
) -> None:
    number, _account = await setup(database, desk, clock)
    await desk.set_language(CustomerRef(telegram_id=501), "ru")
    refunds = refunds_of(database, clock)
    panel = await refunds.panel(number, AGENT)
    await refunds.confirm(number, AGENT, panel.plan.fingerprint)
    [notice] = await helpers.outbox(database, OutboxRow.kind == "notice")
    text = notice.payload["text"]
    assert text.startswith(f"Возврат средств уже в пути (обращение #{number}, возврат ")
    assert "• 20,00\xa0$ в USDT в сети tron на кошелёк TNew" in text
    assert "Когда каждый платёж будет отправлен, мы сообщим вам хеш транзакции." in text

    first, _second = await helpers.rows(database, Payout)
    agents_text = await PayoutDesk(database.sessions, Templates(), clock=clock).mark_sent(
        first.id, "0xfeedbeef01", telegram_id=ADMIN
    )
    assert "0xfeedbeef01" in agents_text and "Payout" in agents_text  # the agents' stay English
    sent = (await helpers.outbox(database, OutboxRow.kind == "notice"))[-1].payload["text"]
    assert sent == (
        f"Возврат отправлен (обращение #{number}): 20,00\xa0$ в USDT в сети tron на кошелёк "
        "TNew.\nХеш транзакции: 0xfeedbeef01"
    )


async def test_a_customer_who_never_picked_gets_english(
    database: Database, desk: Desk, clock: Clock
) -> None:
    number, _account = await setup(database, desk, clock)
    refunds = refunds_of(database, clock)
    panel = await refunds.panel(number, AGENT)
    await refunds.confirm(number, AGENT, panel.plan.fingerprint)
    [notice] = await helpers.outbox(database, OutboxRow.kind == "notice")
    assert notice.payload["text"].startswith("Your refund is on its way")
    assert "$20.00 in USDT on tron to TNew" in notice.payload["text"]
