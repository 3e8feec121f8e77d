"""What Telegram's answers mean for an outbox row; sending a stored file, and answering an agent.

Shared by the customer sender and the agents' feed: the library's errors are translated here,
at the adapter's edge, into the outbox's outcomes.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import telegram
from telegram import InlineKeyboardMarkup, MaybeInaccessibleMessage, Message, ReplyParameters
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.warnings import PTBDeprecationWarning

from bot.limits import TelegramLimiter
from tickets.outbox import Failed, Outcome, RetryLater

CAPTIONED = frozenset({"photo", "document", "voice", "video", "audio", "animation"})


def quiet_httpx() -> None:
    """httpx logs request URLs at INFO, and Bot API URLs contain the bot token."""
    httpx_log = logging.getLogger("httpx")
    if httpx_log.getEffectiveLevel() < logging.WARNING:
        httpx_log.setLevel(logging.WARNING)


def retry_after_seconds(error: RetryAfter) -> float:
    """The wait Telegram asked for, whichever type this PTB version reports it in."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value: Any = error.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def outcome_for(error: TelegramError) -> Outcome:
    """The outcome of a send that raised; a 403 is the caller's to interpret first.

    `BadRequest` and `TimedOut` subclass `NetworkError`, so the specific classes are checked
    before the general one: a bad request will never succeed, a network error may.
    """
    outcome: Outcome
    if isinstance(error, RetryAfter):
        seconds = retry_after_seconds(error)
        outcome = RetryLater(f"Telegram flood control: retry after {seconds:g} s", after=seconds)
    elif isinstance(error, BadRequest | Forbidden):
        outcome = Failed(error.message)
    elif isinstance(error, ChatMigrated):
        outcome = Failed(f"the chat moved to {error.new_chat_id}: {error.message}")
    elif isinstance(error, TimedOut):
        outcome = RetryLater(f"Telegram timed out: {error.message}")
    elif isinstance(error, NetworkError):
        outcome = RetryLater(f"network error: {error.message}")
    else:
        outcome = RetryLater(f"{type(error).__name__}: {error.message}")
    return outcome


async def send_file(
    bot: telegram.Bot,
    chat_id: int,
    attachment: dict[str, Any],
    *,
    caption: str | None = None,
    parse_mode: str | None = None,
    thread_id: int | None = None,
    reply_to: int | None = None,
) -> telegram.Message:
    """Send a file Telegram already has, by its file_id, with the method its kind needs."""
    kind = str(attachment.get("kind") or "document")
    methods: dict[str, Callable[..., Awaitable[telegram.Message]]] = {
        "photo": bot.send_photo,
        "voice": bot.send_voice,
        "video": bot.send_video,
        "audio": bot.send_audio,
        "animation": bot.send_animation,
        "video_note": bot.send_video_note,
        "sticker": bot.send_sticker,
        "document": bot.send_document,
    }
    options: dict[str, Any] = {"message_thread_id": thread_id}
    if reply_to is not None:
        options["reply_parameters"] = ReplyParameters(reply_to, allow_sending_without_reply=True)
    if kind in CAPTIONED:
        options.update(caption=caption, parse_mode=parse_mode)
    send = methods.get(kind, bot.send_document)
    return await send(chat_id, str(attachment["ref"]), **options)


async def answer_agent(
    bot: telegram.Bot,
    limiter: TelegramLimiter,
    message: MaybeInaccessibleMessage,
    html_text: str,
    keyboard: InlineKeyboardMarkup | None = None,
) -> Message:
    """The bot's HTML answer to an agent's message (or to a message with buttons): a reply in
    its topic, paced by the limiter. A message too old to show is answered without a topic."""
    thread = message.message_thread_id if isinstance(message, Message) else None
    topic = isinstance(message, Message) and message.is_topic_message
    async with limiter.sending(message.chat.id):
        return await bot.send_message(
            message.chat.id,
            html_text,
            parse_mode=ParseMode.HTML,
            message_thread_id=thread if topic else None,
            reply_to_message_id=message.message_id,
            reply_markup=keyboard,
        )
