"""Long polling in which no chat waits for another, and no update is lost in a crash.

python-telegram-bot's own updater confirms updates as soon as it fetched them; a crash before
the ticket was written would lose the message. Waiting instead until a whole batch is handled
before polling again lets one busy chat — a stranger sending hundreds of commands — hold back
everyone else. So every fetched batch is first kept in the inbox (`tickets.inbox`), one
transaction, and only then confirmed by the next `getUpdates`; polling goes on at once.

Kept updates are handled in *lanes*: a customer's private chat is one lane, and each agent in
the agents' group is one, so each chat's (each agent's) updates are handled in order while
lanes run side by side, 12 updates at a time. A lane whose update fails for a passing reason
(the database or Telegram unreachable) retries that update with backoff, holding back no other
lane. What a crash interrupted is found in the inbox at the next start and handled first.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Sequence

from sqlalchemy.exc import DBAPIError
from telegram import Bot, Update
from telegram.error import (
    BadRequest,
    Conflict,
    Forbidden,
    NetworkError,
    RetryAfter,
    TelegramError,
)

from bot.agents import AgentGroup
from bot.customers import CustomerChat
from bot.sending import retry_after_seconds
from tickets.desk import Desk
from tickets.group_commit import unreachable
from tickets.inbox import Inbox, Kept
from tickets.periodic import sleep_until_stopped

log = logging.getLogger(__name__)

ALLOWED_UPDATES = ["message", "edited_message", "callback_query"]
# Updates kept but not yet handled, beyond which polling pauses (Telegram keeps the rest).
BACKLOG = 5_000
# How long lanes may finish the update in hand once the service stops.
STOP_GRACE = 5.0


class Transient(Exception):
    """The database or Telegram is unreachable right now: retry the update, lose nothing."""


class Poller:
    """Fetches updates, keeps them, confirms them, and hands each to its lane."""

    def __init__(
        self,
        bot: Bot,
        desk: Desk,
        customers: CustomerChat,
        agents: AgentGroup,
        inbox: Inbox,
        *,
        concurrency: int = 12,
        poll_timeout: int = 20,
        backlog: int = BACKLOG,
    ) -> None:
        self._bot = bot
        self._desk = desk
        self._customers = customers
        self._agents = agents
        self._inbox = inbox
        self._limit = asyncio.Semaphore(concurrency)
        self._poll_timeout = poll_timeout
        self._backlog = backlog
        self.offset: int | None = None
        self._lanes: dict[str, deque[Update]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._handled: list[int] = []  # handled since the inbox last forgot what was handled
        self._waiting = 0  # kept, not yet handled
        self._room = asyncio.Event()
        self._room.set()
        self._stop = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until `stop` is set; failures back off and retry, never skip an update.

        It may run again after a stop (a replica that leads Telegram again): what an earlier
        run left in its lanes is in the inbox and is handed out afresh.
        """
        self._stop = stop
        self._lanes.clear()
        self._waiting = 0
        self._room.set()
        try:
            await self._recover(stop)
            await self._poll(stop)
        finally:
            await self._finish()

    async def _poll(self, stop: asyncio.Event) -> None:
        backoff = 1.0
        while not stop.is_set():
            try:
                await self._wait_for_room(stop)
                updates = await self._fetch(stop)
                await self._keep(updates)
                backoff = 1.0
            except asyncio.CancelledError:
                raise
            except RetryAfter as error:
                await sleep_until_stopped(stop, retry_after_seconds(error))
            except Conflict:
                log.error(
                    "telegram intake: another process is polling with this bot token (or a "
                    "webhook is set); retrying in %.0fs",
                    backoff,
                )
                await sleep_until_stopped(stop, backoff)
                backoff = min(backoff * 2, 60.0)
            except (Transient, TelegramError, DBAPIError, OSError) as error:
                log.warning("telegram intake: %s; retrying in %.0fs", error, backoff)
                await sleep_until_stopped(stop, backoff)
                backoff = min(backoff * 2, 60.0)

    async def _recover(self, stop: asyncio.Event) -> None:
        """Hand out what an earlier run kept and did not finish; poll on from after it."""
        backoff = 1.0
        while not stop.is_set():
            try:
                kept = await self._inbox.pending()
                break
            except (DBAPIError, OSError) as error:
                log.warning("telegram intake: reading kept updates: %s; retrying", error)
                await sleep_until_stopped(stop, backoff)
                backoff = min(backoff * 2, 60.0)
        else:
            return
        if kept:
            log.info(
                "telegram intake: %d update(s) kept by an earlier run are handled first", len(kept)
            )
            self.offset = kept[-1].seq + 1
        for event in kept:
            update = Update.de_json(event.payload, self._bot)
            if update is not None:
                self._dispatch(update)

    async def _keep(self, updates: Sequence[Update]) -> None:
        """Keep a fetched batch (and forget what was handled and confirmed), then hand it out."""
        confirmed = self.offset
        handled = [i for i in self._handled if confirmed is not None and i < confirmed]
        events = [Kept(u.update_id, json.loads(u.to_json())) for u in updates]
        new = await self._inbox.keep(events, handled)
        forgotten = set(handled)
        self._handled = [i for i in self._handled if i not in forgotten]
        if updates:
            self.offset = updates[-1].update_id + 1
        for update in updates:
            if update.update_id in new:
                self._dispatch(update)

    async def _wait_for_room(self, stop: asyncio.Event) -> None:
        if self._waiting < self._backlog:
            return
        log.warning("telegram intake: %d updates waiting; polling pauses", self._waiting)
        room = asyncio.ensure_future(self._room.wait())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({room, stopped}, return_when=asyncio.FIRST_COMPLETED)
        for waiter in (room, stopped):
            waiter.cancel()

    async def _fetch(self, stop: asyncio.Event) -> Sequence[Update]:
        fetch = asyncio.ensure_future(
            self._bot.get_updates(
                offset=self.offset,
                timeout=self._poll_timeout,
                allowed_updates=ALLOWED_UPDATES,
                read_timeout=self._poll_timeout + 10,
            )
        )
        stopped = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({fetch, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if fetch not in done:
            fetch.cancel()
            await asyncio.gather(fetch, return_exceptions=True)
            return ()
        stopped.cancel()
        return fetch.result()

    # -- lanes ------------------------------------------------------------------------------

    def lane(self, update: Update) -> str:
        """Updates of one lane are handled in order: a chat, or one agent in the group."""
        chat = update.effective_chat
        user = update.effective_user
        if chat is not None and chat.id == self._agents.chat_id:
            return f"{chat.id}:{user.id if user else 0}"
        if chat is not None:
            return str(chat.id)
        return f"user:{user.id if user else 0}"

    def _dispatch(self, update: Update) -> None:
        lane = self.lane(update)
        self._lanes.setdefault(lane, deque()).append(update)
        self._waiting += 1
        if self._waiting >= self._backlog:
            self._room.clear()
        if lane not in self._workers:
            self._workers[lane] = asyncio.create_task(self._work(lane))

    async def _work(self, lane: str) -> None:
        queue = self._lanes[lane]
        try:
            while queue and not self._stop.is_set():
                update = queue[0]
                if not await self._handle_until_done(update):
                    return
                queue.popleft()
                self._handled.append(update.update_id)
                self._waiting -= 1
                if self._waiting < self._backlog:
                    self._room.set()
        finally:
            del self._workers[lane]
            if not queue:
                del self._lanes[lane]

    async def _handle_until_done(self, update: Update) -> bool:
        """Handle one update, retrying passing failures; False if the service stopped first."""
        backoff = 1.0
        while True:
            try:
                async with self._limit:
                    await self._handle_safely(update)
                return True
            except Transient as error:
                log.warning(
                    "telegram intake: update %s: %s; retrying in %.0fs",
                    update.update_id,
                    error,
                    backoff,
                )
            await sleep_until_stopped(self._stop, backoff)
            if self._stop.is_set():
                return False
            backoff = min(backoff * 2, 60.0)

    async def _finish(self) -> None:
        """Let lanes finish the update in hand, then confirm and forget what was handled."""
        workers = list(self._workers.values())
        if workers:
            _, late = await asyncio.wait(workers, timeout=STOP_GRACE)
            for worker in late:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        if not self._handled or self.offset is None:
            return
        try:
            # Tell Telegram what was handled since the last poll, so the next start does not
            # handle it again; an update this returns is kept for the next start.
            updates = await self._bot.get_updates(
                offset=self.offset, timeout=0, limit=1, allowed_updates=ALLOWED_UPDATES
            )
            events = [Kept(u.update_id, json.loads(u.to_json())) for u in updates]
            await self._inbox.keep(events, self._handled)
        except (TelegramError, DBAPIError, OSError) as error:
            log.warning("telegram intake: could not confirm the last updates: %s", error)

    # -- one update -------------------------------------------------------------------------

    async def _handle_safely(self, update: Update) -> None:
        try:
            await self.handle(update)
        except DBAPIError as error:
            if unreachable(error):
                raise Transient(f"database unavailable: {error.orig!r}") from error
            log.exception("update %s could not be stored; quarantined", update.update_id)
            await self._quarantine(update, error)
        except OSError as error:
            raise Transient(f"database unavailable: {error}") from error
        except (BadRequest, Forbidden) as error:
            # Telegram refused our answer (e.g. the user blocked the bot meanwhile): what the
            # customer sent is stored already; there is nothing to retry.
            log.warning("telegram refused an answer to update %s: %s", update.update_id, error)
        except NetworkError as error:
            raise Transient(f"telegram unavailable: {error}") from error
        except Exception as error:
            log.exception("update %s could not be processed; quarantined", update.update_id)
            await self._quarantine(update, error)

    async def _quarantine(self, update: Update, error: BaseException) -> None:
        raw = json.dumps(update.to_dict(), ensure_ascii=False, default=str).encode()
        try:
            await self._desk.quarantine(
                "telegram", f"update {update.update_id}", raw, f"{type(error).__name__}: {error}"
            )
        except (DBAPIError, OSError) as failure:  # kept in the inbox: tried again later
            raise Transient(f"database unavailable: {failure}") from failure

    async def handle(self, update: Update) -> None:
        """Route one update: the agents' group, a customer's private chat, or a card button."""
        if update.callback_query is not None:
            await self._agents.on_button(update.callback_query)
            return
        message = update.message or update.edited_message
        if message is None:
            return
        if message.chat_id == self._agents.chat_id:
            if update.message is not None:
                await self._agents.on_message(message)
            else:
                await self._agents.on_edit(message)
            return
        if message.chat.type != "private":
            return  # other groups the bot was added to are not a support channel
        if update.edited_message is not None:
            await self._customers.on_edit(message)
        else:
            await self._customers.on_message(message)
