"""Read-only views of the server's records, for assertions in tests and benchmarks.

These methods are mixed into :class:`~sandbox.telegram.server.LocalBotApi`.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable
from typing import Any, TypeVar

from .media import StoredFile
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
from .people import ChatRef, chat_id_of
from .world import ChatState, World

T = TypeVar("T")


class Inspection:
    """Queries over what the bot did and what the server holds."""

    _world: World

    @property
    def stats(self) -> ServerStats:
        """Request counts per method, responses per status and 429 counts (live object)."""
        return self._world.stats

    def sent_to(self, chat: ChatRef, thread_id: int | None = None) -> list[SentMessage]:
        """Messages the bot sent to ``chat`` in order; only topic ``thread_id`` if given."""
        return [
            record
            for record in self._chat_state(chat).sent
            if thread_id is None or record.thread_id == thread_id
        ]

    def edits_in(self, chat: ChatRef, thread_id: int | None = None) -> list[SentMessage]:
        """Edits (``editMessageText``/``Caption``/``ReplyMarkup``) the bot made in ``chat``."""
        return [
            record
            for record in self._chat_state(chat).edits
            if thread_id is None or record.thread_id == thread_id
        ]

    def deleted_in(self, chat: ChatRef) -> list[int]:
        """Ids of messages deleted in ``chat`` through ``deleteMessage``, in order."""
        return list(self._chat_state(chat).deleted)

    def chat_actions(self, chat: ChatRef) -> list[ChatActionRecord]:
        """``sendChatAction`` calls for ``chat``."""
        return list(self._chat_state(chat).actions)

    def message(self, chat: ChatRef, message_id: int) -> dict[str, Any] | None:
        """The current Bot API state of a message (after edits), or ``None`` if deleted."""
        found = self._chat_state(chat).messages.get(message_id)
        return copy.deepcopy(found) if found is not None else None

    def topics(self, group: SimChat) -> list[ForumTopic]:
        """The forum topics of ``group`` in creation order."""
        return list(self._chat_state(group).topics.values())

    def member_status(self, group: SimChat, user: SimUser) -> MemberStatus:
        """``user``'s status in ``group`` (``left`` if never added)."""
        return self._chat_state(group).members.get(user.id, "left")

    def callback_answer(self, callback_query_id: str) -> CallbackAnswer | None:
        """How the bot answered a callback query, or ``None`` if it has not (yet)."""
        return self._world.callback_answers.get(callback_query_id)

    def commands(
        self, scope: dict[str, Any] | None = None, language_code: str = ""
    ) -> list[dict[str, Any]]:
        """Commands set with ``setMyCommands`` for ``scope`` (default scope if ``None``)."""
        key = (json.dumps(scope or {"type": "default"}, sort_keys=True), language_code)
        return list(self._world.commands.get(key, []))

    def file(self, file_id: str) -> StoredFile | None:
        """A stored file by ``file_id``."""
        return self._world.files.get(file_id)

    @property
    def pending_updates(self) -> list[dict[str, Any]]:
        """Updates queued for the bot and not yet confirmed through ``getUpdates`` offsets."""
        return copy.deepcopy(self._world.pending_updates)

    @property
    def webhook(self) -> dict[str, Any] | None:
        """The parameters of the last ``setWebhook``, or ``None``."""
        return copy.deepcopy(self._world.webhook)

    async def wait_for(
        self,
        predicate: Callable[[], T | None],
        timeout: float = 5.0,  # noqa: ASYNC109 - the documented test-helper signature
    ) -> T:
        """Wait until ``predicate()`` is truthy and return its value; ``TimeoutError`` otherwise.

        The predicate is re-checked whenever the server state changes (and every 50 ms).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"condition not met within {timeout} s")
            await self._world.changes_signal.wait(min(remaining, 0.05))

    async def wait_for_sent(
        self,
        chat: ChatRef,
        count: int = 1,
        *,
        thread_id: int | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 - mirrors wait_for
    ) -> list[SentMessage]:
        """Wait until the bot has sent at least ``count`` messages to ``chat``; return them all."""

        def enough() -> list[SentMessage]:
            sent = self.sent_to(chat, thread_id)
            return sent if len(sent) >= count else []

        return await self.wait_for(enough, timeout)

    async def wait_until_confirmed(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until the bot has confirmed (acknowledged) every queued update."""
        await self.wait_for(lambda: not self._world.pending_updates, timeout)

    def _chat_state(self, chat: ChatRef) -> ChatState:
        chat_id = chat_id_of(chat)
        state = self._world.chats.get(chat_id)
        if state is None:
            raise KeyError(f"no chat {chat_id} on this server")
        return state
