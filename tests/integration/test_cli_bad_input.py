"""The `supportbot` command refuses bad input in one line: no traceback, exit 2, nothing applied.

Each case runs the real command in its own process against a real database, as an operator
would, and then looks at what the database holds.
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from accounts.tables import Account, LedgerEntry, Payment, SlaCredit
from tests import helpers
from tests.conftest import Database
from tests.integration.test_cli import cli
from tickets.months import Month
from tickets.tables import Agent, AuditEntry

TOO_BIG = str(2**63)


def refused_in_one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused command printed (it must have printed exactly that)."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), result.stderr
    return result.stderr.strip()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["tickets", "show", TOO_BIG], "expected a ticket number from 1 to 2147483647"),
        (["tickets", "show", str(2**31)], "expected a ticket number from 1 to 2147483647"),
        (["tickets", "list", "--limit", TOO_BIG], "expected a number from 1 to 2147483647"),
        (["payouts", "mark-sent", TOO_BIG, "0xabcdef12"], "expected a number from 1 to"),
        (["agents", "add", TOO_BIG], "expected a numeric Telegram user id"),
        (["agents", "remove", str(2**64)], "expected a numeric Telegram user id"),
        (["mail", "quarantine", "retry", TOO_BIG], "expected a number from 1 to 2147483647"),
        (["tickets", "show", "9" * 5000], "expected a ticket number"),
        (["report", "--month", "9999-12"], "there is no month '9999-12'"),
        (["credits", "--month", "9999-12", "--uptime", "99"], "got '9999-12'"),
        (["credits", "--month", "2026-03", "--uptime", "1e999999"], "expected an uptime"),
    ],
)
async def test_ids_beyond_what_the_database_holds_are_refused(
    database: Database, tmp_path: Path, args: list[str], says: str
) -> None:
    line = refused_in_one_line(cli(*args, cwd=tmp_path, env={"DATABASE_URL": database.url}))
    assert says in line
    assert await helpers.rows(database, Agent) == []


async def test_the_largest_ids_still_work(database: Database, tmp_path: Path) -> None:
    env = {"DATABASE_URL": database.url}
    biggest = str(2**63 - 1)
    added = cli("agents", "add", biggest, cwd=tmp_path, env=env)
    assert added.returncode == 0 and f"added {biggest} as agent" in added.stdout
    [agent] = await helpers.rows(database, Agent)
    assert agent.telegram_id == 2**63 - 1
    missing = cli("tickets", "show", str(2**31 - 1), cwd=tmp_path, env=env)
    assert refused_in_one_line(missing) == "supportbot: there is no ticket #2147483647"


ACCOUNT = {"type": "account", "id": "A1", "email": "ann@example.com", "plan": "pro"}
PAYMENT = {
    "type": "payment",
    "id": "P1",
    "account": "A1",
    "amount_usd": "50",
    "crypto_amount": "50",
    "currency": "USDT",
    "chain": "tron",
    "wallet": "TWalletAnn1",
    "tx_hash": "0xaaa",
    "paid_at": "2026-11-20T09:00:00Z",
}


@pytest.mark.parametrize(
    ("records", "says"),
    [
        (
            [{**ACCOUNT, "pro_since": "0001-01-01T00:00:00+01:00"}],
            "line 1: pro_since is not an ISO 8601 time",
        ),
        (
            [{**ACCOUNT, "pro_since": "9999-12-31T23:59:59-01:00"}],
            "line 1: pro_since is not an ISO 8601 time",
        ),
        ([{**ACCOUNT, "pro_since": "0001-01-01T00:00:00"}], "pro_since is before 2000"),
        ([ACCOUNT, {**PAYMENT, "paid_at": "9999-12-31T23:59:59"}], "paid_at is in the future"),
        ([ACCOUNT, {**PAYMENT, "paid_at": "2099-01-01T00:00:00Z"}], "paid_at is in the future"),
        ([ACCOUNT, {**PAYMENT, "amount_usd": "1e999999"}], "amount_usd: amount out of range"),
        ([ACCOUNT, {**PAYMENT, "crypto_amount": "1e999999"}], "crypto_amount must have at most"),
        (
            [{**ACCOUNT, "email": "ann@example.com>evil@attacker.example"}],
            "email is not an email address",
        ),
        ([{**ACCOUNT, "email": "ann@example.com, eve@attacker.example"}], "not an email address"),
    ],
)
async def test_imports_refuse_absurd_records(
    database: Database, tmp_path: Path, records: list[dict[str, str]], says: str
) -> None:
    export = tmp_path / "export.json"
    export.write_text(json.dumps(records), encoding="utf-8")
    env = {"DATABASE_URL": database.url}
    result = cli("accounts", "import", str(export), cwd=tmp_path, env=env)
    line = refused_in_one_line(result)
    assert line.startswith("supportbot: export.json: line ") and says in line
    assert line.endswith("; nothing was imported")
    assert await helpers.rows(database, Account) == []
    assert await helpers.rows(database, Payment) == []


@pytest.mark.parametrize(
    "text",
    [
        "[" + '{"type": "account", "id": "A1", "email": "ann@example.com"},' + "1e999999]",
        '[{"type": "payment", "amount_usd": 1e999999}]',
        "[" * 100_000 + "]" * 100_000,
        '{"type": "account", "id": "A1", "email": "a@example.com", "x": '
        + "[" * 100_000
        + "]" * 100_000
        + "}",
    ],
    ids=["bare-number", "huge-number", "nested-arrays", "nested-field"],
)
async def test_imports_refuse_odd_json(database: Database, tmp_path: Path, text: str) -> None:
    export = tmp_path / "export.json"
    export.write_text(text, encoding="utf-8")
    env = {"DATABASE_URL": database.url}
    result = cli("accounts", "import", str(export), cwd=tmp_path, env=env)
    assert "nothing was imported" in refused_in_one_line(result)
    assert await helpers.rows(database, Account) == []


async def test_credits_are_not_applied_for_a_month_that_has_not_ended(
    database: Database, tmp_path: Path
) -> None:
    """A credit for the running month would block the month's real credit for good."""
    now = datetime.now(UTC)
    running = Month.of(now)
    spent_at = max(running.start, now - timedelta(minutes=1))
    records = [
        {**ACCOUNT, "pro_since": "2026-01-01T00:00:00Z"},
        {**PAYMENT, "paid_at": running.start.isoformat()},
        {
            "type": "usage",
            "id": "U1",
            "account": "A1",
            "amount_usd": "40",
            "at": spent_at.isoformat(),
        },
    ]
    export = tmp_path / "export.json"
    export.write_text(json.dumps(records), encoding="utf-8")
    env = {"DATABASE_URL": database.url}
    assert cli("accounts", "import", str(export), cwd=tmp_path, env=env).returncode == 0
    entries = len(await helpers.rows(database, LedgerEntry))

    preview = cli("credits", "--month", str(running), "--uptime", "98", cwd=tmp_path, env=env)
    assert preview.returncode == 0, preview.stderr
    assert "ann@example.com" in preview.stdout and "to credit" in preview.stdout

    for month in (running, running.next()):
        args = ["credits", "--month", str(month), "--uptime", "98", "--apply"]
        line = refused_in_one_line(cli(*args, cwd=tmp_path, env=env))
        assert line == (
            f"supportbot: {month} has not ended: SLA credits are for whole months; apply them "
            f"from {month.end:%Y-%m-%d} 00:00 UTC"
        )
    assert await helpers.rows(database, SlaCredit) == []
    assert len(await helpers.rows(database, LedgerEntry)) == entries
    refusals = [
        entry
        for entry in await helpers.rows(database, AuditEntry)
        if entry.action == "refused:sla_credits"
    ]
    assert [entry.details["month"] for entry in refusals] == [str(running), str(running.next())]
