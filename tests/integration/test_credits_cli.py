"""`supportbot credits` as an operator runs it: real process, real database, both kinds."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from accounts.tables import LedgerEntry, SlaCredit
from tests import helpers
from tests.conftest import Database
from tests.integration.test_cli import cli
from tests.integration.test_credits import march_ledgers
from tickets.months import Month
from tickets.tables import OutboxRow

MARCH = Month(2026, 3)


def checks_file(path: Path, down_minutes: int) -> Path:
    """A minute-by-minute checks file for March 2026: the first `down_minutes` failed."""
    lines = ["timestamp,ok"]
    for minute in range(31 * 1440):
        stamp = (MARCH.start + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%SZ")
        lines.append(f"{stamp},{0 if minute < down_minutes else 1}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def test_preview_then_apply_then_again(
    database: Database, database_url: str, tmp_path: Path
) -> None:
    await march_ledgers(database)
    env = {"DATABASE_URL": database_url}
    checks = checks_file(tmp_path / "checks.csv", down_minutes=300)
    maintenance = tmp_path / "maintenance.csv"
    maintenance.write_text("start,end\n2026-03-10T02:00:00Z,2026-03-10T03:00:00Z\n")
    source = ["--uptime-file", str(checks), "--maintenance", str(maintenance)]

    preview = cli("credits", "--month", "2026-03", *source, cwd=tmp_path, env=env)
    assert preview.returncode == 0, preview.stderr
    out = preview.stdout
    # 44,640 minutes, 60 of maintenance: 44,280 up of 44,580 = 99.32705… %
    assert "uptime 99.3270 % (checks file checks.csv: 44,280 of 44,580 minutes up" in out
    assert "ann@example.com          $45.00       $0.45  to credit" in out
    assert "eve@example.com           $0.00       $0.00  nothing spent" in out
    assert "gus@example.com" not in out and "hal@example.com" not in out
    assert "5 to credit, $5.375 in all" in out and "add --apply" in out
    assert await helpers.rows(database, SlaCredit) == []

    applied = cli("credits", "--month", "2026-03", *source, "--apply", cwd=tmp_path, env=env)
    assert applied.returncode == 0, applied.stderr
    assert "Applied: 5 account(s) credited, $5.375 in all." in applied.stdout
    assert len(await helpers.rows(database, SlaCredit)) == 5
    assert [row.route for row in await helpers.outbox(database, OutboxRow.route == "agents")] == [
        "agents"
    ]

    again = cli(
        "credits",
        "--month",
        "2026-03",
        "--uptime",
        "98",
        "--apply",
        "--json",
        cwd=tmp_path,
        env=env,
    )
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["applied"] == {"credited": [], "total": "0", "already": 0}
    assert [a["status"] for a in report["accounts"]].count("credited already") == 5
    assert len(await helpers.rows(database, LedgerEntry, LedgerEntry.kind == "credit")) == 5


async def test_uptime_that_kept_the_promise_credits_nobody(
    database: Database, database_url: str, tmp_path: Path
) -> None:
    await march_ledgers(database)
    env = {"DATABASE_URL": database_url}
    export = tmp_path / "instatus.json"
    export.write_text(
        json.dumps(
            {
                "incidents": [
                    {
                        "id": "x",
                        "name": "API errors",
                        "started": "2026-03-05T10:00:00Z",
                        "resolved": "2026-03-05T13:00:00Z",
                        "impact": "MAJOROUTAGE",
                    }
                ]
            }
        )
    )
    result = cli(
        "credits", "--month", "2026-03", "--instatus", str(export), "--apply", cwd=tmp_path, env=env
    )
    assert result.returncode == 0, result.stderr
    # 3 hours of 744: 99.5967… %
    assert "uptime 99.5967 %" in result.stdout
    assert "not below 99.5 %: no SLA credits for 2026-03" in result.stdout
    assert await helpers.rows(database, SlaCredit) == []


async def test_a_bad_file_is_one_line_and_nothing_is_applied(
    database: Database, database_url: str, tmp_path: Path
) -> None:
    await march_ledgers(database)
    env = {"DATABASE_URL": database_url}
    checks = checks_file(tmp_path / "checks.csv", down_minutes=900)
    with checks.open("a") as file:
        file.write("2026-03-31T23:59:30Z,perhaps\n")
    result = cli(
        "credits",
        "--month",
        "2026-03",
        "--uptime-file",
        str(checks),
        "--apply",
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 2
    assert result.stderr == (
        "supportbot: checks.csv line 44642: ok 'perhaps' is not one of 1/0, true/false, up/down, "
        "ok/fail\n"
    )
    assert await helpers.rows(database, SlaCredit) == []
    assert await helpers.rows(database, LedgerEntry, LedgerEntry.kind == "credit") == []
    [refusal] = await helpers.audit(database)
    assert (refusal.action, refusal.actor, refusal.details["month"]) == (
        "refused:sla_credits",
        "cli",
        "2026-03",
    )
    assert "line 44642" in refusal.details["reason"]


@pytest.mark.slow
def test_bad_arguments_are_one_line(tmp_path: Path) -> None:
    cases = {
        ("--month", "March", "--uptime", "99"): "expected a month as YYYY-MM",
        ("--month", "2026-03", "--uptime", "lots"): "expected an uptime percentage",
        ("--month", "2026-03", "--uptime", "99", "--maintenance", "m.csv"): "--maintenance goes",
        ("--month", "2026-03"): "no uptime given",
        ("--month", "2026-03", "--instatus", "missing.json"): "cannot read missing.json",
    }
    for args, message in cases.items():
        result = cli("credits", *args, cwd=tmp_path)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert message in result.stderr, result.stderr
    both = cli("credits", "--month", "2026-03", "--uptime", "99", "--instatus", "x", cwd=tmp_path)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
