"""The service's own pacing for Telegram, so that Telegram never has to answer 429.

Telegram allows a bot about 30 messages per second overall, one per second in a private chat
and 20 per minute in a group. :class:`TelegramLimiter` keeps the moments of recent sends in
sliding windows and says how long a message to a chat must wait.

Telegram counts a request when it *arrives*, some time after we decide to send it; on a busy
event loop that can be longer than any fixed allowance. So a send is counted from the moment it
is granted, as *in flight*, and when the request returns its stamp is the moment it returned,
which is never earlier than its arrival. A window that has room by these stamps has room on the
server too, however long requests take: every send the server still counts is either in flight
here or returned less than a window ago. Windows are also `margin` seconds longer than Telegram's.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

MonotonicClock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class Budget:
    """At most `count` messages in any `seconds`-long window."""

    count: int
    seconds: float


# Telegram's 30 per second, less three, so that a send we do not pace (none should exist) does
# not tip a full window over.
OVERALL = Budget(27, 1.0)
PRIVATE_CHAT = Budget(1, 1.0)
GROUP_CHAT = Budget(20, 60.0)
# Added to every window, for the difference between our clock and Telegram's.
MARGIN = 0.15
# Chats with no send inside any window are forgotten once this many are tracked.
SWEEP_AT = 512


def is_group(chat_id: int) -> bool:
    """Groups and supergroups have negative ids; private chats (users) positive ones."""
    return chat_id < 0


class TelegramLimiter:
    """Sliding-window pacing: overall, per private chat and per group, with a safety margin.

    Every send goes through :meth:`sending`, which waits for room, counts the send as in flight
    while its request runs and stamps it when the request has returned (or failed).
    """

    def __init__(
        self,
        *,
        clock: MonotonicClock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        margin: float = MARGIN,
        overall: Budget = OVERALL,
        private_chat: Budget = PRIVATE_CHAT,
        group_chat: Budget = GROUP_CHAT,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self.margin = margin
        self.overall = overall
        self.private_chat = private_chat
        self.group_chat = group_chat
        # Stamps of returned sends, oldest first (returns are stamped in clock order).
        self._sent: deque[float] = deque()
        self._chats: dict[int, deque[float]] = {}
        # Sends granted whose request has not returned yet: overall and per chat.
        self._flying = 0
        self._flying_to: dict[int, int] = {}

    def now(self) -> float:
        """The limiter's monotonic time, so callers can pace against the same clock."""
        return self._clock()

    def budget(self, chat_id: int) -> Budget:
        """The per-chat window that applies to this chat."""
        return self.group_chat if is_group(chat_id) else self.private_chat

    def wait_time(self, chat_id: int, *, keep: int = 0) -> float:
        """Seconds until a message to this chat may go (0 if it may go now).

        `keep` leaves that many slots of the bot-wide window to others: customer sends keep a
        few, so a flood of receipts cannot starve the agents' group. While sends in flight fill
        a window, the answer is the soonest they could free it: a full window from now.
        """
        return max(self.chat_wait_time(chat_id), self.overall_wait_time(keep=keep))

    def chat_wait_time(self, chat_id: int) -> float:
        """Seconds until this chat's own window has room, ignoring the overall window."""
        stamps = self._chats.get(chat_id)
        flying = self._flying_to.get(chat_id, 0)
        if stamps is None and not flying:
            return 0.0
        return self._wait(stamps or deque(), flying, self.budget(chat_id), self._clock())

    def overall_wait_time(self, *, keep: int = 0) -> float:
        """Seconds until the bot-wide window has room (beyond `keep` slots)."""
        count = max(self.overall.count - keep, 1)
        budget = Budget(count, self.overall.seconds)
        return self._wait(self._sent, self._flying, budget, self._clock())

    def free_group_slots(self, chat_id: int) -> int:
        """How many messages this group could still take right now (its window alone)."""
        budget = self.budget(chat_id)
        used = self._flying_to.get(chat_id, 0)
        stamps = self._chats.get(chat_id)
        if stamps is not None:
            self._expire(stamps, budget, self._clock())
            used += len(stamps)
        return max(budget.count - used, 0)

    def spread_gap(self, chat_id: int, *, spend: int = 0) -> float:
        """The even gap between this group's next messages that lasts until slots come free.

        Spending the free slots back to back would leave the group silent until the oldest
        messages leave the window; sending one per gap never does. `spend` counts that many
        messages as sent now first, to ask what sending them would leave (sends in flight count
        so too). The gap is never below `seconds / count` (the window's steady pace); with no
        slot left it is infinite.
        """
        budget = self.budget(chat_id)
        now = self._clock()
        stamps = self._chats.get(chat_id)
        if stamps is not None:
            self._expire(stamps, budget, now)
        frees = [s + budget.seconds + self.margin for s in stamps or ()]
        now_spent = max(spend, 0) + self._flying_to.get(chat_id, 0)
        frees += [now + budget.seconds + self.margin] * now_spent
        free = budget.count - len(frees)
        if free < 1:
            return math.inf
        gap = (budget.seconds + self.margin) / budget.count
        # The message that takes the j-th slot to come free (oldest first) is the (free + j)-th
        # from now; at one per gap it goes (free + j - 1) gaps from now, not before that slot.
        for j, frees_at in enumerate(frees, start=1):
            gap = max(gap, (frees_at - now) / (free + j - 1))
        return gap

    def last_sent(self, chat_id: int) -> float:
        """When the latest message to this chat was counted (now while one is in flight;
        -inf if none is in its window)."""
        if self._flying_to.get(chat_id):
            return self._clock()
        stamps = self._chats.get(chat_id)
        return stamps[-1] if stamps else -math.inf

    def record(self, chat_id: int) -> None:
        """Count one message to this chat as sent, and returned, now."""
        now = self._clock()
        self._sent.append(now)
        self._expire(self._sent, self.overall, now)
        stamps = self._chats.setdefault(chat_id, deque())
        stamps.append(now)
        self._expire(stamps, self.budget(chat_id), now)
        if len(self._chats) >= SWEEP_AT:
            self._sweep(now)

    @asynccontextmanager
    async def sending(self, chat_id: int, *, keep: int = 0) -> AsyncIterator[None]:
        """Wait until a message to this chat may go, then send it inside the block.

        The send counts as in flight until the block ends, however it ends, and from then on
        as sent at that moment.
        """
        while (wait := self.wait_time(chat_id, keep=keep)) > 0:
            await self._sleep(wait)
        self._flying += 1
        self._flying_to[chat_id] = self._flying_to.get(chat_id, 0) + 1
        try:
            yield
        finally:
            self._flying -= 1
            if (left := self._flying_to[chat_id] - 1) > 0:
                self._flying_to[chat_id] = left
            else:
                del self._flying_to[chat_id]
            self.record(chat_id)

    def _wait(self, stamps: deque[float], flying: int, budget: Budget, now: float) -> float:
        self._expire(stamps, budget, now)
        if len(stamps) + flying < budget.count:
            return 0.0
        room = budget.count - flying  # returned sends that may stay in the window
        if room < 1:
            return budget.seconds + self.margin
        frees_at = stamps[len(stamps) - room] + budget.seconds + self.margin
        return max(frees_at - now, 0.0)

    def _expire(self, stamps: deque[float], budget: Budget, now: float) -> None:
        horizon = now - budget.seconds - self.margin
        while stamps and stamps[0] <= horizon:
            stamps.popleft()

    def _sweep(self, now: float) -> None:
        for chat_id, stamps in list(self._chats.items()):
            self._expire(stamps, self.budget(chat_id), now)
            if not stamps:
                del self._chats[chat_id]
