"""Long polling that acknowledges an update to Telegram only after it has been committed.

python-telegram-bot's own updater confirms updates as soon as it fetched them; a crash before the
ticket was written would lose the message. Here the offset moves past a batch only when every
update in it was handled: stored, answered, or — if it could not be processed — quarantined.
Updates of one chat are handled in order; different chats run concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
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
from bot.outcomes import retry_after_seconds
from tickets.batching import unreachable
from tickets.desk import Desk

log = logging.getLogger(__name__)

ALLOWED_UPDATES = ["message", "edited_message", "callback_query"]


class Transient(Exception):
    """The database or Telegram is unreachable right now: retry the batch, lose nothing."""


class Poller:
    """Fetches updates, hands each to the customer or agent side, then confirms the batch."""

    def __init__(
        self,
        bot: Bot,
        desk: Desk,
        customers: CustomerChat,
        agents: AgentGroup,
        *,
        concurrency: int = 12,
        poll_timeout: int = 20,
    ) -> None:
        self._bot = bot
        self._desk = desk
        self._customers = customers
        self._agents = agents
        self._limit = asyncio.Semaphore(concurrency)
        self._poll_timeout = poll_timeout
        self.offset: int | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until `stop` is set; failures back off and retry, never skip an update."""
        backoff = 1.0
        while not stop.is_set():
            try:
                updates = await self._fetch(stop)
                if updates:
                    await self.process(updates)
                    self.offset = updates[-1].update_id + 1
                backoff = 1.0
            except asyncio.CancelledError:
                raise
            except RetryAfter as error:
                await _sleep(stop, retry_after_seconds(error))
            except Conflict:
                log.error(
                    "telegram intake: another process is polling with this bot token (or a "
                    "webhook is set); retrying in %.0fs",
                    backoff,
                )
                await _sleep(stop, backoff)
                backoff = min(backoff * 2, 60.0)
            except (Transient, TelegramError) as error:
                log.warning("telegram intake: %s; retrying in %.0fs", error, backoff)
                await _sleep(stop, backoff)
                backoff = min(backoff * 2, 60.0)

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

    async def process(self, updates: Sequence[Update]) -> None:
        """Handle a batch: per chat in order, chats concurrently; raise Transient to retry it."""
        by_chat: dict[int, list[Update]] = {}
        for update in updates:
            chat = update.effective_chat
            by_chat.setdefault(chat.id if chat else 0, []).append(update)
        results = await asyncio.gather(
            *(self._chat_in_order(chat_updates) for chat_updates in by_chat.values()),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _chat_in_order(self, updates: list[Update]) -> None:
        async with self._limit:
            for update in updates:
                await self._handle_safely(update)

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
        await self._desk.quarantine(
            "telegram", f"update {update.update_id}", raw, f"{type(error).__name__}: {error}"
        )

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
            return
        if message.chat.type != "private":
            return  # other groups the bot was added to are not a support channel
        if update.edited_message is not None:
            await self._customers.on_edit(message)
        else:
            await self._customers.on_message(message)


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
