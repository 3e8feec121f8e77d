"""`supportbot payouts` as finance runs it: a real process on both databases."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from accounts.tables import Payout
from tests import helpers
from tests.conftest import Clock, Database
from tests.integration.test_cli import cli
from tests.integration.test_refunds import AGENT, refunds_of, setup
from tickets.desk import Desk
from tickets.tables import AuditEntry, OutboxRow


@pytest.mark.slow
async def test_list_export_and_mark_sent(
    database: Database, desk: Desk, clock: Clock, tmp_path: Path
) -> None:
    number, _ = await setup(database, desk, clock)
    refunds = refunds_of(database, clock)
    panel = await refunds.panel(number, AGENT)
    await refunds.confirm(number, AGENT, panel.plan.fingerprint)
    first, _second = await helpers.rows(database, Payout)
    env = {"DATABASE_URL": database.url}

    listed = cli("payouts", "list", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 2 and "$20.00" in lines[0] and "TNew" in lines[0] and "pending" in lines[0]

    target = tmp_path / "payouts.csv"
    exported = cli("payouts", "export", "--csv", str(target), cwd=tmp_path, env=env)
    assert exported.returncode == 0, exported.stderr
    with target.open(encoding="utf-8") as export:
        rows = list(csv.DictReader(export))
    assert [(r["wallet"], r["amount_usd"], r["status"]) for r in rows] == [
        ("TNew", "20.000000", "pending"),
        ("TOld", "25.000000", "pending"),
    ]
    assert rows[0]["account"] == "ann@example.org" and rows[0]["ticket"] == str(number)

    sent = cli("payouts", "mark-sent", str(first.id), "0xabc123def456", cwd=tmp_path, env=env)
    assert sent.returncode == 0, sent.stderr
    assert "0xabc123def456" in sent.stdout
    again = cli("payouts", "mark-sent", str(first.id), "0xabc123def456", cwd=tmp_path, env=env)
    assert again.returncode == 2 and "already marked sent" in again.stderr
    bad = cli("payouts", "mark-sent", "999", "0xabc123def456", cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "no payout 999" in bad.stderr

    pending = cli("payouts", "list", "--status", "pending", cwd=tmp_path, env=env)
    assert len(pending.stdout.splitlines()) == 1 and "TOld" in pending.stdout
    notices = await helpers.outbox(database, OutboxRow.kind == "notice")
    assert "Transaction hash: 0xabc123def456" in notices[-1].payload["text"]
    audit = [e.action for e in await helpers.rows(database, AuditEntry)]
    assert audit.count("payout_sent") == 1 and audit.count("refused:payout_sent") == 2
