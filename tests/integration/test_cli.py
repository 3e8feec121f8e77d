"""The `supportbot` command as an operator runs it: real process, real database."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests import helpers
from tests.conftest import Clock, Database
from tests.helpers import email, telegram
from tickets.agents import add_agent
from tickets.desk import Desk
from tickets.model import Role
from tickets.policy import SlaPolicy
from tickets.rendering import Templates
from tickets.tables import Quarantined

ROOT = Path(__file__).resolve().parents[2]


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "IMAP_", "SMTP_"))
    }
    environ.update({"PYTHONPATH": str(ROOT), **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "supportbot", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_run_without_channels_says_what_is_missing(tmp_path: Path) -> None:
    result = cli("run", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "TELEGRAM_TOKEN" in result.stderr and "IMAP_HOST" in result.stderr


def test_broken_config_is_one_line_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "TELEGRAM_TOKEN=123456:ABCdefGHIjklMNOpqrSTUvwxYZ012345\nAGENT_CHAT_ID=the-agents\n",
        encoding="utf-8",
    )
    result = cli("run", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("supportbot: configuration error: AGENT_CHAT_ID:")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "ABCdefGHI" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["tickets", "show", "abc"],
        ["tickets", "list", "--status", "lost"],
        ["agents", "add", "not-a-number"],
        ["agents", "add", "5", "--role", "boss"],
        ["frobnicate"],
        [],
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(tmp_path: Path, args: list[str]) -> None:
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "see supportbot" in result.stderr


def test_sqlite_default_creates_and_upgrades_itself(tmp_path: Path) -> None:
    result = cli("tickets", "list", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "no tickets"
    assert (tmp_path / "supportbot.db").is_file()


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_tickets_and_agents_commands(
    database: Database, database_url: str, clock: Clock, policy: SlaPolicy, tmp_path: Path
) -> None:
    desk = Desk(database.sessions, policy, Templates(), clock=clock)
    env = {"DATABASE_URL": database_url}
    assert (
        cli(
            "agents", "add", "9001", "--role", "admin", "--name", "Ada", cwd=tmp_path, env=env
        ).returncode
        == 0
    )
    assert cli("agents", "add", "9002", cwd=tmp_path, env=env).returncode == 0
    listed = cli("agents", "list", "--json", cwd=tmp_path, env=env)
    assert [(a["telegram_id"], a["role"]) for a in json.loads(listed.stdout)] == [
        (9001, "admin"),
        (9002, "agent"),
    ]
    removed = cli("agents", "remove", "9002", cwd=tmp_path, env=env)
    assert removed.returncode == 0 and "removed 9002" in removed.stdout
    again = cli("agents", "remove", "9002", cwd=tmp_path, env=env)
    assert again.returncode == 2 and again.stderr.strip() == "supportbot: 9002 is not an agent"

    first = await desk.receive(telegram(1, "Where are my credits?", name="Ann"))
    second = await desk.receive(
        email("bob@example.com", "Refund please", name="Bob", subject="Refund")
    )
    async with database.sessions.begin() as session:
        await add_agent(session, 9003, Role.AGENT, "Sam", at=clock.now, actor="test")
    await desk.note(second.ticket, 9003, "checking the ledger")

    listing = cli("tickets", "list", "--json", cwd=tmp_path, env=env)
    assert listing.returncode == 0, listing.stderr
    rows = json.loads(listing.stdout)
    assert [(r["ticket"], r["customer"], r["channel"]) for r in rows] == [
        (second.ticket, "Bob", "email"),
        (first.ticket, "Ann", "telegram"),
    ]
    table = cli("tickets", "list", "--status", "waiting", cwd=tmp_path, env=env)
    # The tickets were written on the test clock (24 Nov 2026); the command runs on real time.
    assert "Ann" in table.stdout and "Bob" in table.stdout and "breached" in table.stdout

    shown = cli("tickets", "show", f"#{second.ticket}", "--json", cwd=tmp_path, env=env)
    view = json.loads(shown.stdout)
    assert view["subject"] == "Refund" and view["customer"] == "Bob"
    assert [(m["direction"], m["text"]) for m in view["messages"]] == [
        ("in", "Refund please"),
        ("note", "checking the ledger"),
    ]
    text = cli("tickets", "show", str(first.ticket), cwd=tmp_path, env=env).stdout
    assert "Where are my credits?" in text and "due Wed 25 Nov 2026, 09:00 UTC" in text

    missing = cli("tickets", "show", "999", cwd=tmp_path, env=env)
    assert (
        missing.returncode == 2 and missing.stderr.strip() == "supportbot: there is no ticket #999"
    )
    assert (
        cli("tickets", "list", "--status", "closed", cwd=tmp_path, env=env).stdout.strip()
        == "no tickets"
    )


def test_db_upgrade_reports_the_revision(tmp_path: Path) -> None:
    result = cli("db", "upgrade", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    current, newest = re.fullmatch(
        r"schema revision (\w+) \(newest (\w+)\)\n", result.stdout
    ).groups()  # type: ignore[union-attr]
    assert current == newest


def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    env = {"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    result = cli("tickets", "list", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("supportbot: cannot reach the database")
    assert result.stderr.count("\n") == 1


@pytest.mark.slow
async def test_mail_quarantine_list_and_retry(
    database: Database, database_url: str, clock: Clock, policy: SlaPolicy, tmp_path: Path
) -> None:
    desk = Desk(database.sessions, policy, Templates(), clock=clock)
    good = (
        b"From: Carol <carol@example.com>\r\nTo: support@example.com\r\n"
        b"Subject: Lost deposit\r\nMessage-ID: <q1@example.com>\r\n\r\nMy deposit is missing.\r\n"
    )
    fixed = await desk.quarantine("imap", "7:42", good, "RuntimeError: a bug, since fixed")
    broken = await desk.quarantine("imap", "7:43", b"", "MailParseError: empty")
    env = {
        "DATABASE_URL": database_url,
        "TELEGRAM_TOKEN": "123456:ABCdefGHIjklMNOpqrSTUvwxYZ012345",
        "AGENT_CHAT_ID": "-100123",
        "IMAP_HOST": "127.0.0.1",
        "IMAP_USER": "support",
        "IMAP_PASSWORD": "secret",
        "SMTP_HOST": "127.0.0.1",
        "SUPPORT_ADDRESS": "support@example.com",
    }
    listing = cli("mail", "quarantine", "list", cwd=tmp_path, env=env)
    assert listing.returncode == 0, listing.stderr
    assert "7:42" in listing.stdout and "a bug, since fixed" in listing.stdout

    retried = cli("mail", "quarantine", "retry", str(fixed), cwd=tmp_path, env=env)
    assert retried.returncode == 0, retried.stderr
    [ticket] = await helpers.tickets(database)
    assert f"now on ticket #{ticket.id}" in retried.stdout
    [message] = await helpers.messages(database, ticket.id)
    assert (
        message.text.strip() == "My deposit is missing."
        and message.external_id == "<q1@example.com>"
    )
    again = cli("mail", "quarantine", "retry", str(fixed), cwd=tmp_path, env=env)
    assert again.returncode == 2 and "already taken in" in again.stderr

    failing = cli("mail", "quarantine", "retry", str(broken), cwd=tmp_path, env=env)
    assert failing.returncode == 2 and "still fails" in failing.stderr
    assert failing.stderr.count("\n") == 1
    [row] = [r for r in await helpers.rows(database, Quarantined) if r.id == broken]
    assert row.retries == 1 and row.resolved_at is None
