"""Telegram's flood limits as sliding windows, so the local server can answer 429 like the real one.

Telegram documents three limits for bots: about 30 messages per second overall, one message per
second in a private chat and 20 messages per minute in a group.  :class:`RateLimits` describes
them and :class:`RateLimiter` enforces them over sliding windows: a message is refused when the
last ``count`` messages of its window all happened less than ``seconds`` ago.  Creating a forum
topic counts as a message in its group: it posts the topic's "created" service message there.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal

ChatKind = Literal["private", "group"]


@dataclass(frozen=True)
class Window:
    """At most ``count`` messages in any ``seconds``-long window."""

    count: int
    seconds: float

    def __post_init__(self) -> None:
        if self.count < 1 or self.seconds <= 0:
            raise ValueError("a rate window needs count >= 1 and seconds > 0")


TELEGRAM_OVERALL = Window(30, 1.0)
TELEGRAM_PRIVATE_CHAT = Window(1, 1.0)
TELEGRAM_GROUP_CHAT = Window(20, 60.0)


@dataclass(frozen=True)
class RateLimits:
    """Which flood limits the server enforces; ``None`` switches one off."""

    overall: Window | None = TELEGRAM_OVERALL
    private_chat: Window | None = TELEGRAM_PRIVATE_CHAT
    group_chat: Window | None = TELEGRAM_GROUP_CHAT

    @classmethod
    def telegram(cls) -> RateLimits:
        """Return Telegram's real limits: 30/s overall, 1/s per private chat, 20/min per group."""
        return cls()

    @classmethod
    def off(cls) -> RateLimits:
        """Return limits that never refuse anything."""
        return cls(overall=None, private_chat=None, group_chat=None)


class RateLimiter:
    """Counts sent messages per chat and overall and decides whether one more may go out."""

    def __init__(self, limits: RateLimits) -> None:
        self.limits = limits
        self._overall: deque[float] = deque()
        self._per_chat: dict[int, deque[float]] = {}

    def acquire(self, chat_id: int, kind: ChatKind, now: float) -> int:
        """Record one message and return 0, or return the whole seconds to wait (>= 1).

        A refused message is not recorded, so it does not use up a slot.
        """
        chat_window = self.limits.private_chat if kind == "private" else self.limits.group_chat
        checks: list[tuple[deque[float], Window]] = []
        if self.limits.overall is not None:
            checks.append((self._overall, self.limits.overall))
        if chat_window is not None:
            checks.append((self._per_chat.setdefault(chat_id, deque()), chat_window))
        wait = 0.0
        for stamps, window in checks:
            _expire(stamps, window, now)
            if len(stamps) >= window.count:
                frees_at = stamps[len(stamps) - window.count] + window.seconds
                wait = max(wait, frees_at - now)
        if wait > 0:
            return max(1, math.ceil(wait))
        for stamps, _window in checks:
            stamps.append(now)
        return 0


def _expire(stamps: deque[float], window: Window, now: float) -> None:
    while stamps and stamps[0] <= now - window.seconds:
        stamps.popleft()
