"""Outbox senders for Telegram: answers and receipts to customers, notices to the agents' group.

`CustomerSender` serves `Route.TELEGRAM`; `AgentFeed` (in `bot/feed.py`, re-exported here)
serves `Route.AGENTS`. Both pace themselves with one shared `TelegramLimiter`, so Telegram never
has to refuse a message, and translate Telegram's errors into outbox outcomes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import telegram
from telegram import InlineKeyboardMarkup
from telegram.error import Forbidden, TelegramError

from bot.buttons import Action, ButtonSigner
from bot.feed import AgentFeed
from bot.format import fits_caption, split_text
from bot.limits import TelegramLimiter
from bot.sending import CAPTIONED, outcome_for, quiet_httpx, send_file
from tickets.outbox import (
    Deferred,
    Delivered,
    Failed,
    OutboxItem,
    Outcome,
    Report,
    deliver_in_order,
)
from tickets.satisfaction import SCORES

__all__ = ["AgentFeed", "CustomerSender", "Part", "parts_of"]

log = logging.getLogger(__name__)

# A row waits in the outbox rather than in a sender when the bot-wide window is this far off.
PATIENCE = 0.25
# Slots of the bot-wide window customer sends leave free, so the agents' group is never starved.
KEEP_FOR_AGENTS = 3


class CustomerDirectory(Protocol):
    """The part of the desk the sender tells when a customer cannot be reached."""

    async def mark_unreachable(self, telegram_id: int) -> None: ...


@dataclass(frozen=True)
class Part:
    """One Telegram message of an outgoing row: a text chunk, or a file with maybe a caption."""

    text: str | None = None
    attachment: Mapping[str, Any] | None = None


def parts_of(payload: Mapping[str, Any]) -> list[Part]:
    """The messages a row becomes: its text split to fit, then its files by file_id.

    A single file carries the text as its caption when the text fits one.
    """
    text = str(payload.get("text") or "")
    files = [a for a in payload.get("attachments") or [] if isinstance(a, dict) and a.get("ref")]
    if (
        len(files) == 1
        and text.strip()
        and fits_caption(text)
        and files[0].get("kind") in CAPTIONED
    ):
        return [Part(text=text, attachment=files[0])]
    return [Part(text=chunk) for chunk in split_text(text)] + [Part(attachment=f) for f in files]


@dataclass
class _Progress:
    """How many of a row's messages went out, and the first's id (the row's external id)."""

    sent: int
    first_id: int

    @classmethod
    def of(cls, item: OutboxItem) -> _Progress | None:
        """What an earlier try saved (`Report.progress`), if anything went out."""
        state = item.progress or {}
        sent, first = state.get("sent"), state.get("first")
        if isinstance(sent, int) and isinstance(first, int) and sent > 0:
            return cls(sent, first)
        return None

    def state(self) -> dict[str, int]:
        return {"sent": self.sent, "first": self.first_id}


class CustomerSender:
    """Delivers answers and receipts to customers' private chats, one row after another."""

    def __init__(
        self,
        bot: telegram.Bot,
        limiter: TelegramLimiter,
        desk: CustomerDirectory,
        signer: ButtonSigner | None = None,
    ) -> None:
        self._bot = bot
        self._limiter = limiter
        self._desk = desk
        self._signer = signer
        quiet_httpx()

    async def deliver(self, items: Sequence[OutboxItem], report: Report) -> None:
        """Send the rows of one customer in order; stop at the first that did not go out."""
        await deliver_in_order(items, report, partial(self._deliver_one, report=report))

    async def _deliver_one(self, item: OutboxItem, report: Report) -> Outcome:
        try:
            chat_id = int(item.recipient)
        except ValueError:
            return Failed(f"{item.recipient!r} is not a Telegram chat id")
        parts = parts_of(item.payload)
        if not parts:
            return Failed("nothing to send: the message has neither text nor files")
        # The chat's own slot is waited for in the outbox, not here: other chats go on meanwhile.
        chat_wait = self._limiter.chat_wait_time(chat_id)
        overall_wait = self._limiter.overall_wait_time(keep=KEEP_FOR_AGENTS)
        if chat_wait > 0 or overall_wait > PATIENCE:
            return Deferred(after=max(chat_wait, overall_wait))
        progress = _Progress.of(item)
        saved = progress.sent if progress else 0
        buttons = score_buttons(self._signer, item.payload)
        try:
            for index, part in enumerate(parts[saved:], start=saved):
                if progress is not None and progress.sent > saved:  # before the next message
                    await report.progress(item, progress.state())
                    saved = progress.sent
                last = index == len(parts) - 1
                async with self._limiter.sending(chat_id, keep=KEEP_FOR_AGENTS):
                    message = await self._send(chat_id, part, buttons if last else None)
                if progress is None:
                    progress = _Progress(0, message.message_id)
                progress.sent += 1
        except TelegramError as error:
            return await self._refused(chat_id, error)
        assert progress is not None
        return Delivered(external_id=f"{chat_id}:{progress.first_id}")

    async def _refused(self, chat_id: int, error: TelegramError) -> Outcome:
        if not isinstance(error, Forbidden):
            return outcome_for(error)
        await self._desk.mark_unreachable(chat_id)
        log.info("customer chat %s refuses the bot: %s", chat_id, error.message)
        if "blocked" in error.message.lower():
            return Failed("the customer has blocked the bot")
        return Failed(f"the customer cannot be reached on Telegram: {error.message}")

    async def _send(
        self, chat_id: int, part: Part, buttons: InlineKeyboardMarkup | None = None
    ) -> telegram.Message:
        if part.attachment is not None:
            return await send_file(self._bot, chat_id, dict(part.attachment), caption=part.text)
        assert part.text is not None
        # Customer texts and templates are plain text: no parse mode, nothing to escape.
        return await self._bot.send_message(
            chat_id, part.text, parse_mode=None, reply_markup=buttons
        )


def score_buttons(
    signer: ButtonSigner | None, payload: Mapping[str, Any]
) -> InlineKeyboardMarkup | None:
    """The five signed score buttons of a satisfaction ask (`payload["csat"]`: its ticket)."""
    ticket = payload.get("csat")
    if signer is None or not isinstance(ticket, int) or isinstance(ticket, bool):
        return None
    return InlineKeyboardMarkup(
        [[signer.button(f"{score} ⭐", Action.CSAT, ticket, str(score)) for score in SCORES]]
    )
