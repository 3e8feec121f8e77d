"""A local Telegram Bot API server that the real python-telegram-bot client can talk to.

Tests, benchmarks and ``supportbot demo`` run the real bot against :class:`LocalBotApi`: no
token, no network.  It speaks Telegram's HTTP protocol (long polling, uploads, downloads,
Telegram's error answers and flood limits) and lets code script the people around the bot.
"""

from .errors import ApiError, SimulationError
from .limits import RateLimits, Window
from .media import StoredFile, sample_png
from .models import (
    CallbackAnswer,
    ChatActionRecord,
    ForumTopic,
    MemberStatus,
    SentMessage,
    ServerStats,
    SimChat,
    SimUser,
)
from .server import DEFAULT_TOKEN, METHODS, LocalBotApi

__all__ = [
    "DEFAULT_TOKEN",
    "METHODS",
    "ApiError",
    "CallbackAnswer",
    "ChatActionRecord",
    "ForumTopic",
    "LocalBotApi",
    "MemberStatus",
    "RateLimits",
    "SentMessage",
    "ServerStats",
    "SimChat",
    "SimUser",
    "SimulationError",
    "StoredFile",
    "Window",
    "sample_png",
]
