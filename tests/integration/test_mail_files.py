"""Mailed files (issue 15, point 2): the intake keeps their bytes and queues their post."""

from __future__ import annotations

from sqlalchemy import select

from tests import helpers
from tests.conftest import Database
from tests.helpers import email, telegram
from tickets.desk import Desk
from tickets.mailed_files import MailedFile, mailed_files
from tickets.model import Attachment
from tickets.tables import MessageFile, OutboxRow


def mailed(index: int, name: str, mime: str, data: bytes | None, size: int) -> Attachment:
    return Attachment(
        kind="document",
        ref=f"imap:1:7:{index}",
        filename=name,
        mime_type=mime,
        size=size,
        data=data,
    )


async def test_mailed_files_are_kept_and_queued_after_the_notice(
    desk: Desk, database: Database
) -> None:
    files = (
        mailed(0, "screen.png", "image/png", b"\x89PNG-bytes", 10),
        mailed(1, "huge.iso", "application/octet-stream", None, 80_000_000),
    )
    intake = await desk.receive(email("carol@example.org", "see attached", attachments=files))
    [message] = await helpers.messages(database, intake.ticket)
    assert [a["filename"] for a in message.attachments] == ["screen.png", "huge.iso"]
    assert "data" not in message.attachments[0], "bytes never go into the message's JSON"
    assert await mailed_files(database.sessions, message.id) == [
        MailedFile(0, "screen.png", "image/png", 10, b"\x89PNG-bytes"),
        MailedFile(1, "huge.iso", "application/octet-stream", 80_000_000, None),
    ]
    rows = await helpers.outbox(database, OutboxRow.kind == "agent_notice")
    assert [r.payload["event"] for r in rows] == ["opened", "mail_files"]
    assert rows[1].payload["message_id"] == message.id
    assert rows[1].ticket_id == intake.ticket
    assert rows[1].payload["text"] == f"📎 #{intake.ticket}: 2 files from the customer's mail"


async def test_no_file_post_for_automated_mail_or_telegram(desk: Desk, database: Database) -> None:
    file = mailed(0, "orig.eml", "message/rfc822", b"From: x", 7)
    await desk.receive(
        email("mailer-daemon@example.org", "bounce", attachments=(file,), automated=True)
    )
    await desk.receive(telegram(1001, "photo", attachments=(Attachment("photo", "AgAD"),)))
    await desk.receive(email("dan@example.org", "no files"))
    events = [
        r.payload["event"] for r in await helpers.outbox(database, OutboxRow.kind == "agent_notice")
    ]
    assert "mail_files" not in events
    async with database.sessions() as session:
        assert list(await session.scalars(select(MessageFile.message_id))) == []


async def test_a_redelivered_mail_keeps_its_files_once(desk: Desk, database: Database) -> None:
    file = mailed(0, "a.pdf", "application/pdf", b"%PDF", 4)
    incoming = email("carol@example.org", "x", attachments=(file,), dedup_key=("imap", "1:7"))
    first = await desk.receive(incoming)
    again = await desk.receive(incoming)
    assert again.duplicate and again.message_id == first.message_id
    async with database.sessions() as session:
        assert list(await session.scalars(select(MessageFile.position))) == [0]
    events = [
        r.payload["event"] for r in await helpers.outbox(database, OutboxRow.kind == "agent_notice")
    ]
    assert events.count("mail_files") == 1
