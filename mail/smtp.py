"""The outbox's sender for `Route.EMAIL`: builds each mail (mail.compose) and sends it over SMTP.

Up to `SmtpSettings.connections` connections (2 by default) are open at once; each carries one
recipient's rows at a time and is reused from mail to mail, batch to batch, staying open a few
seconds after its last mail. While one connection waits for the server, another sends. The most
recently used free connection is taken first, so light traffic keeps to one.

Outcomes: 2xx → Delivered (external id = our Message-ID); 4xx, a dropped connection or an
unreachable server → RetryLater; 5xx for the mail → Failed, which the core shows on the ticket
and tells the agents. A failure while connecting, upgrading to TLS or logging in is the server's
or the configuration's, not the mail's, so it is retried rather than failed. A kept-open
connection the server has closed meanwhile is replaced once, silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import aiosmtplib

from mail.compose import (
    LOOP_HEADER,
    ComposeError,
    MailTemplates,
    OutgoingMail,
    check_address,
    message_bytes,
)
from mail.settings import SmtpSettings, Tls
from tickets.model import Attachment, OutboxKind
from tickets.outbox import (
    Delivered,
    Failed,
    OutboxItem,
    Outcome,
    Report,
    RetryLater,
    deliver_in_order,
)
from tickets.ports import Clock, FileData, FileSource, utcnow
from tickets.rendering import default_directory

log = logging.getLogger(__name__)

__all__ = ["SmtpSender"]


class _Unreachable(Exception):
    """Connecting, TLS or login failed."""


class _Line:
    """One SMTP connection, used by one delivery at a time."""

    def __init__(self) -> None:
        self.client: aiosmtplib.SMTP | None = None
        self.closer: asyncio.TimerHandle | None = None
        self.lock = asyncio.Lock()


class SmtpSender:
    """Delivers email rows of the outbox over a few reused SMTP connections."""

    def __init__(
        self,
        settings: SmtpSettings,
        support_address: str,
        templates_dir: Path | None = None,
        *,
        loop_header: str = LOOP_HEADER,
        from_name: str = "Support",
        clock: Clock = utcnow,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 30.0,
        keep_open: float = 10.0,
        local_hostname: str | None = None,
        attachment_loader: FileSource | None = None,
    ) -> None:
        self._settings = settings
        self._address = check_address(support_address)
        self._templates = MailTemplates(templates_dir or default_directory())
        for suffix in ("txt", "html"):
            if not (self._templates.directory / "mail" / f"reply.{suffix}").is_file():
                raise FileNotFoundError(
                    f"mail/reply.{suffix} is missing from {self._templates.directory}"
                )
        self._loop_header = loop_header
        self._from_name = from_name
        self._clock = clock
        self._ssl_context = ssl_context
        self._timeout = timeout
        self._keep_open = keep_open
        self._local_hostname = local_hostname or self._address.rpartition("@")[2]
        self._loader = attachment_loader
        self._lines = [_Line() for _ in range(max(settings.connections, 1))]
        self._free: asyncio.LifoQueue[_Line] = asyncio.LifoQueue()
        for line in reversed(self._lines):
            self._free.put_nowait(line)
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections_opened = 0

    async def deliver(self, items: Sequence[OutboxItem], report: Report) -> None:
        """Send rows of one recipient in order; stop at the first that did not go out."""
        line = await self._free.get()
        try:
            async with line.lock:
                if line.closer is not None:
                    line.closer.cancel()
                    line.closer = None
                try:
                    await deliver_in_order(items, report, partial(self._deliver_one, line))
                finally:
                    if line.client is not None:
                        loop = asyncio.get_running_loop()
                        line.closer = loop.call_later(self._keep_open, self._close_soon, line)
        finally:
            self._free.put_nowait(line)

    async def close(self) -> None:
        """Say QUIT and drop the connections (at shutdown)."""
        for line in self._lines:
            if line.closer is not None:
                line.closer.cancel()
                line.closer = None
            async with line.lock:
                await self._drop(line, polite=True)
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    # -- one row -------------------------------------------------------------------------------

    async def _deliver_one(self, line: _Line, item: OutboxItem) -> Outcome:
        try:
            mail = await self._compose(item)
            data = message_bytes(mail, loop_header=self._loop_header)
        except ComposeError as error:
            log.error("smtp: outbox row %s cannot be sent: %s", item.id, error)
            return Failed(f"cannot build the mail: {error}")
        except (OSError, TimeoutError) as error:
            return RetryLater(f"attachment not available yet: {error}")
        outcome = await self._send(line, mail.recipient, data)
        if outcome is None:
            log.info("smtp: %s row %s sent to %s", item.kind.value, item.id, mail.recipient)
            return Delivered(external_id=mail.message_id)
        return outcome

    async def _send(self, line: _Line, recipient: str, data: bytes) -> Outcome | None:
        """One SMTP transaction; None when the server took the mail."""
        for attempt in (1, 2):
            reused = line.client is not None
            try:
                client = await self._connection(line)
                await client.sendmail(self._address, [recipient], data)
            except _Unreachable as error:
                return RetryLater(str(error))
            except (aiosmtplib.SMTPServerDisconnected, ConnectionError) as error:
                await self._drop(line, polite=False)
                if reused and attempt == 1:
                    log.info("smtp: the kept-open connection was closed; reconnecting")
                    continue
                return RetryLater(f"connection lost: {error}")
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
                return await self._refused(line, error)
            return None
        return RetryLater("connection lost twice")  # pragma: no cover - the loop returns

    async def _refused(self, line: _Line, error: Exception) -> Outcome:
        """What an SMTP error means for the row: 5xx is final, anything else is retried."""
        if isinstance(error, aiosmtplib.SMTPRecipientsRefused) and error.recipients:
            refused = error.recipients[0]
            return _outcome(refused.code, refused.message)
        if isinstance(error, aiosmtplib.SMTPResponseException):
            if error.code == 421:  # the server is closing this connection
                await self._drop(line, polite=False)
            return _outcome(error.code, error.message)
        await self._drop(line, polite=False)
        return RetryLater(f"{type(error).__name__}: {error}")

    async def _compose(self, item: OutboxItem) -> OutgoingMail:
        payload: Mapping[str, Any] = item.payload
        automatic = bool(payload.get("automatic")) or item.kind is OutboxKind.RECEIPT
        kind = "receipt" if item.kind is OutboxKind.RECEIPT else item.kind.value
        files, left_out = await self._attachments(payload.get("attachments") or [])
        subject = str(payload.get("subject_line") or payload.get("subject") or "")
        context = {
            "text": str(payload.get("text") or ""),
            "ticket": payload.get("ticket"),
            "subject": subject,
            "agent": str(payload.get("agent") or ""),
            "automatic": automatic,
            "left_out": left_out,
        }
        locale = payload.get("locale")
        text, html = self._templates.render(
            kind, context, locale if isinstance(locale, str) else None
        )
        references = payload.get("references") or []
        return OutgoingMail(
            sender=self._address,
            sender_name=self._from_name,
            recipient=check_address(item.recipient),
            subject=subject,
            message_id=str(payload.get("message_id") or ""),
            in_reply_to=payload.get("in_reply_to"),
            references=tuple(str(r) for r in references if isinstance(r, str)),
            text=text,
            html=html,
            date=self._clock(),
            automatic=automatic,
            attachments=files,
        )

    async def _attachments(self, raw: Sequence[Any]) -> tuple[tuple[FileData, ...], list[str]]:
        """Load an agent's files; without a loader they are named in the text instead."""
        files: list[FileData] = []
        left_out: list[str] = []
        for entry in raw:
            if not isinstance(entry, dict):
                continue
            attachment = Attachment.from_json(entry)
            if self._loader is None:
                left_out.append(attachment.filename or attachment.kind)
                continue
            files.append(await self._loader(attachment))
        return tuple(files), left_out

    # -- the connection ------------------------------------------------------------------------

    async def _connection(self, line: _Line) -> aiosmtplib.SMTP:
        if line.client is not None and line.client.is_connected:
            return line.client
        await self._drop(line, polite=False)
        settings = self._settings
        tls = settings.tls
        context = None
        if tls is not Tls.NONE:
            context = self._ssl_context or ssl.create_default_context()
        client = aiosmtplib.SMTP(
            hostname=settings.host,
            port=settings.port,
            timeout=self._timeout,
            use_tls=tls is Tls.TLS,
            start_tls=tls is Tls.STARTTLS,
            tls_context=context,
            local_hostname=self._local_hostname,
        )
        try:
            await client.connect()
            self.connections_opened += 1
            if settings.user:
                await client.login(settings.user, settings.password)
        except (aiosmtplib.SMTPException, OSError, TimeoutError, ssl.SSLError) as error:
            with contextlib.suppress(Exception):
                client.close()
            where = f"{settings.host}:{settings.port}"
            raise _Unreachable(f"SMTP server {where} unavailable: {error}") from error
        line.client = client
        return client

    async def _drop(self, line: _Line, *, polite: bool) -> None:
        client, line.client = line.client, None
        if client is None:
            return
        if polite and client.is_connected:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.quit(), 5.0)
        with contextlib.suppress(Exception):
            client.close()

    def _close_soon(self, line: _Line) -> None:
        line.closer = None
        task = asyncio.ensure_future(self._close_idle(line))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _close_idle(self, line: _Line) -> None:
        async with line.lock:
            if line.closer is None:  # not used again meanwhile
                await self._drop(line, polite=True)


def _outcome(code: int, message: str) -> Outcome:
    text = f"{code} {message}".strip()
    if 500 <= code < 600:
        return Failed(text)
    return RetryLater(text)
