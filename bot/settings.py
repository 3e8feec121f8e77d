"""The Telegram channel's settings section; `supportbot.settings` reads it from the environment."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import urlsplit


class ReplyMode(StrEnum):
    """What a plain message in a ticket's topic does: go out at once, or wait for [Send]."""

    DIRECT = "direct"
    CONFIRM = "confirm"


@dataclass(frozen=True)
class TelegramSettings:
    token: str = field(repr=False)
    api_url: str
    agent_chat_id: int
    timeout: float = 15.0  # seconds a Bot API request may take (sending, then the answer)
    reply_mode: ReplyMode = ReplyMode.DIRECT
    # An agent's edit of a sent reply is passed on to the customer within this many minutes.
    edit_window_minutes: int = 10
    webhook: WebhookSettings | None = None  # None: long polling


@dataclass(frozen=True)
class WebhookSettings:
    """Webhook mode: Telegram POSTs updates to `url`; every replica serves `host:port`."""

    url: str
    secret: str = field(repr=False)
    host: str = "0.0.0.0"  # noqa: S104 - a webhook is reached from outside by design
    port: int = 8443

    @property
    def path(self) -> str:
        """The path the webhook server answers on: the URL's own."""
        return urlsplit(self.url).path or "/"
