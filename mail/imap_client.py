"""One IMAP session over aioimaplib: TLS modes, UID SEARCH/FETCH/STORE, IDLE, and loss detection.

aioimaplib does not notice a dropped connection by itself (a pending command just waits for its
timeout), has no STARTTLS, and hands back raw response lines; this module adds the three and turns
every library or socket error into :class:`ImapError`, so the intake deals with one failure type.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import aioimaplib

from mail.settings import ImapSettings, Tls

log = logging.getLogger(__name__)

__all__ = ["ConnectionLost", "FetchedMail", "ImapError", "ImapSession", "uid_set"]

_FETCH_START = re.compile(rb"^\d+ FETCH \(")
_UID = re.compile(rb"\bUID (\d+)")
_INTERNALDATE = re.compile(rb'INTERNALDATE "([^"]+)"')
_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_DATE = re.compile(
    r"\s*(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})"
)
_MONTHS = {
    m: i
    for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1
    )
}


class ImapError(Exception):
    """The IMAP server refused a command, or the connection failed or timed out."""


class ConnectionLost(ImapError):
    """The server closed the connection (a restart, a timeout, a network drop)."""


@dataclass(frozen=True)
class FetchedMail:
    """One message as fetched: its UID, raw bytes and the server's arrival time."""

    uid: int
    raw: bytes
    internal_date: datetime | None


def uid_set(uids: Iterable[int]) -> str:
    """A compact IMAP sequence set: 1:4,7,9:12."""
    ordered = sorted(set(uids))
    if not ordered:
        raise ValueError("an empty UID set")
    runs: list[str] = []
    start = previous = ordered[0]
    for uid in ordered[1:]:
        if uid == previous + 1:
            previous = uid
            continue
        runs.append(f"{start}:{previous}" if previous != start else str(start))
        start = previous = uid
    runs.append(f"{start}:{previous}" if previous != start else str(start))
    return ",".join(runs)


def parse_internal_date(value: bytes) -> datetime | None:
    """INTERNALDATE ("27-Nov-2026 01:27:36 +0000") as an aware UTC datetime."""
    match = _DATE.match(value.decode("ascii", "replace"))
    if match is None:
        return None
    day, month, year, hour, minute, second, sign, off_h, off_m = match.groups()
    number = _MONTHS.get(month.lower())
    if number is None:
        return None
    offset = timedelta(hours=int(off_h), minutes=int(off_m)) * (-1 if sign == "-" else 1)
    try:
        moment = datetime(
            int(year),
            number,
            int(day),
            int(hour),
            int(minute),
            int(second),
            tzinfo=timezone(offset),
        )
    except ValueError:
        return None
    return moment.astimezone(UTC)


def parse_fetch(lines: Sequence[Any]) -> dict[int, FetchedMail]:
    """The messages in a FETCH response; unsolicited FETCHes without a body are skipped."""
    found: dict[int, FetchedMail] = {}
    uid: int | None = None
    body: bytes | None = None
    date: datetime | None = None

    def flush() -> None:
        if uid is not None and body is not None:
            found[uid] = FetchedMail(uid, body, date)

    for line in lines:
        if isinstance(line, bytearray):
            body = bytes(line)
            continue
        if not isinstance(line, bytes):
            continue
        if _FETCH_START.match(line):
            flush()
            uid, body, date = None, None, None
        uid_match = _UID.search(line)
        if uid_match is not None:
            uid = int(uid_match.group(1))
        date_match = _INTERNALDATE.search(line)
        if date_match is not None:
            date = parse_internal_date(date_match.group(1))
    flush()
    return found


def _search_uids(lines: Sequence[Any]) -> list[int]:
    uids: list[int] = []
    for line in lines:
        if isinstance(line, bytes | bytearray):
            words = bytes(line).split()
            if words and all(word.isdigit() for word in words):
                uids.extend(int(word) for word in words)
    return sorted(set(uids))


class ImapSession:
    """A logged-in connection with one mailbox selected."""

    def __init__(
        self, client: Any, lost: asyncio.Event, timeout: float, mailbox: str, uidvalidity: int
    ) -> None:
        self._client = client
        self._lost = lost
        self._timeout = timeout
        self.mailbox = mailbox
        self.uidvalidity = uidvalidity

    @classmethod
    async def open(
        cls,
        settings: ImapSettings,
        *,
        ssl_context: ssl.SSLContext | None = None,
        command_timeout: float = 30.0,
    ) -> ImapSession:
        """Connect (plain, STARTTLS or TLS), log in and select the support mailbox."""
        lost = asyncio.Event()
        context = None
        if settings.tls is not Tls.NONE:
            context = ssl_context or ssl.create_default_context()
        try:
            client = aioimaplib.IMAP4(
                host=settings.host,
                port=settings.port,
                timeout=command_timeout,
                conn_lost_cb=lambda _error: lost.set(),
                ssl_context=context if settings.tls is Tls.TLS else None,
            )
        except (OSError, ValueError) as error:
            raise ImapError(
                f"cannot connect to {settings.host}:{settings.port}: {error}"
            ) from error
        session = cls(client, lost, command_timeout, settings.mailbox, 0)
        try:
            where = f"connecting to {settings.host}:{settings.port}"
            await session._call(where, client.wait_hello_from_server(), check=False)
            if settings.tls is Tls.STARTTLS:
                assert context is not None
                await session._starttls(context, settings.host)
            login = await session._call(
                "LOGIN", client.login(settings.user, settings.password), check=False
            )
            if login.result != "OK":
                raise ImapError(f"login as {settings.user} refused: {_text(login.lines)}")
            await session._call("CAPABILITY", client.protocol.capability(), check=False)
            selected = await session._call(
                "SELECT", client.select(aioimaplib.quoted(settings.mailbox))
            )
        except BaseException:
            await session.close()
            raise
        for line in selected.lines:
            match = _UIDVALIDITY.search(bytes(line)) if isinstance(line, bytes) else None
            if match is not None:
                session.uidvalidity = int(match.group(1))
        if not session.uidvalidity:
            await session.close()
            raise ImapError(f"the server sent no UIDVALIDITY for {settings.mailbox}")
        return session

    @property
    def can_idle(self) -> bool:
        """Whether the server offers IDLE (RFC 2177)."""
        return "IDLE" in self._client.protocol.capabilities

    @property
    def lost(self) -> bool:
        """Whether the server has closed the connection (then only a reconnect helps)."""
        return self._lost.is_set()

    async def noop(self) -> None:
        """Let the server report mail that other connections added since the last command."""
        await self._call("NOOP", self._client.noop())

    async def search(self, *criteria: str) -> list[int]:
        """UID SEARCH; the UIDs in ascending order."""
        response = await self._call("UID SEARCH", self._client.uid_search(*criteria, charset=None))
        return _search_uids(response.lines)

    async def fetch(self, uids: Sequence[int]) -> dict[int, FetchedMail]:
        """Fetch whole messages without setting \\Seen (BODY.PEEK[])."""
        response = await self._call(
            "UID FETCH",
            self._client.uid("FETCH", uid_set(uids), "(UID INTERNALDATE BODY.PEEK[])"),
            limit=None,  # aioimaplib times out a fetch that stops making progress
        )
        return parse_fetch(response.lines)

    async def mark_seen(self, uids: Sequence[int]) -> None:
        """Flag messages \\Seen: they have been taken in."""
        await self._call(
            "UID STORE", self._client.uid("STORE", uid_set(uids), "+FLAGS.SILENT", r"(\Seen)")
        )

    async def wait_for_mail(self, stop: asyncio.Event, renew: float) -> None:
        """IDLE until new mail arrives, `renew` seconds pass or `stop` is set."""
        client = self._client
        queue = client.protocol.idle_queue
        while not queue.empty():
            queue.get_nowait()
        idle = await self._call("IDLE", client.idle_start(timeout=renew), check=False)
        try:
            while not stop.is_set():
                push = await self._race(client.wait_server_push(renew + self._timeout), stop)
                if push is None or push == aioimaplib.STOP_WAIT_SERVER_PUSH:
                    break
                if any(_announces_mail(line) for line in push):
                    break
        finally:
            if not self._lost.is_set() and client.has_pending_idle():
                client.idle_done()
                with contextlib.suppress(ImapError):
                    await self._call("DONE", idle, check=False)
            if not idle.done():
                idle.cancel()
                with contextlib.suppress(BaseException):
                    await idle
        if self._lost.is_set():
            raise ConnectionLost("the connection was closed during IDLE")

    async def wait_quietly(self, stop: asyncio.Event, seconds: float) -> None:
        """Sleep between polls; wakes early when `stop` is set or the connection drops."""
        await self._race(asyncio.sleep(seconds), stop)
        if self._lost.is_set():
            raise ConnectionLost("the connection was closed")

    async def close(self) -> None:
        """Log out politely if possible; drop the connection in any case."""
        client = self._client
        if not self._lost.is_set() and client.protocol.transport is not None:
            with contextlib.suppress(ImapError):
                await self._call("LOGOUT", client.logout(), check=False, limit=2.0)
        transport = client.protocol.transport
        if transport is not None and not transport.is_closing():
            transport.close()
        for task in list(client.tasks) + list(client.protocol.tasks):
            task.cancel()

    async def _starttls(self, context: ssl.SSLContext, host: str) -> None:
        protocol = self._client.protocol
        if "STARTTLS" not in protocol.capabilities:
            raise ImapError("the server does not offer STARTTLS; refusing to log in without TLS")
        command = aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
        await self._call("STARTTLS", protocol.execute(command))
        loop = asyncio.get_running_loop()
        try:
            transport = await loop.start_tls(
                protocol.transport,
                protocol,
                context,
                server_hostname=host,
                ssl_handshake_timeout=self._timeout,
            )
        except (OSError, ssl.SSLError, ConnectionError, TimeoutError) as error:
            raise ImapError(f"STARTTLS handshake failed: {error}") from error
        protocol.transport = transport
        await self._call("CAPABILITY", protocol.capability(), check=False)

    async def _race(self, work: Awaitable[Any], stop: asyncio.Event) -> Any:
        """Run `work` until done, `stop` is set or the connection drops (then None)."""
        task = asyncio.ensure_future(work)
        stopped = asyncio.ensure_future(stop.wait())
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            await asyncio.wait({task, stopped, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (stopped, lost):
                waiter.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if task.cancelled():
            return None
        error = task.exception()
        if isinstance(error, TimeoutError | asyncio.TimeoutError):
            return None
        if error is not None:
            raise ImapError(f"IMAP error while waiting: {error!r}") from error
        return task.result()

    async def _call(
        self,
        what: str,
        work: Awaitable[Any],
        *,
        check: bool = True,
        limit: float | bool | None = True,
    ) -> Any:
        """Await one command; a drop, a timeout or a library error becomes ImapError."""
        seconds = self._timeout if limit is True else (None if limit is None else float(limit))
        task = asyncio.ensure_future(work)
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            done, _ = await asyncio.wait(
                {task, lost}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
            )
        except BaseException:
            task.cancel()
            raise
        finally:
            lost.cancel()
        if task not in done:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            if self._lost.is_set():
                raise ConnectionLost(f"connection lost during {what}")
            raise ImapError(f"{what} timed out after {seconds or 0:.0f}s")
        try:
            response = task.result()
        except ImapError:
            raise
        except (
            aioimaplib.AioImapException,
            OSError,
            ssl.SSLError,
            TimeoutError,
            ValueError,
        ) as error:
            raise ImapError(f"{what} failed: {error!r}") from error
        if check and getattr(response, "result", "OK") != "OK":
            raise ImapError(f"{what} refused: {_text(response.lines)}")
        return response


def _text(lines: Iterable[Any]) -> str:
    parts = [bytes(line).decode("utf-8", "replace") for line in lines if isinstance(line, bytes)]
    return " ".join(parts)[:300]


def _announces_mail(line: object) -> bool:
    """EXISTS, or RECENT: a server that already sent the EXISTS in a search's answer (which
    the client library drops) still flags the new mail RECENT when IDLE starts."""
    return isinstance(line, bytes) and line.rstrip().endswith((b"EXISTS", b"RECENT"))
