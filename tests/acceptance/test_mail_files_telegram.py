"""End to end: files a customer mails reach the agents' topic (issue 15, point 2).

A mail appended to Dovecot is read by the running service; the local Bot API server shows what
the agents' group received: images as photos, other files as documents, with their bytes, and a
file too large to post listed with its size.
"""

from __future__ import annotations

import email.policy
import struct
import zlib
from email.message import EmailMessage
from email.utils import make_msgid

import pytest
from sqlalchemy import select

from tests import helpers
from tests.conftest import Database
from tests.mailservers import (  # noqa: F401 - fixtures are found by name
    SUPPORT,
    Dovecot,
    SmtpServer,
    dovecot_fixture,
    eventually,
    mailbox_fixture,
    service_mail_settings,
    smtp_server_fixture,
    tls_files_fixture,
)
from tests.telegram_harness import running_desk
from tickets.tables import MessageFile


def png(width: int = 4, height: int = 3) -> bytes:
    """A small valid PNG."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def mail_with_files(files: list[tuple[str, str, bytes]]) -> bytes:
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = "Carol <carol@example.org>"
    msg["To"] = SUPPORT
    msg["Subject"] = "Screenshots of the failed top-up"
    msg["Message-ID"] = make_msgid(domain="example.org")
    msg.set_content("Here are the screenshot and the invoice.")
    for name, mime, data in files:
        main, _, sub = mime.partition("/")
        msg.add_attachment(data, maintype=main, subtype=sub, filename=name)
    return msg.as_bytes()


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_mailed_files_show_in_the_topic_and_a_too_large_one_is_listed(
    database: Database, dovecot: Dovecot, mailbox: str, smtp_server: SmtpServer
) -> None:
    picture, big = png(), b"\x00" * (10 * 1024 * 1024 + 1)  # over the intake's 10 MB cap
    settings = service_mail_settings(dovecot, mailbox, smtp_server)
    async with running_desk(database, extra=settings) as desk:
        dovecot.append(
            mailbox,
            mail_with_files(
                [
                    ("screen.png", "image/png", picture),
                    ("invoice.pdf", "application/pdf", PDF),
                    ("wallet-dump.bin", "application/octet-stream", big),
                ]
            ),
        )
        [ticket] = await eventually(lambda: helpers.tickets(database), within=30)
        n = ticket.id
        topic = await desk.topic_of(n)
        listing = await desk.wait_group(f"📎 #{n}: too large to post here", within=30)
        assert listing.thread_id == topic
        assert "wallet-dump.bin — 10.0 MB" in (listing.text or "")

        in_topic = desk.server.sent_to(desk.group, topic)
        [photo] = [m for m in in_topic if m.method == "sendPhoto"]
        assert photo.text == f"📎 #{n} · screen.png ({len(picture)} B)"
        assert photo.file_bytes == picture
        [document] = [m for m in in_topic if m.method == "sendDocument"]
        assert document.file_name == "invoice.pdf"
        assert document.file_bytes == PDF
        assert (document.text or "").startswith(f"📎 #{n} · invoice.pdf (")
        order = [m.message_id for m in in_topic]
        assert order.index(photo.message_id) < order.index(document.message_id)
        assert order.index(document.message_id) < order.index(listing.message_id)
        async with database.sessions() as session:
            positions = list(await session.scalars(select(MessageFile.position)))
        assert sorted(positions) == [0, 1], "the file over the cap was never kept"
