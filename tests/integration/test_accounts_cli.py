"""`supportbot accounts import` as an operator runs it: real process, real database, a terminal."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

from accounts.tables import Account
from tests import helpers
from tests.conftest import Database
from tests.integration.test_accounts_import import CSV
from tests.integration.test_cli import ROOT, cli


def test_import_then_reimport_then_a_bad_file(database: Database, tmp_path: Path) -> None:
    env = {"DATABASE_URL": database.url}
    export = tmp_path / "export.csv"
    export.write_text(CSV, encoding="utf-8")
    first = cli("accounts", "import", str(export), cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    assert "accounts: 2 created" in first.stdout and "payments: 3 added" in first.stdout
    assert "importing" not in first.stderr  # stderr is no terminal here: no progress line
    again = cli("accounts", "import", str(export), cwd=tmp_path, env=env)
    assert "accounts: 0 created, 0 updated; payments: 0 added; usage: 0 added; 7 unchanged" in (
        again.stdout
    )
    bad = tmp_path / "bad.json"
    bad.write_text(
        '[{"type": "account", "id": "A9", "email": "new@example.com"},\n'
        ' {"type": "usage", "id": "U9", "account": "A9", "amount_usd": -1, "at": "2026-11-01"}]',
        encoding="utf-8",
    )
    refused = cli("accounts", "import", str(bad), cwd=tmp_path, env=env)
    assert refused.returncode == 2
    assert refused.stderr.startswith("supportbot: bad.json: line 2: amount_usd must be more than")
    assert refused.stderr.endswith("; nothing was imported\n")
    missing = cli("accounts", "import", str(tmp_path / "nope.csv"), cwd=tmp_path, env=env)
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def on_terminal(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run the command with stderr on a pseudo-terminal; its exit status and what it showed."""
    leader, follower = pty.openpty()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "supportbot", *args],
            cwd=cwd,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            stdout=subprocess.PIPE,
            stderr=follower,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(follower)
    shown = b""
    try:
        while chunk := os.read(leader, 4096):
            shown += chunk
    except OSError:  # the terminal's other end is closed: all is read
        pass
    finally:
        os.close(leader)
    return result.returncode, shown.decode()


async def test_progress_shows_on_a_terminal(database: Database, tmp_path: Path) -> None:
    rows = ["type,id,email"] + [f"account,A{i},c{i}@example.com" for i in range(1200)]
    export = tmp_path / "big.csv"
    export.write_text("\n".join(rows) + "\n", encoding="utf-8")
    status, text = on_terminal(
        ["accounts", "import", str(export)], tmp_path, {"DATABASE_URL": database.url}
    )
    assert status == 0
    assert "importing: 500/1,200 records (41%)" in text
    assert "importing: 1,200/1,200 records (100%)" in text
    assert len(await helpers.rows(database, Account)) == 1200
