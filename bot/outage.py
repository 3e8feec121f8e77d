"""When the agents' group refuses the bot (403): an outage to wait out, never a verdict.

A 403 on the agents' group means someone removed the bot or took its right to post, often for
moments (a permissions edit, a group being reorganised). Notices wait in the outbox meanwhile and
are tried again with a growing pause (1 s, 2 s, 4 s … at most a minute), so nothing is lost and
they all arrive once the bot can post again. People hear about it by other routes than the
group itself: an ERROR log line, and a private message to every admin who has started the bot
(Telegram refuses a first message to anyone else); both again when the group works again.
`GroupAlarm.outage` is the state a health check reads.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import telegram
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from telegram.error import Forbidden, TelegramError

from bot.limits import TelegramLimiter
from tickets import queue
from tickets.ports import Clock, Renderer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupOutage:
    """The agents' group refuses the bot: since when, Telegram's reason, how often so far."""

    since: datetime
    error: str
    refusals: int


class GroupAlarm:
    """Tracks an outage of the agents' group, paces the retries and tells the admins."""

    def __init__(
        self,
        bot: telegram.Bot,
        limiter: TelegramLimiter,
        sessions: async_sessionmaker[AsyncSession],
        chat_id: int,
        clock: Clock,
        templates: Renderer | None,
        *,
        first_wait: float = 1.0,
        longest_wait: float = 60.0,
    ) -> None:
        self._bot = bot
        self._limiter = limiter
        self._sessions = sessions
        self._chat_id = chat_id
        self._clock = clock
        self._templates = templates
        self._first_wait = first_wait
        self._longest_wait = longest_wait
        self._outage: GroupOutage | None = None
        self._alerts: set[asyncio.Task[None]] = set()

    @property
    def outage(self) -> GroupOutage | None:
        """The outage going on now, or None while the bot can post in the group."""
        return self._outage

    def refused(self, error: Forbidden) -> float:
        """Note a 403 from the group; returns how long its notices wait before the next try."""
        if self._outage is None:
            self._outage = GroupOutage(since=self._clock(), error=error.message, refusals=1)
            log.error(
                "agents' feed: the bot cannot post in the agents' group %s (%s); notices are "
                "kept and tried again until it can",
                self._chat_id,
                error.message,
            )
            self._alert("telegram/agents_group_down", reason=error.message)
        else:
            self._outage = replace(self._outage, refusals=self._outage.refusals + 1)
        return min(self._first_wait * 2.0 ** (self._outage.refusals - 1), self._longest_wait)

    def posted(self) -> None:
        """The group took a message: an outage, if there was one, is over."""
        outage, self._outage = self._outage, None
        if outage is None:
            return
        seconds = (self._clock() - outage.since).total_seconds()
        log.warning(
            "agents' feed: the agents' group %s works again after %.0f s; held notices follow",
            self._chat_id,
            seconds,
        )
        self._alert("telegram/agents_group_back", seconds=round(seconds))

    async def close(self) -> None:
        """Stop alerts still being sent (at shutdown)."""
        for task in list(self._alerts):
            task.cancel()
        await asyncio.gather(*self._alerts, return_exceptions=True)

    def _alert(self, template: str, **context: Any) -> None:
        if self._templates is None:
            return
        text = self._templates.render(template, chat_id=self._chat_id, **context)
        task = asyncio.get_running_loop().create_task(self._tell_admins(text))
        self._alerts.add(task)
        task.add_done_callback(self._alerts.discard)

    async def _tell_admins(self, text: str) -> None:
        try:
            admins = await queue.admins(self._sessions)
        except Exception:
            log.exception("agents' feed: could not read the admins to alert them")
            return
        for admin in admins:
            try:
                async with self._limiter.sending(admin):
                    await self._bot.send_message(admin, text, parse_mode=None)
            except TelegramError as error:  # mostly: this admin never started the bot
                log.info("agents' feed: admin %s was not alerted: %s", admin, error)
