"""Kill the IMAP intake mid-way (SIGKILL, in its own process) and start it again: every mail is in
the database exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy import func, select

from mail.store import MailCursor
from tests.conftest import Database
from tests.mailservers import (  # noqa: F401 - fixtures are found by name
    Dovecot,
    customer_mail,
    dovecot_fixture,
    eventually,
    mailbox_fixture,
    tls_files_fixture,
)
from tickets.tables import InboundKey, Message

MAILS = 600
HELD_BACK = 50  # appended only after the third kill, so that run cannot reach the end first
ROOT = Path(__file__).resolve().parents[2]


def start_intake(
    database: Database, dovecot: Dovecot, mailbox: str, log: Path
) -> subprocess.Popen[bytes]:
    with log.open("ab") as errors:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.imap_process", database.url, str(dovecot.port), mailbox],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )


async def stored(database: Database) -> int:
    async with database.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(Message)) or 0)


@pytest.mark.slow
async def test_sigkill_mid_batch_then_restart_stores_every_mail_once(
    database: Database, dovecot: Dovecot, mailbox: str, tmp_path: Path
) -> None:
    log = tmp_path / "intake.log"
    raws = [
        customer_mail(f"c{n % 40}@example.org", f"Question {n}", f"mail number {n}")
        for n in range(MAILS)
    ]
    dovecot.append_many(mailbox, raws[:100])  # waiting before the very first start

    intake = start_intake(database, dovecot, mailbox, log)
    try:
        await until(partial(_at_least, database, 40), log)
    finally:
        kill(intake)
    intake = start_intake(database, dovecot, mailbox, log)
    try:
        await until(partial(_cursor_at, database, mailbox, 100), log)
        dovecot.append_many(mailbox, raws[100:-HELD_BACK])  # arriving while it runs (IDLE)
        await until(partial(_at_least, database, 160), log)
    finally:
        kill(intake)
    intake = start_intake(database, dovecot, mailbox, log)
    try:
        target = min(await stored(database) + 20, MAILS - HELD_BACK)
        await until(partial(_at_least, database, target), log)
    finally:
        kill(intake)
    dovecot.append_many(mailbox, raws[-HELD_BACK:])

    last = start_intake(database, dovecot, mailbox, log)
    try:
        await until(partial(_at_least, database, MAILS), log, within=40)
        await asyncio.sleep(0.5)  # anything doubled would show up now
    finally:
        last.send_signal(signal.SIGTERM)
        last.wait(15)
    assert last.returncode == 0, log.read_text(errors="replace")[-2000:]

    async with database.sessions() as session:
        texts = (await session.scalars(select(Message.text))).all()
        keys = await session.scalar(select(func.count()).select_from(InboundKey))
        cursor = await session.get(MailCursor, mailbox)
    assert sorted(texts) == sorted(f"mail number {n}" for n in range(MAILS))
    assert keys == MAILS
    assert cursor is not None and cursor.last_uid == MAILS
    flags = dovecot.flags(mailbox)
    assert len(flags) == MAILS and all(r"\Seen" in f for f in flags.values())


async def until(check: Callable[[], Awaitable[bool]], log: Path, within: float = 30) -> None:
    """Wait for `check`; on a timeout, show what the intake processes logged."""
    try:
        await eventually(check, within=within)
    except AssertionError as error:
        logged = await asyncio.to_thread(log.read_text, errors="replace")
        raise AssertionError(f"{error}; intake log:\n{logged[-3000:]}") from error


def kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(10)


async def _cursor_at(database: Database, mailbox: str, uid: int) -> bool:
    async with database.sessions() as session:
        cursor = await session.get(MailCursor, mailbox)
        return cursor is not None and cursor.last_uid >= uid


async def _at_least(database: Database, n: int) -> bool:
    return await stored(database) >= n
