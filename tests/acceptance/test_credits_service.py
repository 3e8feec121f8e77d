"""The automatic monthly run end to end: real service, local Telegram server, moved clock."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from accounts.ledger import balance
from accounts.tables import LedgerEntry, SlaCredit
from sandbox.service import local_settings, serving
from sandbox.telegram import LocalBotApi, SimChat, SimUser
from tests import helpers
from tests.conftest import Clock, Database
from tests.integration.test_credits import march_ledgers
from tests.integration.test_credits_cli import checks_file
from tests.telegram_harness import TOKEN
from tickets.tables import OutboxRow


@asynccontextmanager
async def telegram_server() -> AsyncIterator[tuple[LocalBotApi, SimChat, SimUser]]:
    server = LocalBotApi(TOKEN, bot_username="supportbot_test")
    await server.start()
    try:
        group = server.add_group("Support agents", forum=False)
        yield server, group, server.add_user("Ann")
    finally:
        await server.stop()


async def test_the_service_credits_last_month_by_itself_once(
    database: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="accounts.credit_run")

    def logged(text: str) -> bool:
        return any(text in message for message in caplog.messages)

    checks = checks_file(tmp_path / "checks.csv", down_minutes=300)
    async with telegram_server() as (server, group, ann):
        ids = await march_ledgers(database, ann_telegram_id=ann.id)
        settings = local_settings(server, group, database.url, {"UPTIME_CHECKS_FILE": str(checks)})

        # The 11th of April: too late for March by the rule's own terms, so nothing happens.
        late = Clock(datetime(2026, 4, 11, 0, 30, tzinfo=UTC))
        async with serving(settings, server, clock=late):
            await server.wait_for(lambda: logged("past the 10th"), 10)
        assert await helpers.rows(database, SlaCredit) == []

        # The 3rd of April: the service finds March at 99.3279 % (300 of 44,640 minutes down).
        clock = Clock(datetime(2026, 4, 3, 6, 0, tzinfo=UTC))
        async with serving(settings, server, clock=clock):
            notice = await server.wait_for(
                lambda: next(iter(server.sent_to(ann.id)), None), timeout=10
            )
            summary = await server.wait_for(
                lambda: next(
                    (m for m in server.sent_to(group) if "SLA credits" in (m.text or "")), None
                ),
                timeout=10,
            )
        assert notice.text == (
            "SLA credit for March 2026\n\n"
            "Our uptime in March 2026 was 99.3279 %, below the 99.5 % we promise. As a Pro "
            "customer you get 1 % of your net spend that month ($45.00) as a credit.\n\n"
            "Credit: $0.45\nNew balance: $55.45\n\n"
            "The credit is already on your account ann@example.com; there is nothing you need "
            "to do."
        )
        assert summary.text is not None
        assert summary.text.startswith(
            "💸 SLA credits for March 2026 (uptime 99.3279 %, checks file checks.csv): "
            "5 Pro accounts credited, $5.375 in all."
        )
        # Without an email channel the others cannot be told; the agents see that.
        assert "1 by Telegram, 0 by email, 4 not told" in summary.text

        credits = await helpers.rows(database, SlaCredit)
        assert sorted(c.account_id for c in credits) == sorted(
            ids[n] for n in ("ann", "bob", "fay", "ivy", "jon")
        )
        assert all(c.uptime == "99.3279" and c.month == "2026-03" for c in credits)
        async with database.sessions() as session:
            assert await balance(session, ids["ann"]) == Decimal("55.45")
        delivered = await helpers.outbox(database)
        assert {(row.route, row.status) for row in delivered} == {
            ("telegram", "delivered"),
            ("agents", "delivered"),
        }

        # A restart later the same week (the task runs at start and hourly): nothing twice.
        clock.now = datetime(2026, 4, 7, 9, 0, tzinfo=UTC)
        async with serving(settings, server, clock=clock):
            await server.wait_for(lambda: logged("0 accounts credited now ($0.00), 5 before"), 10)
        assert len(await helpers.rows(database, SlaCredit)) == 5
        assert len(await helpers.rows(database, LedgerEntry, LedgerEntry.kind == "credit")) == 5
        assert len(await helpers.outbox(database, OutboxRow.route == "telegram")) == 1
        assert len(server.sent_to(ann.id)) == 1
        assert sum("SLA credits" in (m.text or "") for m in server.sent_to(group)) == 1
