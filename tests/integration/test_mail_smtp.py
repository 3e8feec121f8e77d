"""The SMTP sender under the real outbox worker, against a recording aiosmtpd on loopback."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import pytest

from mail.settings import Tls
from mail.smtp import SmtpSender
from tests import helpers
from tests.conftest import Clock, Database
from tests.mailservers import (  # noqa: F401 - fixtures are found by name
    SUPPORT,
    SmtpServer,
    TlsFiles,
    password_check,
    smtp_server_fixture,
    tls_files_fixture,
)
from tickets.agents import add_agent
from tickets.desk import Desk
from tickets.model import (
    Attachment,
    Channel,
    CustomerRef,
    IncomingMessage,
    OutboxKind,
    Role,
    Route,
)
from tickets.outbox import Delivered, Failed, OutboxItem, RetryLater, RetryPolicy
from tickets.outbox_worker import OutboxWorker
from tickets.ports import FileData
from tickets.tables import OutboxRow

AGENT = 9003
ANN = "ann@example.org"


@pytest.fixture
async def sender(smtp_server: SmtpServer, clock: Clock) -> AsyncIterator[SmtpSender]:
    made = SmtpSender(smtp_server.settings(), SUPPORT, clock=clock, timeout=5)
    try:
        yield made
    finally:
        await made.close()


def worker(database: Database, desk: Desk, clock: Clock, sender: SmtpSender) -> OutboxWorker:
    retry = RetryPolicy(base_delay=10, max_attempts=4, jitter=0, rng=random.Random(1))
    return OutboxWorker(database.sessions, {Route.EMAIL: sender}, desk, clock=clock, retry=retry)


def customer_writes(
    address: str = ANN, subject: str = "Top-up missing", message_id: str = "<ann-1@example.org>"
) -> IncomingMessage:
    return IncomingMessage(
        customer=CustomerRef(name="Ann", email=address),
        channel=Channel.EMAIL,
        text="My top-up is not on my balance.",
        external_id=message_id,
        dedup_key=("imap", message_id),
        reply_address=address,
        subject=subject,
        new_ticket=True,
    )


async def agent(database: Database, clock: Clock) -> None:
    async with database.sessions.begin() as session:
        await add_agent(session, AGENT, Role.AGENT, "Sam", at=clock.now, actor="test")


def parts(message: EmailMessage) -> dict[str, str]:
    found = {}
    for part in message.walk():
        if part.get_content_maintype() == "text":
            found[part.get_content_type()] = str(part.get_content()).replace("\r\n", "\n")
    return found


async def test_receipt_and_reply_arrive_threaded_with_text_and_html(
    database: Database, desk: Desk, clock: Clock, smtp_server: SmtpServer, sender: SmtpSender
) -> None:
    await agent(database, clock)
    ticket = (await desk.receive(customer_writes())).ticket
    delivering = worker(database, desk, clock, sender)
    await delivering.run_once()

    [receipt] = smtp_server.received
    assert (receipt.mail_from, receipt.rcpt_tos) == (SUPPORT, (ANN,))
    mail = receipt.message
    assert mail["Subject"] == f"[#{ticket}] Top-up missing"
    assert mail["Auto-Submitted"] == "auto-generated"
    assert mail["X-Supportbot-Loop"] == SUPPORT
    assert mail["In-Reply-To"] == "<ann-1@example.org>"
    assert f"ticket number is #{ticket}" in parts(mail)["text/plain"]

    message_id = await desk.reply(ticket, AGENT, "We found it <b>now</b>.\n\nIt is credited.")
    await delivering.run_once()
    [_, answer] = smtp_server.received
    mail = answer.message
    [stored] = [m for m in await helpers.messages(database, ticket) if m.id == message_id]
    assert mail["From"] == f"Support <{SUPPORT}>"
    assert mail["To"] == ANN
    assert mail["Subject"] == f"[#{ticket}] Re: Top-up missing"
    assert mail["Message-ID"] == stored.external_id
    assert mail["In-Reply-To"] == "<ann-1@example.org>"
    references = str(mail["References"]).split()
    assert references[0] == "<ann-1@example.org>"
    assert receipt.message["Message-ID"] in references
    assert mail["Date"] is not None
    assert mail["Auto-Submitted"] is None, "an agent's answer is not automatic"
    assert mail["X-Supportbot-Loop"] == SUPPORT
    texts = parts(mail)
    assert texts["text/plain"].startswith("We found it <b>now</b>.\n\nIt is credited.\n")
    assert "Sam" in texts["text/plain"]
    assert "<p" in texts["text/html"]
    assert "We found it &lt;b&gt;now&lt;/b&gt;." in texts["text/html"]
    assert stored.delivery == "delivered"
    [row] = await helpers.outbox(database, OutboxRow.kind == "reply")
    assert (row.status, row.external_id) == ("delivered", stored.external_id)
    assert (await helpers.ticket(database, ticket)).waiting_since is None


async def test_line_breaks_in_a_customer_subject_cannot_inject_headers(
    database: Database, desk: Desk, clock: Clock, smtp_server: SmtpServer, sender: SmtpSender
) -> None:
    await agent(database, clock)
    evil = "Hello\r\nBcc: eve@evil.example\r\nX-Injected: yes\n\nbody"
    ticket = (await desk.receive(customer_writes(subject=evil))).ticket
    await desk.reply(ticket, AGENT, "Answer")
    await worker(database, desk, clock, sender).run_once()

    assert len(smtp_server.received) == 2
    for received in smtp_server.received:
        assert received.rcpt_tos == (ANN,)
        head = received.data.split(b"\r\n\r\n", 1)[0]
        lines = head.split(b"\r\n")
        assert not any(line.lower().startswith((b"bcc:", b"x-injected:")) for line in lines)
        subject = received.message["Subject"]
        assert "\n" not in subject and "\r" not in subject
        assert "Bcc: eve@evil.example X-Injected: yes body" in subject
        assert received.message["X-Injected"] is None and received.message["Bcc"] is None


async def test_a_4xx_is_retried_then_delivered(
    database: Database, desk: Desk, clock: Clock, smtp_server: SmtpServer, sender: SmtpSender
) -> None:
    smtp_server.handler.rcpt_replies.append("451 4.3.0 Mailbox busy, try later")
    await desk.receive(customer_writes())
    delivering = worker(database, desk, clock, sender)
    await delivering.run_once()

    [row] = await helpers.outbox(database, OutboxRow.route == "email")
    assert (row.status, row.attempts) == ("pending", 1)
    assert "451" in (row.last_error or "")
    assert smtp_server.received == []
    clock.advance(seconds=10)
    await delivering.run_once()
    [row] = await helpers.outbox(database, OutboxRow.route == "email")
    assert row.status == "delivered"
    assert len(smtp_server.received) == 1


async def test_a_5xx_fails_the_reply_and_the_agents_are_told(
    database: Database, desk: Desk, clock: Clock, smtp_server: SmtpServer, sender: SmtpSender
) -> None:
    await agent(database, clock)
    ticket = (await desk.receive(customer_writes())).ticket
    delivering = worker(database, desk, clock, sender)
    await delivering.run_once()
    message_id = await desk.reply(ticket, AGENT, "Answer")
    smtp_server.handler.rcpt_replies.append("550 5.1.1 No such user here")
    await delivering.run_once()

    [reply] = await helpers.outbox(database, OutboxRow.kind == "reply")
    assert reply.status == "failed" and "550 5.1.1" in (reply.last_error or "")
    [stored] = [m for m in await helpers.messages(database, ticket) if m.id == message_id]
    assert stored.delivery == "failed"
    notices = await helpers.outbox(database, OutboxRow.route == "agents")
    failed = [n for n in notices if n.payload["event"] == "delivery_failed"]
    assert len(failed) == 1 and "550 5.1.1 No such user here" in failed[0].payload["text"]
    assert (await helpers.ticket(database, ticket)).waiting_since is not None


@pytest.mark.parametrize("connections", [1, 3])
async def test_batches_reuse_the_configured_connections_and_keep_each_customers_order(
    database: Database, desk: Desk, clock: Clock, smtp_server: SmtpServer, connections: int
) -> None:
    settings = replace(smtp_server.settings(), connections=connections)
    sender = SmtpSender(settings, SUPPORT, clock=clock, timeout=5)
    await agent(database, clock)
    try:
        tickets = [
            (
                await desk.receive(customer_writes(f"c{n}@example.org", message_id=f"<m{n}@x>"))
            ).ticket
            for n in range(20)
        ]
        assert await worker(database, desk, clock, sender).run_once() == 20  # the receipts
        for ticket in tickets:
            for answer in ("first answer", "second answer"):
                await desk.reply(ticket, AGENT, answer)
        assert await worker(database, desk, clock, sender).run_once() == 40
    finally:
        await sender.close()
    assert sorted(r.rcpt_tos[0] for r in smtp_server.received) == sorted(
        f"c{n}@example.org" for n in range(20) for _ in range(3)
    )
    for n in range(20):
        got = [r for r in smtp_server.received if r.rcpt_tos == (f"c{n}@example.org",)]
        kinds = [
            "receipt" if "Auto-Submitted" in r.message else parts(r.message)["text/plain"]
            for r in got
        ]
        assert kinds[0] == "receipt"
        assert "first answer" in kinds[1] and "second answer" in kinds[2]
    assert smtp_server.handler.connections == connections
    assert sender.connections_opened == connections, "both batches reused the same connections"


async def test_a_closed_kept_open_connection_is_replaced_and_a_dead_server_retried(
    database: Database, desk: Desk, clock: Clock, smtp_server: SmtpServer, sender: SmtpSender
) -> None:
    delivering = worker(database, desk, clock, sender)
    await desk.receive(customer_writes("a@example.org", message_id="<a@example.org>"))
    await delivering.run_once()
    smtp_server.stop()  # drops the connection the sender keeps open
    smtp_server.start()
    await desk.receive(customer_writes("b@example.org", message_id="<b@example.org>"))
    await delivering.run_once()
    assert [r.rcpt_tos for r in smtp_server.received] == [("a@example.org",), ("b@example.org",)]

    smtp_server.stop()
    await desk.receive(customer_writes("c@example.org", message_id="<c@example.org>"))
    await delivering.run_once()
    row = (await helpers.outbox(database, OutboxRow.recipient == "c@example.org"))[0]
    assert row.status == "pending" and "unavailable" in (row.last_error or "")
    smtp_server.start()
    clock.advance(seconds=10)
    await delivering.run_once()
    row = (await helpers.outbox(database, OutboxRow.recipient == "c@example.org"))[0]
    assert row.status == "delivered"


def item(**payload: Any) -> OutboxItem:
    return OutboxItem(
        id=1,
        route=Route.EMAIL,
        recipient=str(payload.pop("recipient", ANN)),
        kind=OutboxKind.REPLY,
        payload={"text": "hi", "subject_line": "[#1] Hi", "message_id": "<r-1@example.com>"}
        | payload,
        ticket_id=1,
        message_id=None,
        attempts=0,
        created_at=datetime(2026, 11, 24, tzinfo=UTC),
    )


async def test_rows_that_can_never_be_mail_fail_without_reaching_the_server(
    smtp_server: SmtpServer, sender: SmtpSender
) -> None:
    [outcome] = await helpers.deliver(
        sender, [item(recipient="ann@example.org\r\nRCPT TO:<x@evil>")]
    )
    assert isinstance(outcome, Failed) and "not a deliverable email address" in outcome.error
    [outcome] = await helpers.deliver(sender, [item(message_id="no brackets")])
    assert isinstance(outcome, Failed) and "Message-ID" in outcome.error
    assert smtp_server.received == []
    assert smtp_server.handler.connections == 0


async def test_agent_files_without_a_loader_are_named_in_the_mail(
    smtp_server: SmtpServer, sender: SmtpSender
) -> None:
    files = [{"kind": "document", "ref": "tg:1", "filename": "invoice.pdf"}]
    [outcome] = await helpers.deliver(sender, [item(attachments=files, agent="Sam")])
    assert outcome == Delivered(external_id="<r-1@example.com>")
    text = parts(smtp_server.received[0].message)["text/plain"]
    assert "could not be included in this email: invoice.pdf" in text


async def test_agent_files_are_attached_through_the_loader(
    smtp_server: SmtpServer, clock: Clock
) -> None:
    async def load(attachment: Attachment) -> FileData:
        assert attachment.ref == "tg:1"
        return FileData("invoice.pdf", "application/pdf", b"%PDF-1.4 invoice")

    sending = SmtpSender(
        smtp_server.settings(), SUPPORT, clock=clock, timeout=5, attachment_loader=load
    )
    files = [{"kind": "document", "ref": "tg:1", "filename": "invoice.pdf"}]
    try:
        [outcome] = await helpers.deliver(sending, [item(attachments=files)])
    finally:
        await sending.close()
    assert isinstance(outcome, Delivered)
    message = smtp_server.received[0].message
    [attached] = list(message.iter_attachments())
    assert attached.get_filename() == "invoice.pdf"
    assert attached.get_content() == b"%PDF-1.4 invoice"
    assert "could not be included" not in parts(message)["text/plain"]


@pytest.mark.parametrize("mode", [Tls.STARTTLS, Tls.TLS])
async def test_starttls_with_login_and_implicit_tls(
    tls_files: TlsFiles, clock: Clock, mode: Tls
) -> None:
    if mode is Tls.STARTTLS:
        server = SmtpServer(
            tls_context=tls_files.server_context(),
            require_starttls=True,
            authenticator=password_check("mailer", "s3cret"),
        )
        settings_user, settings_password = "mailer", "s3cret"
    else:
        server = SmtpServer(ssl_context=tls_files.server_context())
        settings_user, settings_password = "", ""
    server.start()
    sending = SmtpSender(
        server.settings(mode, settings_user, settings_password),
        SUPPORT,
        clock=clock,
        ssl_context=tls_files.client_context(),
        timeout=5,
    )
    try:
        [outcome] = await helpers.deliver(sending, [item()])
        assert outcome == Delivered(external_id="<r-1@example.com>")
        assert [r.rcpt_tos for r in server.received] == [(ANN,)]
        if mode is Tls.STARTTLS:
            wrong = SmtpSender(
                server.settings(mode, "mailer", "wrong"),
                SUPPORT,
                ssl_context=tls_files.client_context(),
                timeout=5,
            )
            [refused] = await helpers.deliver(wrong, [item()])
            await wrong.close()
            assert isinstance(refused, RetryLater), "a login problem is not the mail's fault"
    finally:
        await sending.close()
        server.stop()
