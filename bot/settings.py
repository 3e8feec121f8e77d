"""The Telegram channel's settings section; `supportbot.settings` reads it from the environment."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TelegramSettings:
    token: str = field(repr=False)
    api_url: str
    agent_chat_id: int
    timeout: float = 15.0  # seconds a Bot API request may take (sending, then the answer)
