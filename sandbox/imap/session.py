"""One connection to the local IMAP server: its state, its view of the mailbox, its commands.

See sandbox/imap/server.py for what the server supports. A session learns of new mail from
``* N EXISTS`` at once while it idles, otherwise at its next NOOP, CHECK or IDLE; until then
SEARCH, FETCH and STORE see the mailbox as the session last heard of it, so a session never meets a
message it was not told of.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from sandbox.imap.syntax import (
    LITERAL_MARK,
    RECENT,
    SYSTEM_FLAGS,
    Arg,
    Candidate,
    SyntaxProblem,
    astring,
    atom,
    fetch_items,
    flag,
    internal_date,
    message_part,
    parse_arguments,
    parse_set,
    search_criterion,
)

__all__ = ["CAPABILITIES", "MAX_LINE", "Mailbox", "Session", "StoredMail"]

CAPABILITIES = "IMAP4rev1 LITERAL+ IDLE"
MAX_LINE = 64 * 1024
MAX_LITERAL = 1024 * 1024
_LITERAL = re.compile(rb"\{(\d{1,10})(\+?)\}$")
_STORE = re.compile(r"^([+-]?)FLAGS(\.SILENT)?$")
_TAG = re.compile(r"^[^\s(){%*\"\\+\x00-\x1f\x7f]+$")

NOT_AUTHENTICATED, AUTHENTICATED, SELECTED, LOGGED_OUT = "nonauth", "auth", "selected", "logout"
_ANY = (NOT_AUTHENTICATED, AUTHENTICATED, SELECTED)
_Handler = Callable[[str, list[Arg]], Awaitable[None]]


class _Refused(Exception):
    """A well-formed command the server declines; answered with NO."""


class _Closing(Exception):
    """The connection must end now (a line or literal too long)."""


@dataclass
class StoredMail:
    """One message in the mailbox."""

    uid: int
    raw: bytes
    internal_date: datetime
    flags: set[str] = field(default_factory=set)
    recent_to: int | None = None  # the session told of it first has it \\Recent (RFC 3501 2.3.2)


@dataclass
class Mailbox:
    """The one mailbox and the one user allowed to read it."""

    name: str
    uidvalidity: int
    user: str
    password: str
    mails: list[StoredMail] = field(default_factory=list)
    next_uid: int = 1


class Session:
    """One connection: its state, the part of the mailbox it was told of, and its commands."""

    def __init__(
        self,
        mailbox: Mailbox,
        number: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.mailbox = mailbox
        self.number = number
        self.reader = reader
        self.writer = writer
        self.state = NOT_AUTHENTICATED
        self.read_only = False
        self.known = 0  # how many messages this session was told of (its view of the mailbox)
        self.wake = asyncio.Event()
        self.idling = False
        self.handlers: dict[str, tuple[tuple[str, ...], _Handler]] = {
            "CAPABILITY": (_ANY, self._capability),
            "NOOP": (_ANY, self._noop),
            "LOGOUT": (_ANY, self._logout),
            "LOGIN": ((NOT_AUTHENTICATED,), self._login),
            "SELECT": ((AUTHENTICATED, SELECTED), self._select),
            "EXAMINE": ((AUTHENTICATED, SELECTED), self._examine),
            "CHECK": ((SELECTED,), self._noop),
            "SEARCH": ((SELECTED,), self._search),
            "FETCH": ((SELECTED,), self._fetch),
            "STORE": ((SELECTED,), self._store),
            "UID": ((SELECTED,), self._uid),
            "IDLE": ((SELECTED,), self._idle),
        }

    # -- the connection ------------------------------------------------------------------------

    async def serve(self) -> None:
        """Greet, then run commands until LOGOUT or until the client goes away."""
        self.send(f"* OK [CAPABILITY {CAPABILITIES}] supportbot local IMAP ready")
        await self.writer.drain()
        try:
            while self.state != LOGGED_OUT:
                command = await self._read_command()
                if command is None:
                    return
                await self._run(*command)
                await self.writer.drain()
        except _Closing as error:
            self.send(f"* BYE {error}")
            await self.writer.drain()

    def send(self, line: str | bytes) -> None:
        """Queue one response line (CRLF is added)."""
        data = line.encode("latin-1", "replace") if isinstance(line, str) else line
        self.writer.write(data + b"\r\n")

    def hang_up(self, farewell: str | None) -> None:
        """Close the connection, after an untagged `farewell` (a BYE) if given."""
        if self.writer.is_closing():
            return
        if farewell is not None:
            self.send(farewell)
        self.writer.close()

    async def _line(self) -> bytes | None:
        try:
            line = await self.reader.readline()
        except ValueError:  # longer than MAX_LINE
            raise _Closing("command line too long") from None
        if not line.endswith(b"\n"):
            return None  # the client went away, maybe in the middle of a line
        return line[:-2] if line.endswith(b"\r\n") else line[:-1]

    async def _read_command(self) -> tuple[str, str, str, list[bytes]] | None:
        """A whole command, literals included: (tag, name, argument text, literals)."""
        pieces: list[str] = []
        literals: list[bytes] = []
        while True:
            line = await self._line()
            if line is None:
                return None
            if b"\x00" in line:
                raise _Closing("NUL in a command")
            literal = _LITERAL.search(line)
            if literal is None:
                pieces.append(line.decode("latin-1"))
                break
            size = int(literal.group(1))
            if size > MAX_LITERAL:
                raise _Closing("literal too large")
            pieces.append(line[: literal.start()].decode("latin-1"))
            if not literal.group(2):  # synchronizing: the client waits for our go-ahead
                self.send("+ ready for the literal")
                await self.writer.drain()
            literals.append(await self.reader.readexactly(size))
        text = LITERAL_MARK.join(pieces)
        tag, _, rest = text.partition(" ")
        name, _, arguments = rest.partition(" ")
        return tag, name.upper(), arguments, literals

    async def _run(self, tag: str, name: str, arguments: str, literals: list[bytes]) -> None:
        if not _TAG.match(tag) or not name:
            self.send("* BAD expected a tag and a command")
            return
        handler = self.handlers.get(name)
        if handler is None:
            self.send(f"{tag} BAD unknown command {name[:40]}")
            return
        states, run = handler
        if self.state not in states:
            self.send(f"{tag} BAD {name} is not allowed in this state")
            return
        try:
            await run(tag, parse_arguments(arguments, literals))
        except SyntaxProblem as error:
            self.send(f"{tag} BAD {error}")
        except _Refused as error:
            self.send(f"{tag} NO {error}")

    # -- any state -----------------------------------------------------------------------------

    async def _capability(self, tag: str, args: list[Arg]) -> None:
        _none(args)
        self.send(f"* CAPABILITY {CAPABILITIES}")
        self.send(f"{tag} OK CAPABILITY completed")

    async def _noop(self, tag: str, args: list[Arg]) -> None:
        _none(args)
        if self.state == SELECTED:
            self._announce()
        self.send(f"{tag} OK completed")

    async def _logout(self, tag: str, args: list[Arg]) -> None:
        _none(args)
        self.send("* BYE logging out")
        self.send(f"{tag} OK LOGOUT completed")
        self.state = LOGGED_OUT

    async def _login(self, tag: str, args: list[Arg]) -> None:
        if len(args) != 2:
            raise SyntaxProblem("LOGIN needs a user name and a password")
        user, password = astring(args[0], "a user name"), astring(args[1], "a password")
        box = self.mailbox
        if (user, password) != (box.user.encode(), box.password.encode()):
            raise _Refused("[AUTHENTICATIONFAILED] wrong user name or password")
        self.state = AUTHENTICATED
        self.send(f"{tag} OK LOGIN completed")

    # -- the mailbox ---------------------------------------------------------------------------

    async def _select(self, tag: str, args: list[Arg]) -> None:
        await self._open(tag, args, examine=False)

    async def _examine(self, tag: str, args: list[Arg]) -> None:
        await self._open(tag, args, examine=True)

    async def _open(self, tag: str, args: list[Arg], *, examine: bool) -> None:
        if len(args) != 1:
            raise SyntaxProblem("SELECT needs a mailbox name")
        name = astring(args[0], "a mailbox name").decode("utf-8", "replace")
        self.state, self.known = AUTHENTICATED, 0  # a failed SELECT leaves none selected
        if _mailbox_key(name) != _mailbox_key(self.mailbox.name):
            raise _Refused("[NONEXISTENT] there is no such mailbox")
        mails = self._claim(len(self.mailbox.mails))
        recent = sum(1 for mail in mails if mail.recent_to == self.number)
        self.send(f"* FLAGS ({' '.join(SYSTEM_FLAGS)})")
        self.send(f"* {len(mails)} EXISTS")
        self.send(f"* {recent} RECENT")
        unseen = [seq for seq, mail in enumerate(mails, 1) if "\\Seen" not in mail.flags]
        if unseen:
            self.send(f"* OK [UNSEEN {unseen[0]}] first unseen message")
        permanent = "" if examine else f"{' '.join(SYSTEM_FLAGS)} \\*"
        self.send(f"* OK [PERMANENTFLAGS ({permanent})] flags that can be stored")
        self.send(f"* OK [UIDVALIDITY {self.mailbox.uidvalidity}] UIDs valid")
        self.send(f"* OK [UIDNEXT {self.mailbox.next_uid}] predicted next UID")
        self.state, self.read_only = SELECTED, examine
        mode = "READ-ONLY" if examine else "READ-WRITE"
        self.send(f"{tag} OK [{mode}] {'EXAMINE' if examine else 'SELECT'} completed")

    def _claim(self, total: int) -> list[StoredMail]:
        """Extend this session's view to `total` messages, taking \\Recent for unclaimed ones."""
        mails = self.mailbox.mails[:total]
        for mail in mails[self.known :]:
            if mail.recent_to is None:
                mail.recent_to = self.number
        self.known = total
        return mails

    def _announce(self) -> None:
        """Tell of mail delivered since the session last heard: `* N EXISTS`, `* R RECENT`."""
        total = len(self.mailbox.mails)
        if total <= self.known:
            return
        mails = self._claim(total)
        self.send(f"* {total} EXISTS")
        self.send(f"* {sum(1 for mail in mails if mail.recent_to == self.number)} RECENT")

    def _view(self) -> list[StoredMail]:
        return self.mailbox.mails[: self.known]

    def _flags(self, mail: StoredMail) -> str:
        names = sorted(mail.flags)
        if mail.recent_to == self.number:
            names.append(RECENT)
        return f"({' '.join(names)})"

    def _targets(self, text: str, by_uid: bool) -> list[tuple[int, StoredMail]]:
        """(sequence number, mail) for a UID set (unknown UIDs are skipped) or a sequence set."""
        view = self._view()
        if by_uid:
            uids = parse_set(text, view[-1].uid if view else 0)
            return [(seq, mail) for seq, mail in enumerate(view, 1) if mail.uid in uids]
        numbers = parse_set(text, len(view))
        if numbers.lowest() < 1 or numbers.highest() > len(view):
            raise SyntaxProblem(f"no such message: {text} (the mailbox has {len(view)})")
        return [(seq, mail) for seq, mail in enumerate(view, 1) if seq in numbers]

    async def _uid(self, tag: str, args: list[Arg]) -> None:
        if not args:
            raise SyntaxProblem("UID needs a command")
        command = atom(args[0], "a command").upper()
        run = {"SEARCH": self._search, "FETCH": self._fetch, "STORE": self._store}.get(command)
        if run is None:
            raise SyntaxProblem(f"UID {command} is not supported by this server")
        await run(tag, args[1:], by_uid=True)

    async def _search(self, tag: str, args: list[Arg], *, by_uid: bool = False) -> None:
        if args and isinstance(args[0], str) and args[0].upper() == "CHARSET":
            if len(args) < 2:
                raise SyntaxProblem("CHARSET needs a name")
            charset = astring(args[1], "a charset").decode("latin-1").upper()
            if charset not in ("US-ASCII", "UTF-8"):
                raise _Refused("[BADCHARSET (US-ASCII UTF-8)] unsupported charset")
            args = args[2:]
        view = self._view()
        matches = search_criterion(args, last_uid=view[-1].uid if view else 0, count=len(view))
        found = []
        for seq, mail in enumerate(view, 1):
            flags = frozenset(mail.flags | ({RECENT} if mail.recent_to == self.number else set()))
            if matches(Candidate(seq, mail.uid, flags, len(mail.raw))):
                found.append(mail.uid if by_uid else seq)
        self.send("* SEARCH" + "".join(f" {number}" for number in found))
        self.send(f"{tag} OK {'UID ' if by_uid else ''}SEARCH completed")

    async def _fetch(self, tag: str, args: list[Arg], *, by_uid: bool = False) -> None:
        if len(args) != 2:
            raise SyntaxProblem("FETCH needs a sequence set and the items")
        items = fetch_items(args[1])
        if by_uid and all(item.name != "UID" for item in items):
            items = [fetch_items("UID")[0], *items]
        for seq, mail in self._targets(atom(args[0], "a sequence set"), by_uid):
            seen_now = False
            if any(item.marks_seen for item in items) and not self.read_only:
                seen_now = "\\Seen" not in mail.flags
                mail.flags.add("\\Seen")
            parts: list[bytes] = []
            for item in items:
                if item.part is not None:
                    data = message_part(mail.raw, item.part)
                    parts.append(f"{item.name} {{{len(data)}}}\r\n".encode() + data)
                elif item.name == "UID":
                    parts.append(f"UID {mail.uid}".encode())
                elif item.name == "FLAGS":
                    parts.append(f"FLAGS {self._flags(mail)}".encode("latin-1"))
                elif item.name == "INTERNALDATE":
                    parts.append(f'INTERNALDATE "{internal_date(mail.internal_date)}"'.encode())
                else:  # RFC822.SIZE
                    parts.append(f"RFC822.SIZE {len(mail.raw)}".encode())
            if seen_now and all(item.name != "FLAGS" for item in items):
                parts.append(f"FLAGS {self._flags(mail)}".encode("latin-1"))
            self.send(f"* {seq} FETCH (".encode() + b" ".join(parts) + b")")
            await self.writer.drain()
        self.send(f"{tag} OK {'UID ' if by_uid else ''}FETCH completed")

    async def _store(self, tag: str, args: list[Arg], *, by_uid: bool = False) -> None:
        if len(args) < 3:
            raise SyntaxProblem("STORE needs a sequence set, FLAGS and the flags")
        how = _STORE.match(atom(args[1], "+FLAGS, -FLAGS or FLAGS").upper())
        if how is None:
            raise SyntaxProblem("STORE takes FLAGS, +FLAGS or -FLAGS (optionally .SILENT)")
        listed = args[2] if len(args) == 3 and isinstance(args[2], list) else args[2:]
        names = {flag(name) for name in listed}
        targets = self._targets(atom(args[0], "a sequence set"), by_uid)
        if self.read_only:
            raise _Refused("[READ-ONLY] the mailbox was opened with EXAMINE")
        for seq, mail in targets:
            if how.group(1) == "+":
                mail.flags |= names
            elif how.group(1) == "-":
                mail.flags -= names
            else:
                mail.flags = set(names)
            if how.group(2) is None:
                uid = f"UID {mail.uid} " if by_uid else ""
                self.send(f"* {seq} FETCH ({uid}FLAGS {self._flags(mail)})")
        self.send(f"{tag} OK {'UID ' if by_uid else ''}STORE completed")

    async def _idle(self, tag: str, args: list[Arg]) -> None:
        """RFC 2177: report new mail as it comes until the client says DONE."""
        _none(args)
        self.wake.clear()
        self.send("+ idling")
        self._announce()
        await self.writer.drain()
        self.idling = True
        reading = asyncio.ensure_future(self._line())
        try:
            while True:
                waking = asyncio.ensure_future(self.wake.wait())
                try:
                    await asyncio.wait({reading, waking}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waking.cancel()
                if reading.done():
                    break
                self.wake.clear()
                self._announce()
                await self.writer.drain()
        finally:
            self.idling = False
            if not reading.done():
                reading.cancel()
                with contextlib.suppress(BaseException):
                    await reading
        line = reading.result()
        if line is None:
            self.state = LOGGED_OUT  # the client went away while idling
        elif line.strip().upper() == b"DONE":
            self.send(f"{tag} OK IDLE terminated")
        else:
            self.send(f"{tag} BAD expected DONE")


def _none(args: list[Arg]) -> None:
    if args:
        raise SyntaxProblem("this command takes no arguments")


def _mailbox_key(name: str) -> str:
    return "INBOX" if name.upper() == "INBOX" else name
