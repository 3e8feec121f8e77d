"""The monthly run's decisions, on both databases: when it credits, waits, or tells the agents."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from accounts.credit_run import MonthlyCredits
from accounts.credits import NoticeRoutes
from accounts.settings import UptimeSettings
from accounts.tables import LedgerEntry, LedgerImport, SlaCredit
from accounts.uptime import UptimeError
from tests import helpers
from tests.conftest import Clock, Database
from tests.integration.test_credits import mar as mar_day
from tests.integration.test_credits import march_ledgers
from tests.integration.test_credits_cli import checks_file
from tickets.rendering import Templates
from tickets.tables import OutboxRow

ROUTES = NoticeRoutes(telegram=True, email=False)
APRIL_2 = datetime(2026, 4, 2, 7, 0, tzinfo=UTC)


def monthly(database: Database, source: UptimeSettings) -> MonthlyCredits:
    return MonthlyCredits(
        database.sessions, Templates(), source, ROUTES, clock=Clock(APRIL_2), interval=3600
    )


def instatus(path: Path, hours_down: int) -> UptimeSettings:
    start = datetime(2026, 3, 12, 0, 0, tzinfo=UTC)
    incident = {
        "id": "i1",
        "name": "Outage",
        "started": start.isoformat(),
        "resolved": (start + timedelta(hours=hours_down)).isoformat(),
        "status": "RESOLVED",
        "impact": "MAJOROUTAGE",
    }
    path.write_text(json.dumps({"incidents": [incident], "maintenances": []}))
    return UptimeSettings(instatus_file=path)


@pytest.mark.parametrize(
    ("now", "hours_down", "credited"),
    [
        (datetime(2026, 4, 1, 0, 5, tzinfo=UTC), 4, 5),  # 740/744 = 99.46 %: credits at once
        (datetime(2026, 4, 10, 23, 59, tzinfo=UTC), 4, 5),  # the last day still counts
        (datetime(2026, 4, 11, 0, 0, tzinfo=UTC), 4, 0),  # past the 10th: not automatic
        (datetime(2026, 4, 2, 0, 0, tzinfo=UTC), 3, 0),  # 741/744 = 99.597 %: promise kept
    ],
)
async def test_when_the_run_credits(
    database: Database, tmp_path: Path, now: datetime, hours_down: int, credited: int
) -> None:
    await march_ledgers(database)
    run = monthly(database, instatus(tmp_path / "instatus.json", hours_down))
    await run.run_once(now)
    assert len(await helpers.rows(database, SlaCredit)) == credited
    await run.run_once(now + timedelta(hours=1))  # the next hour: nothing more
    assert len(await helpers.rows(database, SlaCredit)) == credited


async def test_a_bad_file_tells_the_agents_once_and_credits_nobody(
    database: Database, tmp_path: Path
) -> None:
    await march_ledgers(database)
    broken = tmp_path / "instatus.json"
    broken.write_text('{"incidents": [{"name": "no start"}]}')
    run = monthly(database, UptimeSettings(instatus_file=broken))
    for hour in range(3):
        with pytest.raises(UptimeError, match=r"incidents\[0\]\.started is missing"):
            await run.run_once(APRIL_2 + timedelta(hours=hour))
    [notice] = await helpers.outbox(database)
    assert notice.route == "agents"
    assert notice.payload["text"].startswith(
        "⚠️ SLA credits for March 2026 cannot be worked out: instatus.json: incidents[0].started "
        "is missing. Nobody has been credited for March 2026 yet."
    )
    assert await helpers.rows(database, SlaCredit) == []
    [refusal] = await helpers.audit(database)
    assert refusal.action == "refused:sla_credits" and refusal.actor == "system:sla-credits"
    assert "incidents[0].started is missing" in refusal.details["reason"]


async def test_checks_that_do_not_reach_the_months_end_wait(
    database: Database, tmp_path: Path
) -> None:
    await march_ledgers(database)
    checks = checks_file(tmp_path / "checks.csv", down_minutes=600)
    lines = checks.read_text().splitlines()
    checks.write_text("\n".join(lines[:-60]) + "\n")  # the last hour is not exported yet
    run = monthly(database, UptimeSettings(checks_file=checks))
    assert await run.run_once(APRIL_2) is None
    assert await helpers.rows(database, SlaCredit) == []
    assert await helpers.outbox(database) == []
    # Still so on the 10th: the agents are told.
    assert await run.run_once(datetime(2026, 4, 10, 12, 0, tzinfo=UTC)) is None
    [notice] = await helpers.outbox(database, OutboxRow.route == "agents")
    assert "the uptime data does not reach its end" in notice.payload["text"]


async def test_the_run_waits_for_final_data_warns_on_the_8th_credits_on_the_10th_and_tops_up(
    database: Database, tmp_path: Path
) -> None:
    ids = await march_ledgers(database, final=False)  # no import made after March yet
    run = monthly(database, instatus(tmp_path / "instatus.json", 4))
    assert await run.run_once(datetime(2026, 4, 2, 7, 0, tzinfo=UTC)) is None
    assert await helpers.rows(database, SlaCredit) == []
    assert await helpers.outbox(database) == [], "quiet before the 8th"
    assert await run.run_once(datetime(2026, 4, 8, 7, 0, tzinfo=UTC)) is None
    await run.run_once(datetime(2026, 4, 8, 8, 0, tzinfo=UTC))  # told once, not every hour
    [waiting] = await helpers.outbox(database, OutboxRow.route == "agents")
    assert waiting.payload["text"].startswith(
        "⏳ SLA credits for March 2026 wait for the billing data"
    )
    assert await helpers.rows(database, SlaCredit) == []

    # The 10th: the promise's deadline. Credited on what there is, marked provisional.
    applied = await run.run_once(datetime(2026, 4, 10, 7, 0, tzinfo=UTC))
    assert applied is not None and len(applied.credited) == 5
    credits = {c.account_id: c for c in await helpers.rows(database, SlaCredit)}
    assert all(c.provisional for c in credits.values())
    assert credits[ids["ann"]].amount == Decimal("0.45")
    summary = (await helpers.outbox(database, OutboxRow.route == "agents"))[-1]
    assert "these credits are provisional" in summary.payload["text"]

    # Late usage of March arrives with the April export: Ann spent $60 more in March.
    async with database.sessions.begin() as session:
        session.add(
            LedgerEntry(account_id=ids["ann"], kind="usage", amount=Decimal(-60), at=mar_day(30))
        )
        session.add(LedgerImport(at=datetime(2026, 4, 12, tzinfo=UTC), source="a.csv", actor="t"))
    topped = await run.run_once(datetime(2026, 4, 12, 9, 0, tzinfo=UTC))  # after the 10th
    assert topped is not None and [line.amount for line in topped.credited] == [Decimal("0.6")]
    credits = {c.account_id: c for c in await helpers.rows(database, SlaCredit)}
    assert credits[ids["ann"]].amount == Decimal("1.05") and not credits[ids["ann"]].provisional
    assert not any(c.provisional for c in credits.values()), "the rest settle as they were"
    entries = await helpers.rows(
        database, LedgerEntry, LedgerEntry.kind == "credit", LedgerEntry.account_id == ids["ann"]
    )
    assert [(e.external_id, e.amount) for e in entries] == [
        (f"sla-credit:2026-03:{ids['ann']}", Decimal("0.45")),
        (f"sla-credit:2026-03:{ids['ann']}:final", Decimal("0.6")),
    ]
    assert await run.run_once(datetime(2026, 4, 13, 9, 0, tzinfo=UTC)) is None, "settled"
    notices = await helpers.outbox(database, OutboxRow.route == "telegram")
    assert "this adds what was still due" in notices[-1].payload["text"]
