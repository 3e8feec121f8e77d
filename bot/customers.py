"""Customers in a private chat with the bot: commands, messages of every kind, edits."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from telegram import Bot, BotCommand, Message

from bot.accounts import AccountServices
from bot.convert import CARRIED, Content, content_of, display_name, external_id
from bot.limits import TelegramLimiter
from bot.refunds import CustomerRefunds
from tickets import queue
from tickets.desk import Desk
from tickets.languages import LOCALES, NAMES, normalise, parse_choice
from tickets.model import Channel, CustomerRef, IncomingMessage, Route
from tickets.policy import SlaPolicy
from tickets.ports import Clock
from tickets.rate_limits import RateRule
from tickets.rendering import Templates

log = logging.getLogger(__name__)

# What one customer may ask of the bot: commands, and messages it can only answer (stickers).
COMMANDS_PER_CUSTOMER = RateRule("commands", 20, timedelta(minutes=10))
# Commands whose words are no message to the desk (an address or a code).
_NOT_A_MESSAGE = frozenset({"link"})


def customer_commands(templates: Templates, locale: str) -> list[BotCommand]:
    """The customers' command menu in one locale (`templates/telegram/commands.txt`)."""
    text = templates.render("telegram/commands", locale=locale)
    return [BotCommand(*line.split(" ", 1)) for line in text.splitlines() if line.strip()]


def split_command(text: str, bot_username: str) -> tuple[str, str] | None:
    """`/cmd@bot args` → ("cmd", "args"); None when the text is no command (for this bot)."""
    if not text.startswith("/"):
        return None
    head, _, rest = text.partition(" ")
    name, _, target = head[1:].partition("@")
    if target and target.lower() != bot_username.lower():
        return None
    if not name or not name.replace("_", "").isalnum():
        return None
    return name.lower(), rest.strip()


@dataclass(frozen=True)
class ChatParts:
    """What both sides of the bot work with."""

    bot: Bot
    desk: Desk
    policy: SlaPolicy
    templates: Templates
    limiter: TelegramLimiter
    clock: Clock
    accounts: AccountServices | None = None  # /link and /balance; None: not switched on


class CustomerChat:
    """Turns a customer's private messages into tickets and answers their commands."""

    def __init__(self, parts: ChatParts, refunds: CustomerRefunds | None = None) -> None:
        self._refunds = refunds
        self._bot = parts.bot
        self._desk = parts.desk
        self._policy = parts.policy
        self._templates = parts.templates
        self._clock = parts.clock
        self._accounts = parts.accounts

    async def on_message(self, message: Message) -> None:
        """Handle one private message from a customer."""
        ref = _writer(message)
        if ref is None:
            return
        command = split_command(message.text or "", self._bot.username)
        content = content_of(message) if command is None else None
        if content is not None:
            # Desk.receive drops a banned customer's message in its own transaction, so a
            # message is stored without a round trip to the database beforehand.
            await self._receive(message, ref, content, new_ticket=False)
            return
        if await self._desk.customer_banned(ref):
            return
        locale = await self._desk.customer_locale(ref)
        if not await self._within_limit(message, ref, command, locale):
            return
        if command is not None:
            await self._command(message, ref, *command, locale=locale)
        else:
            await self._answer(
                message,
                self._templates.render("telegram/unsupported", locale=locale, carried=CARRIED),
            )

    async def on_edit(self, message: Message) -> None:
        """Record an edit; an edit of a message we never saw is taken as a new message."""
        ref = await self._customer(message)
        if ref is None:
            return
        content = content_of(message)
        if content is None:
            return
        ticket = await self._desk.record_edit(Channel.TELEGRAM, external_id(message), content.text)
        if ticket is None:
            await self._receive(message, ref, content, new_ticket=False)

    async def _customer(self, message: Message) -> CustomerRef | None:
        """Who wrote, unless it is a bot or a banned customer (they get nothing)."""
        ref = _writer(message)
        if ref is None or await self._desk.customer_banned(ref):
            return None
        return ref

    async def _receive(
        self, message: Message, ref: CustomerRef, content: Content, *, new_ticket: bool
    ) -> None:
        ident = external_id(message)
        await self._desk.receive(
            IncomingMessage(
                customer=ref,
                channel=Channel.TELEGRAM,
                text=content.text,
                attachments=content.attachments,
                external_id=ident,
                dedup_key=("telegram", ident),
                reply_address=str(message.chat_id),
                new_ticket=new_ticket,
                received_at=message.date,
            )
        )

    async def _command(
        self, message: Message, ref: CustomerRef, name: str, args: str, *, locale: str
    ) -> None:
        if name in ("start", "help"):
            await self._answer(
                message,
                self._templates.render(
                    "telegram/start",
                    locale=locale,
                    name=message.from_user.first_name if message.from_user else "",
                    response_hours=self._policy.response_hours,
                    target_hours=self._policy.target_hours,
                ),
            )
        elif name == "new":
            if args:  # a command is a text message: no files come with it
                await self._receive(message, ref, Content(args, ()), new_ticket=True)
            else:
                await self._desk.request_new_ticket(ref)
                text = self._templates.render("telegram/new_ticket", locale=locale)
                await self._answer(message, text)
        elif name == "language":
            await self._answer(message, await self._language(ref, args, locale))
        elif name == "link" and self._accounts is not None:
            assert ref.telegram_id is not None
            answer = await self._accounts.link(ref.telegram_id, ref.name, args, locale)
            await self._answer(message, answer)
        elif name == "link":
            text = self._templates.render("telegram/link", locale=locale, result="no_mail")
            await self._answer(message, text)
        elif name == "balance" and self._accounts is not None:
            assert ref.telegram_id is not None
            answer = await self._accounts.customer_balance(ref.telegram_id, locale)
            await self._answer(message, answer)
        elif name == "refund" and self._refunds is not None:
            refund_answer = await self._refunds.request(message, ref, args, locale)
            if refund_answer is not None:
                await self._answer(message, refund_answer)
        elif name == "status":
            assert ref.telegram_id is not None
            views = queue.QueueViews(self._desk.sessions, self._policy)
            tickets = await views.customer_tickets(ref.telegram_id, self._clock())
            text = self._templates.render("telegram/status", locale=locale, tickets=tickets)
            await self._answer(message, text)
        else:
            # Strangers trying agent commands here learn nothing beyond this.
            text = self._templates.render(
                "telegram/unknown_command", locale=locale, command=f"/{name}"
            )
            await self._answer(message, text)

    async def _language(self, ref: CustomerRef, args: str, locale: str) -> str:
        """`/language ru` keeps the customer's pick; anything else gets the one-line usage."""
        picked = parse_choice(args)
        if picked is None:
            choices = ", ".join(f"{_tag(code)} ({NAMES[code]})" for code in LOCALES)
            return self._templates.render(
                "telegram/language", locale=locale, result="usage", choices=choices
            )
        await self._desk.set_language(ref, picked)
        return self._templates.render("telegram/language", locale=picked, result="set")

    async def _within_limit(
        self, message: Message, ref: CustomerRef, command: tuple[str, str] | None, locale: str
    ) -> bool:
        """Count a request the bot answers; over the limit it goes unanswered, but words that
        came with a command are stored as a message, and the customer is told once."""
        assert ref.telegram_id is not None
        verdict = await self._desk.count_use(COMMANDS_PER_CUSTOMER, ref.telegram_id)
        if verdict.allowed:
            return True
        if verdict.tell:
            text = self._templates.render(
                "telegram/slow_down", locale=locale, ticket=None, retry_at=verdict.retry_at
            )
            await self._answer(message, text)
        if command is not None and command[1] and command[0] not in _NOT_A_MESSAGE:
            await self._receive(message, ref, Content(message.text or "", ()), new_ticket=False)
        return False

    async def _answer(self, message: Message, text: str) -> None:
        """Answers go through the outbox: the chat's 1-a-second pace is waited out there."""
        await self._desk.answer_customer(Route.TELEGRAM, str(message.chat_id), text)


def _writer(message: Message) -> CustomerRef | None:
    """Who wrote, unless it was a bot."""
    user = message.from_user
    if user is None or user.is_bot:
        return None
    return CustomerRef(
        name=display_name(message),
        telegram_id=user.id,
        language=normalise(user.language_code),
    )


def _tag(locale: str) -> str:
    """What a customer types for a locale: `zh` rather than `zh_Hans`."""
    return locale.split("_", maxsplit=1)[0]
