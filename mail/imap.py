"""Email intake: read the support mailbox over IMAP and hand every mail to the desk exactly once.

How "exactly once" holds across restarts and crashes:

* each mail is stored by `Desk.receive` with the dedup key ``("imap", "UIDVALIDITY:UID")`` and its
  Message-ID as external id (unique per channel); a mail without a Message-ID gets a stable one
  made from the SHA-256 of its bytes, so that a resync cannot double it either;
* only after that commit is the mail flagged ``\\Seen`` and the cursor (`MailCursor`: UIDVALIDITY
  and the last UID handled) moved past it; a crash in between means the mail is fetched again and
  recognised as a duplicate;
* a mail that cannot be parsed or stored is quarantined (once: a quarantine row with the same
  reference or the same bytes is not written twice) and then counts as handled;
* when the database is unreachable nothing is skipped: the cycle stops, and the intake reconnects
  with backoff and starts again at the cursor.

Choices where the design is silent:

* First start (no cursor yet): only mail not yet ``\\Seen`` is taken in, so connecting supportbot
  to a mailbox with years of read history does not turn that history into tickets.
  After a UIDVALIDITY change the whole mailbox is walked again; Message-IDs keep it from doubling.
* The time of a message is the server's INTERNALDATE (when the mail reached the mailbox), never
  the sender's Date header, and never later than now: mail read after an outage keeps its place
  in the SLA.
* The ticket keeps `visible_text` (quotes and signature trimmed; the full text when trimming
  leaves nothing). The full original stays on the server; attachments are kept as metadata whose
  ref ``imap:UIDVALIDITY:UID:INDEX`` names the mail and the attachment's position in it, and
  their bytes (under the attachment cap) in the core's ``message_files``, for the agents' feed
  to post into the ticket's topic.
* A bounce of our mail is filed under the address our mail went to (not under mailer-daemon), so
  no stray customer is created and the ticket's answer address stays the customer's; the
  bounce's Message-IDs also count as thread references, so a bounced receipt finds its ticket.
* Display name: the From name, or the address when the mail has none.
* Mail from the support address itself is handed to the desk as `from_desk`: it never becomes a
  customer message nor a customer (see `tickets.customer_messages`).
* A mail whose MIME structure is broken keeps its raw source on the message, for the agents.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mail import store
from mail.compose import LOOP_HEADER
from mail.imap_client import FetchedMail, ImapError, ImapSession
from mail.parse import parse_mail
from mail.settings import ImapSettings
from tickets import email_lookups
from tickets.desk import Desk
from tickets.group_commit import unreachable
from tickets.languages import normalise
from tickets.model import (
    Attachment,
    Channel,
    CustomerRef,
    IncomingMessage,
    Intake,
    bounded_id,
)
from tickets.notices import notify_agents
from tickets.periodic import sleep_until_stopped
from tickets.ports import IMAP_CONNECTED, IMAP_LAG, NO_EVENTS, Clock, Events, Renderer, utcnow

log = logging.getLogger(__name__)

__all__ = ["HealthCallback", "ImapError", "ImapIntake", "StorageUnavailable", "health_notices"]

HealthCallback = Callable[[bool, str], Awaitable[None]]
"""Called with (False, why) once when mail has not been readable for a while, (True, …) after."""

SOURCE = "imap"


class UnusableMail(Exception):
    """A mail the desk cannot take (no sender address at all)."""


class StorageUnavailable(Exception):
    """The database cannot be reached: stop the cycle, keep the cursor, try again later."""


class ImapIntake:
    """Reads one mailbox (IDLE, or polling) and turns each mail into one ticket message."""

    def __init__(
        self,
        settings: ImapSettings,
        desk: Desk,
        sessions: async_sessionmaker[AsyncSession],
        support_address: str,
        *,
        clock: Clock = utcnow,
        on_health: HealthCallback | None = None,
        alert_after: timedelta = timedelta(minutes=10),
        attachment_cap: int = 10 * 1024 * 1024,
        loop_header: str = LOOP_HEADER,
        batch_size: int = 25,
        use_idle: bool = True,
        idle_renew: float = 300.0,
        poll_interval: float = 60.0,
        reconnect_min: float = 1.0,
        reconnect_max: float = 60.0,
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        events: Events = NO_EVENTS,
    ) -> None:
        self._settings = settings
        self._events = events
        self.connected = False  # holds a connection to the mailbox now (for /readyz)
        self._desk = desk
        self._sessions = sessions
        self._address = support_address.strip().lower()
        self._clock = clock
        self._on_health = on_health
        self._alert_after = alert_after
        self._attachment_cap = attachment_cap
        self._loop_header = loop_header
        self._batch_size = max(batch_size, 1)
        self._use_idle = use_idle
        self._idle_renew = idle_renew
        self._poll_interval = poll_interval
        self._reconnect_min = reconnect_min
        self._reconnect_max = reconnect_max
        self._timeout = timeout
        self._ssl_context = ssl_context
        self._delay = reconnect_min
        self._last_ok = clock()
        self._alerted = False
        self.cursor_key = settings.mailbox[:200]

    # -- running -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Take in mail until `stop` is set; failures reconnect with backoff and never lose mail."""
        self._last_ok = self._clock()
        self._delay = self._reconnect_min
        while not stop.is_set():
            try:
                await self._session(stop)
            except asyncio.CancelledError:
                raise
            except (ImapError, StorageUnavailable) as error:
                log.warning("imap intake: %s; trying again in %.1fs", error, self._delay)
                await self._failing(str(error))
            except Exception as error:
                log.exception("imap intake failed; trying again in %.1fs", self._delay)
                await self._failing(f"{type(error).__name__}: {error}")
            else:
                continue
            await sleep_until_stopped(stop, self._delay)
            self._delay = min(self._delay * 2, self._reconnect_max)

    async def sync_once(self) -> int:
        """Connect, take in everything new, disconnect: one cycle, for the CLI and for tests."""
        session = await self._open()
        try:
            return await self._sync(session)
        finally:
            await session.close()

    async def _open(self) -> ImapSession:
        return await ImapSession.open(
            self._settings, ssl_context=self._ssl_context, command_timeout=self._timeout
        )

    async def _session(self, stop: asyncio.Event) -> None:
        session = await self._open()
        self._connected(True)
        try:
            while not stop.is_set():
                count = await self._sync(session, stop)
                if count:
                    log.info("imap intake: %d mail(s) taken in from %s", count, session.mailbox)
                await self._healthy()
                self._delay = self._reconnect_min
                if self._use_idle and session.can_idle:
                    await session.wait_for_mail(stop, self._idle_renew)
                else:
                    await session.wait_quietly(stop, self._poll_interval)
        finally:
            self._connected(False)
            await session.close()

    def _connected(self, connected: bool) -> None:
        self.connected = connected
        self._events.measure(IMAP_CONNECTED, 1.0 if connected else 0.0)

    # -- one cycle -----------------------------------------------------------------------------

    async def _sync(self, session: ImapSession, stop: asyncio.Event | None = None) -> int:
        """NOOP, then every UID above the cursor, in batches; returns how many were handled.

        On the first start the cursor is written only at the end: until then the \\Seen flags
        alone say what is done, so a crash cannot turn read history above it into tickets.
        """
        await session.noop()
        uidvalidity = session.uidvalidity
        cursor = await self._load_cursor()
        if cursor is None:
            every = await session.search("ALL")
            todo = await session.search("UNSEEN")
            # Mail that arrived between the two searches is unseen: take it now, since its
            # EXISTS came in a search's answer and will not wake the IDLE that follows.
            ceiling = max(every[-1:] + todo[-1:], default=0)
        elif cursor[0] != uidvalidity:
            log.warning(
                "imap intake: UIDVALIDITY of %s changed from %s to %s; reading it again "
                "(Message-IDs keep mail from being stored twice)",
                session.mailbox,
                cursor[0],
                uidvalidity,
            )
            todo = await session.search("ALL")
            ceiling = todo[-1] if todo else 0
        else:
            last = cursor[1]
            todo = [uid for uid in await session.search("UID", f"{last + 1}:*") if uid > last]
            ceiling = todo[-1] if todo else last
        handled = 0
        for start in range(0, len(todo), self._batch_size):
            if stop is not None and stop.is_set():
                return handled  # the rest waits for the next start; the cursor says where
            batch = todo[start : start + self._batch_size]
            await self._batch(session, uidvalidity, batch, move_cursor=cursor is not None)
            handled += len(batch)
        if cursor != (uidvalidity, ceiling):
            await self._save_cursor(uidvalidity, ceiling)
        return handled

    async def _batch(
        self, session: ImapSession, uidvalidity: int, uids: Sequence[int], *, move_cursor: bool
    ) -> None:
        """Fetch, parse and store a batch (one transaction for all, see `Desk.receive_many`),
        set aside what could not be taken in, and only then flag the batch and move the cursor."""
        fetched = await session.fetch(uids)
        parsed: list[tuple[int, str, FetchedMail, IncomingMessage | Exception]] = []
        for uid in uids:
            mail = fetched.get(uid)
            if mail is None:
                log.info("imap intake: UID %s was expunged before it could be read", uid)
                continue
            reference = f"{uidvalidity}:{uid}"
            try:
                parsed.append((uid, reference, mail, await self._incoming(reference, mail)))
            except Exception as error:
                if _unreachable(error):
                    raise StorageUnavailable(f"database unavailable: {error}") from error
                parsed.append((uid, reference, mail, error))
        incoming = [item for *_, item in parsed if isinstance(item, IncomingMessage)]
        try:
            stored = iter(await self._desk.receive_many(incoming))
        except Exception as error:  # nothing of the batch was committed
            if _unreachable(error):
                raise StorageUnavailable(f"database unavailable: {error}") from error
            raise
        self._lag(parsed)
        done = [uid for uid in uids if uid not in fetched]
        try:
            for uid, reference, mail, item in parsed:
                outcome = next(stored) if isinstance(item, IncomingMessage) else item
                await self._outcome(reference, mail, item, outcome)
                done.append(uid)
        except BaseException:
            if done:
                with contextlib.suppress(Exception):
                    await self._progress(session, uidvalidity, sorted(done), move_cursor)
            raise
        if done:
            await self._progress(session, uidvalidity, sorted(done), move_cursor)

    def _lag(self, parsed: Sequence[tuple[int, str, FetchedMail, object]]) -> None:
        """Report how long the oldest mail of a stored batch waited in the mailbox."""
        arrived = [mail.internal_date for _, _, mail, _ in parsed if mail.internal_date]
        if arrived:
            lag = (self._clock() - min(arrived)).total_seconds()
            self._events.measure(IMAP_LAG, max(lag, 0.0))

    async def _progress(
        self, session: ImapSession, uidvalidity: int, uids: list[int], move_cursor: bool
    ) -> None:
        """After the commit: flag the mails \\Seen, then move the cursor past them."""
        await session.mark_seen(uids)
        if move_cursor:
            await self._save_cursor(uidvalidity, max(uids))

    async def _outcome(
        self,
        reference: str,
        mail: FetchedMail,
        incoming: IncomingMessage | Exception,
        outcome: Intake | Exception,
    ) -> None:
        """Log what became of a mail; set aside one that could not be taken in."""
        if isinstance(outcome, Intake):
            if outcome.duplicate:
                log.info("imap intake: %s was taken in before", reference)
            else:
                log.info("imap intake: %s → ticket #%s", reference, outcome.ticket)
            return
        if _unreachable(outcome):
            raise StorageUnavailable(f"database unavailable: {outcome}") from outcome
        if (
            isinstance(outcome, IntegrityError)
            and isinstance(incoming, IncomingMessage)
            and incoming.external_id
            and await self._stored(incoming.external_id)
        ):
            log.info(
                "imap intake: %s is %s, stored before; skipped", reference, incoming.external_id
            )
            return
        log.warning("imap intake: %s could not be taken in (%s); quarantined", reference, outcome)
        await self._set_aside(reference, mail.raw, f"{type(outcome).__name__}: {outcome}")

    async def retake(self, reference: str, raw: bytes) -> Intake:
        """Take in a quarantined mail again (after a fix); errors are raised, not set aside."""
        uid = int(reference.rpartition(":")[2]) if reference.rpartition(":")[2].isdigit() else 0
        incoming = await self._incoming(
            reference, FetchedMail(uid=uid, raw=raw, internal_date=None)
        )
        return await self._desk.receive(incoming)

    async def _incoming(self, reference: str, mail: FetchedMail) -> IncomingMessage:
        parsed = parse_mail(
            mail.raw,
            our_address=self._address,
            loop_header=self._loop_header,
            attachment_cap=self._attachment_cap,
        )
        address = parsed.from_address or parsed.reply_to
        if not address:
            raise UnusableMail("the mail names no sender address")
        from_desk = address == self._address
        customer = CustomerRef(
            name=parsed.from_name or address, email=address, language=normalise(parsed.language)
        )
        reply_address = parsed.reply_to or address
        if parsed.bounce_of:
            original = await self._bounced_address(parsed.bounce_of)
            if original is not None:
                customer = CustomerRef(name="", email=original)
                reply_address = original
        now = self._clock()
        received = mail.internal_date
        attachments = tuple(
            Attachment(
                kind="document",
                ref=f"imap:{reference}:{index}",
                filename=item.filename,
                mime_type=item.content_type,
                size=item.size,
                data=item.data,
            )
            for index, item in enumerate(parsed.attachments)
        )
        return IncomingMessage(
            customer=customer,
            channel=Channel.EMAIL,
            text=parsed.visible_text if parsed.visible_text.strip() else parsed.text,
            attachments=attachments,
            external_id=parsed.message_id or _made_up_id(mail.raw),
            dedup_key=(SOURCE, reference),
            reply_address=reply_address,
            subject=parsed.subject,
            new_ticket=True,
            automated=parsed.automated is not None,
            received_at=min(received, now) if received is not None else None,
            thread_refs=_unique([*parsed.in_reply_to, *parsed.references, *parsed.bounce_of]),
            ticket_tag=parsed.ticket_tag,
            auth=parsed.auth.value,
            bounce_of=parsed.bounce_of,
            sender_address=address,
            sender_name=parsed.from_name,
            from_desk=from_desk,
            raw_source=mail.raw if parsed.broken else None,
        )

    # -- storage -------------------------------------------------------------------------------

    async def _bounced_address(self, ids: Sequence[str]) -> str | None:
        """The address our bounced mail went to: a reply's, or for a receipt its ticket's."""
        return await email_lookups.bounced_address(
            self._sessions, [bounded_id(item) for item in ids]
        )

    async def _stored(self, external_id: str) -> bool:
        return await email_lookups.mail_stored(self._sessions, bounded_id(external_id))

    async def _set_aside(self, reference: str, raw: bytes, error: str) -> None:
        try:
            if not await email_lookups.already_set_aside(self._sessions, SOURCE, reference, raw):
                await self._desk.quarantine(SOURCE, reference, raw, error)
        except Exception as failure:
            if _unreachable(failure):
                raise StorageUnavailable(f"database unavailable: {failure}") from failure
            raise

    async def _load_cursor(self) -> tuple[int, int] | None:
        try:
            return await store.load_cursor(self._sessions, self.cursor_key)
        except Exception as error:
            if _unreachable(error):
                raise StorageUnavailable(f"database unavailable: {error}") from error
            raise

    async def _save_cursor(self, uidvalidity: int, last_uid: int) -> None:
        try:
            await store.save_cursor(
                self._sessions, self.cursor_key, uidvalidity, last_uid, self._clock()
            )
        except Exception as error:
            if _unreachable(error):
                raise StorageUnavailable(f"database unavailable: {error}") from error
            raise

    # -- health --------------------------------------------------------------------------------

    async def _healthy(self) -> None:
        self._last_ok = self._clock()
        if self._alerted and await self._tell(True, "the support mailbox is being read again"):
            self._alerted = False

    async def _failing(self, detail: str) -> None:
        down = self._clock() - self._last_ok
        if self._alerted or down < self._alert_after:
            return
        minutes = int(down.total_seconds() // 60)
        message = f"no mail could be fetched for {minutes} minutes: {detail}"
        if await self._tell(False, message):
            self._alerted = True

    async def _tell(self, ok: bool, detail: str) -> bool:
        if self._on_health is None:
            return True
        try:
            await self._on_health(ok, detail)
        except Exception:
            log.exception("imap intake: the health callback failed")
            return False
        return True


def health_notices(
    sessions: async_sessionmaker[AsyncSession],
    templates: Renderer,
    *,
    clock: Clock = utcnow,
    wakeup: Callable[[], None] | None = None,
) -> HealthCallback:
    """A health callback that tells the agents' group through the outbox, like every notice."""

    async def notify(ok: bool, detail: str) -> None:
        async with sessions.begin() as session:
            notify_agents(session, templates, "mail_health", at=clock(), ok=ok, detail=detail)
        if wakeup is not None:
            wakeup()

    return notify


def _unreachable(error: BaseException) -> bool:
    """A database that is down or busy, as opposed to a mail it refuses."""
    return isinstance(error, StorageUnavailable | PoolTimeout) or unreachable(error)


def _made_up_id(raw: bytes) -> str:
    """A stable Message-ID for a mail that has none, so a resync recognises it."""
    return f"<sha256-{hashlib.sha256(raw).hexdigest()[:40]}@no-message-id.invalid>"


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))
