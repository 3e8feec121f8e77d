"""Built-in mail servers on loopback: the support mailbox (IMAP) and an outgoing-mail sink (SMTP).

`LocalMailServer` is what `supportbot demo` and tests point IMAP_* and SMTP_* at when no real mail
server is around: an in-process IMAP4rev1 server holding one user's one mailbox
(sandbox/imap/server.py; scripted customers `append` their mail to it), and an aiosmtpd sink that
keeps every mail handed to it instead of delivering it (`received`). No TLS: loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller

from mail.settings import ImapSettings, SmtpSettings, Tls
from sandbox.imap.server import LocalImapServer

__all__ = ["Delivery", "LocalMailServer", "SmtpSink"]

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Delivery:
    """One mail the SMTP sink took: when (time.time()), the envelope, and the message."""

    at: float
    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage


class _Keeper:
    """The aiosmtpd handler: accepts every mail and keeps it (it runs in the sink's thread)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.deliveries: list[Delivery] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Keep the mail exactly as it came."""
        data = envelope.original_content or envelope.content or b""
        raw = data if isinstance(data, bytes) else str(data).encode("utf-8", "surrogateescape")
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        delivery = Delivery(time.time(), envelope.mail_from, tuple(envelope.rcpt_tos), message)
        with self.lock:
            self.deliveries.append(delivery)
        return "250 OK: kept by the local SMTP sink"


class SmtpSink:
    """An aiosmtpd Controller (its own thread) on a free loopback port that keeps every mail."""

    def __init__(self, host: str = LOOPBACK) -> None:
        self.host = host
        self.port = 0
        self._keeper = _Keeper()
        self._controller: Controller | None = None

    def start(self) -> None:
        """Listen on a free port; the Controller cannot take port 0, so one is picked here."""
        for attempt in range(5):
            controller = Controller(self._keeper, hostname=self.host, port=_free_port(self.host))
            try:
                controller.start()
            except (OSError, RuntimeError):
                with contextlib.suppress(Exception):
                    controller.stop(no_assert=True)
                if attempt == 4:
                    raise
                continue  # someone took the port between our look and the bind: pick again
            self._controller, self.port = controller, int(controller.port)
            return

    def stop(self) -> None:
        """Stop listening and end the thread."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def deliveries(self) -> list[Delivery]:
        """Every mail taken so far, with its envelope and arrival time, oldest first."""
        with self._keeper.lock:
            return list(self._keeper.deliveries)

    def received(self) -> list[EmailMessage]:
        """Every mail taken so far, oldest first."""
        return [delivery.message for delivery in self.deliveries()]


class LocalMailServer:
    """The support mailbox (IMAP) and the outgoing sink (SMTP), both on loopback free ports."""

    def __init__(
        self,
        *,
        user: str = "support",
        password: str = "local-mail-password",  # noqa: S107 - loopback servers for a demo
        mailbox: str = "INBOX",
        host: str = LOOPBACK,
    ) -> None:
        self.host = host
        self.imap = LocalImapServer(user, password, mailbox=mailbox, host=host)
        self.smtp = SmtpSink(host)

    async def start(self) -> None:
        """Start both servers (the SMTP thread is started off the event loop)."""
        await self.imap.start()
        try:
            await asyncio.to_thread(self.smtp.start)
        except BaseException:
            await self.imap.stop()
            raise

    async def stop(self) -> None:
        """Stop both servers; IMAP clients are told BYE first."""
        try:
            await self.imap.stop()
        finally:
            await asyncio.to_thread(self.smtp.stop)

    async def __aenter__(self) -> LocalMailServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.stop()

    def append(self, raw: bytes, *, flags: Iterable[str] = (), when: datetime | None = None) -> int:
        """Deliver a customer's mail to the support mailbox; returns its UID."""
        return self.imap.append(raw, flags=flags, when=when)

    def received(self) -> list[EmailMessage]:
        """Every mail sent to the SMTP sink so far, oldest first."""
        return self.smtp.received()

    def imap_settings(self) -> ImapSettings:
        """How supportbot reaches the mailbox."""
        imap = self.imap
        return ImapSettings(
            host=self.host,
            port=imap.port,
            user=imap.user,
            password=imap.password,
            tls=Tls.NONE,
            mailbox=imap.mailbox,
        )

    def smtp_settings(self) -> SmtpSettings:
        """How supportbot reaches the sink (no login)."""
        return SmtpSettings(host=self.host, port=self.smtp.port, user="", password="", tls=Tls.NONE)

    def environment(self, support_address: str) -> dict[str, str]:
        """The IMAP_*, SMTP_* and SUPPORT_ADDRESS settings that point supportbot here."""
        return {
            "IMAP_HOST": self.host,
            "IMAP_PORT": str(self.imap.port),
            "IMAP_USER": self.imap.user,
            "IMAP_PASSWORD": self.imap.password,
            "IMAP_TLS": Tls.NONE.value,
            "IMAP_MAILBOX": self.imap.mailbox,
            "SMTP_HOST": self.host,
            "SMTP_PORT": str(self.smtp.port),
            "SMTP_TLS": Tls.NONE.value,
            "SUPPORT_ADDRESS": support_address,
        }


def _free_port(host: str) -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
