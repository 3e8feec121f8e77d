"""The Telegram channel: one bot, the customers' private chats and the agents' group."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from functools import partial
from http import HTTPStatus
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from telegram import Bot, BotCommand, BotCommandScopeAllPrivateChats, BotCommandScopeChat
from telegram.error import BadRequest, Forbidden, InvalidToken, NetworkError, TelegramError
from telegram.request import HTTPXRequest

from accounts.payouts import PayoutDesk
from accounts.refund_desk import RefundDesk
from bot.accounts import AccountServices
from bot.agents import AGENT_COMMANDS, AgentGroup
from bot.buttons import ButtonSigner
from bot.console import AgentConsole
from bot.customers import ChatParts, CustomerChat, customer_commands
from bot.limits import TelegramLimiter
from bot.outage import GroupOutage
from bot.polling import ALLOWED_UPDATES, Poller
from bot.refunds import AGENT_REFUND_COMMANDS, AgentRefunds, CustomerRefunds
from bot.senders import AgentFeed, CustomerSender
from bot.settings import TelegramSettings
from bot.store import PlaceBook
from bot.webhook import KeptUpdates, WebhookServer
from tickets.desk import Desk
from tickets.errors import SupportbotError
from tickets.inbox import Inbox
from tickets.languages import LOCALES
from tickets.model import Attachment, Route
from tickets.outbox import Sender
from tickets.periodic import run_every
from tickets.policy import SlaPolicy
from tickets.ports import NO_EVENTS, TELEGRAM_429, Clock, Events, FileData
from tickets.rendering import Templates

log = logging.getLogger(__name__)


class CountingRequest(HTTPXRequest):
    """PTB's HTTP transport, reporting every 429 the Bot API answers (polling and sending)."""

    def __init__(self, events: Events, **options: Any) -> None:
        super().__init__(**options)
        self._events = events

    async def do_request(self, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        status, body = await super().do_request(*args, **kwargs)
        if status == HTTPStatus.TOO_MANY_REQUESTS:
            self._events.count(TELEGRAM_429)
        return status, body


class TelegramChannel:
    """Connects the bot, checks the agents' group, and runs intake and ticket placement."""

    def __init__(
        self,
        settings: TelegramSettings,
        desk: Desk,
        sessions: async_sessionmaker[AsyncSession],
        policy: SlaPolicy,
        templates: Templates,
        clock: Clock,
        *,
        poll_timeout: int = 20,
        placement_interval: float = 5.0,
        accounts: AccountServices | None = None,
        refunds: RefundDesk | None = None,
        payouts: PayoutDesk | None = None,
        events: Events = NO_EVENTS,
    ) -> None:
        self._settings = settings
        self._desk = desk
        self._sessions = sessions
        self._policy = policy
        self._templates = templates
        self._clock = clock
        self._poll_timeout = poll_timeout
        self._placement_interval = placement_interval
        self._accounts = accounts
        self._refunds = refunds or RefundDesk(sessions, templates, clock=clock)
        self._payouts = payouts or PayoutDesk(sessions, templates, clock=clock)
        self.limiter = TelegramLimiter()
        self.signer = ButtonSigner(settings.token)
        api = settings.api_url
        self.bot = Bot(
            settings.token,
            base_url=f"{api}/bot",
            base_file_url=f"{api}/file/bot",
            request=CountingRequest(
                events,
                connection_pool_size=32,
                read_timeout=settings.timeout,
                write_timeout=settings.timeout,
            ),
            get_updates_request=CountingRequest(
                events, connection_pool_size=2, read_timeout=poll_timeout + 10
            ),
        )
        self.forum = False
        self._feed: AgentFeed | None = None
        self._poller: Poller | None = None

    async def token_works(self) -> str | None:
        """Ask the Bot API who the bot is (getMe): None if the token works, else why not."""
        try:
            await self.bot.get_me()
        except (InvalidToken, Forbidden):
            return "the Bot API server rejected the token"
        except TelegramError as error:
            return f"the Bot API server did not answer getMe: {error.message}"
        return None

    async def start(self) -> None:
        """Log in, set the intake (polling or webhook) and check the agents' group; a wrong
        token or chat is one clear error."""
        chat_id = self._settings.agent_chat_id
        try:
            await self.bot.initialize()
            await self._set_intake()
            chat = await self.bot.get_chat(chat_id)
        except InvalidToken:
            raise SupportbotError("TELEGRAM_TOKEN: the Bot API server rejected the token") from None
        except (BadRequest, Forbidden) as error:
            raise SupportbotError(
                f"AGENT_CHAT_ID: the bot cannot use chat {chat_id} ({error.message}); "
                "add the bot to the agents' group as an administrator"
            ) from None
        except NetworkError as error:
            raise SupportbotError(
                f"TELEGRAM_API_URL: cannot reach {self._settings.api_url}: {error}"
            ) from None
        self.forum = bool(chat.is_forum)
        for locale in LOCALES:  # the menu in each customer's language; English for the rest
            await self.bot.set_my_commands(
                customer_commands(self._templates, locale),
                scope=BotCommandScopeAllPrivateChats(),
                language_code=None if locale == "en" else locale.split("_")[0],
            )
        await self.bot.set_my_commands(
            [
                BotCommand(name, text)
                for name, text in {**AGENT_COMMANDS, **AGENT_REFUND_COMMANDS}.items()
            ],
            scope=BotCommandScopeChat(chat_id),
        )
        self._feed = AgentFeed(
            self.bot,
            self.limiter,
            self._sessions,
            chat_id,
            self.forum,
            self.signer,
            self._clock,
            templates=self._templates,
        )
        parts = ChatParts(
            self.bot,
            self._desk,
            self._policy,
            self._templates,
            self.limiter,
            self._clock,
            self._accounts,
        )
        customers = CustomerChat(
            parts,
            CustomerRefunds(self._desk, self._policy, self._templates, self._clock, self._refunds),
        )
        places = PlaceBook(self._sessions, chat_id, self._clock)
        money = AgentRefunds(
            self.bot, self.limiter, self.signer, self._refunds, self._payouts, self._desk, places
        )
        console = AgentConsole(
            parts,
            self.signer,
            places,
            reply_mode=self._settings.reply_mode,
            edit_window=timedelta(minutes=self._settings.edit_window_minutes),
        )
        agents = AgentGroup(parts, self.signer, chat_id, money, places, console)
        inbox = Inbox(self._sessions, "telegram", self._clock)
        intake = KeptUpdates if self._settings.webhook is not None else Poller
        self._poller = intake(
            self.bot, self._desk, customers, agents, inbox, poll_timeout=self._poll_timeout
        )
        log.info(
            "telegram: @%s, agents' group %s (%s)",
            self.bot.username,
            chat_id,
            "forum topics" if self.forum else "ticket cards",
        )

    async def _set_intake(self) -> None:
        """Polling: no webhook may be set. Webhook mode: point Telegram at it, with the secret."""
        hook = self._settings.webhook
        if hook is None:
            await self.bot.delete_webhook()
            return
        await self.bot.set_webhook(
            hook.url, secret_token=hook.secret, allowed_updates=ALLOWED_UPDATES
        )

    def webhook_server(self) -> WebhookServer | None:
        """In webhook mode, the HTTP server Telegram calls (every replica runs one)."""
        hook = self._settings.webhook
        if hook is None:
            return None
        return WebhookServer(hook, Inbox(self._sessions, "telegram", self._clock))

    def senders(self) -> dict[Route, Sender]:
        """The outbox senders this channel delivers with."""
        assert self._feed is not None, "start() first"
        return {
            Route.TELEGRAM: CustomerSender(self.bot, self.limiter, self._desk, self.signer),
            Route.AGENTS: self._feed,
        }

    async def run(self, stop: asyncio.Event) -> None:
        """Take in updates and give new tickets their place in the group until `stop`."""
        assert self._poller is not None, "start() first"
        await asyncio.gather(self._poller.run(stop), self._place(stop))

    async def _place(self, stop: asyncio.Event) -> None:
        assert self._feed is not None
        failed = "telegram: placing tickets in the agents' group failed"
        await run_every(
            self._placement_interval,
            partial(self._feed.place_backlog, 5),
            stop,
            log=log,
            failed=failed,
        )

    async def download(self, attachment: Attachment) -> FileData:
        """The bytes of a file an agent sent in Telegram, to attach it to an email answer."""
        file = await self.bot.get_file(attachment.ref)
        data = bytes(await file.download_as_bytearray())
        default = {"photo": ("photo.jpg", "image/jpeg"), "voice": ("voice.ogg", "audio/ogg")}
        name, mime = default.get(attachment.kind, ("attachment.bin", "application/octet-stream"))
        return FileData(
            filename=attachment.filename or name, mime_type=attachment.mime_type or mime, data=data
        )

    @property
    def agents_group_outage(self) -> GroupOutage | None:
        """Whether the agents' group refuses the bot now (403): for a health check to read."""
        return self._feed.outage if self._feed is not None else None

    async def close(self) -> None:
        if self._feed is not None:
            await self._feed.close()
        await self.bot.shutdown()
