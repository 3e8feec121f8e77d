"""A small IMAP4rev1 server on loopback: one user, one mailbox, IDLE; for the demo and for tests.

It speaks the part of RFC 3501 (with RFC 2177 IDLE and RFC 7888 LITERAL+) that a mail reader
needs to log in, watch the mailbox and take mail in: CAPABILITY, NOOP, CHECK, LOGIN, LOGOUT,
SELECT, EXAMINE, SEARCH, FETCH, STORE, their UID forms, and IDLE. There is no TLS, no EXPUNGE and
no APPEND over the wire: mail is put in by the program (:meth:`LocalImapServer.append`), the way a
delivery agent would. A selected session learns of new mail from ``* N EXISTS``: at once while it
idles, otherwise at its next NOOP, CHECK or IDLE; until then SEARCH, FETCH and STORE see the
mailbox as the session last heard of it, so a session never meets a message it was not told of.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sandbox.imap.session import MAX_LINE, Mailbox, Session, StoredMail
from sandbox.imap.syntax import flag

log = logging.getLogger(__name__)

__all__ = ["LocalImapServer"]


class LocalImapServer:
    """An in-process IMAP server on 127.0.0.1 and a free port, holding one user's one mailbox."""

    def __init__(
        self,
        user: str = "support",
        password: str = "local-imap-password",  # noqa: S107 - a loopback test server
        *,
        mailbox: str = "INBOX",
        host: str = "127.0.0.1",
        uidvalidity: int | None = None,
    ) -> None:
        self.host = host
        self.port = 0
        self._mailbox = Mailbox(mailbox, uidvalidity or int(time.time()), user, password)
        self._server: asyncio.Server | None = None
        self._sessions: dict[Session, asyncio.Task[Any] | None] = {}
        self._numbers = itertools.count(1)

    @property
    def user(self) -> str:
        """The one user name LOGIN accepts."""
        return self._mailbox.user

    @property
    def password(self) -> str:
        """The one password LOGIN accepts."""
        return self._mailbox.password

    @property
    def mailbox(self) -> str:
        """The name of the one mailbox (INBOX unless told otherwise)."""
        return self._mailbox.name

    @property
    def uidvalidity(self) -> int:
        """The mailbox's UIDVALIDITY."""
        return self._mailbox.uidvalidity

    async def start(self) -> None:
        """Listen on a free loopback port (see `port`)."""
        self._server = await asyncio.start_server(self._connected, self.host, 0, limit=MAX_LINE)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Say BYE to every connection, close them and stop listening."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for session in list(self._sessions):
            session.hang_up("* BYE the local IMAP server is shutting down")
        tasks = {task for task in self._sessions.values() if task is not None}
        if tasks:  # a closed connection ends its session; cancel what does not end by itself
            _, stuck = await asyncio.wait(tasks, timeout=2.0)
            for task in stuck:
                task.cancel()
            if stuck:
                await asyncio.wait(stuck)
        if server is not None:
            await server.wait_closed()

    def append(self, raw: bytes, *, flags: Iterable[str] = (), when: datetime | None = None) -> int:
        """Deliver a mail into the mailbox (call it on the server's event loop); returns its UID."""
        box = self._mailbox
        mail = StoredMail(
            uid=box.next_uid,
            raw=re.sub(rb"\r?\n", b"\r\n", raw),
            internal_date=(when or datetime.now(UTC)).replace(microsecond=0),
            flags={flag(name) for name in flags},
        )
        box.next_uid += 1
        box.mails.append(mail)
        for session in self._sessions:
            session.wake.set()
        return mail.uid

    def uids(self) -> list[int]:
        """The UIDs in the mailbox, in order."""
        return [mail.uid for mail in self._mailbox.mails]

    def flags(self, uid: int) -> frozenset[str]:
        """The stored flags of one mail (\\Recent is per session and not among them)."""
        for mail in self._mailbox.mails:
            if mail.uid == uid:
                return frozenset(mail.flags)
        raise KeyError(uid)

    @property
    def idling(self) -> int:
        """How many connections are in IDLE right now."""
        return sum(1 for session in self._sessions if session.idling)

    @property
    def connections(self) -> int:
        """How many connections are open."""
        return len(self._sessions)

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = Session(self._mailbox, next(self._numbers), reader, writer)
        self._sessions[session] = asyncio.current_task()
        try:
            await session.serve()
        except (ConnectionError, asyncio.IncompleteReadError):
            log.debug("local imap: session %s dropped", session.number)
        except asyncio.CancelledError:  # only stop() cancels a session, and it waits for it
            log.debug("local imap: session %s cut off at shutdown", session.number)
        except Exception:
            log.exception("local imap: session %s failed", session.number)
        finally:
            del self._sessions[session]
            session.hang_up(None)
