"""The state of the simulated Telegram: accounts, chats, messages, topics, files and updates.

Both sides act on one :class:`World`: the Bot API methods (what the bot does over HTTP) and the
scripted people (what tests and the demo make users do).  Everything runs on one event loop and
mutations never await in the middle, so no locking is needed.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from .errors import bad_request, forbidden, too_many_requests
from .limits import ChatKind, RateLimiter, RateLimits
from .media import FileStore
from .models import (
    CallbackAnswer,
    ChatActionRecord,
    ForumTopic,
    MemberStatus,
    SentMessage,
    ServerStats,
    SimChat,
    SimUser,
    is_present,
)

ALL_UPDATE_TYPES = frozenset(
    {
        "message",
        "edited_message",
        "channel_post",
        "edited_channel_post",
        "business_connection",
        "business_message",
        "edited_business_message",
        "deleted_business_messages",
        "message_reaction",
        "message_reaction_count",
        "inline_query",
        "chosen_inline_result",
        "callback_query",
        "shipping_query",
        "pre_checkout_query",
        "purchased_paid_media",
        "poll",
        "poll_answer",
        "my_chat_member",
        "chat_member",
        "chat_join_request",
        "chat_boost",
        "removed_chat_boost",
    }
)
DEFAULT_ALLOWED_UPDATES = ALL_UPDATE_TYPES - {
    "chat_member",
    "message_reaction",
    "message_reaction_count",
}


class Notifier:
    """Wakes every coroutine waiting on it; used for long polling and ``wait_for``."""

    def __init__(self) -> None:
        self._waiters: set[asyncio.Future[None]] = set()

    def notify(self) -> None:
        """Wake all current waiters."""
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def wait(self, seconds: float) -> bool:
        """Wait until notified (True) or until ``seconds`` pass (False)."""
        if seconds <= 0:
            return False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            await asyncio.wait_for(waiter, seconds)
        except TimeoutError:
            return False
        finally:
            self._waiters.discard(waiter)
        return True


@dataclass
class ChatState:
    """Everything the server knows about one chat."""

    chat: SimChat
    bot_status: MemberStatus = "member"
    members: dict[int, MemberStatus] = field(default_factory=dict)
    messages: dict[int, dict[str, Any]] = field(default_factory=dict)
    topics: dict[int, ForumTopic] = field(default_factory=dict)
    sent: list[SentMessage] = field(default_factory=list)
    edits: list[SentMessage] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)
    actions: list[ChatActionRecord] = field(default_factory=list)
    next_message_id: int = 1

    @property
    def kind(self) -> ChatKind:
        """``private`` or ``group`` for rate limiting."""
        return "private" if self.chat.type == "private" else "group"

    @property
    def chat_instance(self) -> str:
        """The opaque ``chat_instance`` Telegram puts in callback queries from this chat."""
        return str(abs(self.chat.id) * 7919 + 104729)

    def allocate_message_id(self) -> int:
        """Return the next message id in this chat."""
        message_id = self.next_message_id
        self.next_message_id += 1
        return message_id

    def bot_is_admin(self) -> bool:
        """Whether the bot is an administrator (or owner) here."""
        return self.bot_status in ("administrator", "creator")


@dataclass
class Outgoing:
    """Where a message from the bot goes: chat, topic and the message it replies to."""

    state: ChatState
    thread_id: int | None
    reply_to: dict[str, Any] | None


class World:
    """The whole simulated Telegram as seen by one bot."""

    def __init__(self, bot: SimUser, limits: RateLimits, *, privacy_mode: bool) -> None:
        self.bot = bot
        self.privacy_mode = privacy_mode
        self.limiter = RateLimiter(limits)
        self.users: dict[int, SimUser] = {}
        self.chats: dict[int, ChatState] = {}
        self.blocked: set[int] = set()
        self.not_started: set[int] = set()
        self.files = FileStore()
        self.pending_updates: list[dict[str, Any]] = []
        self.allowed_updates: frozenset[str] = DEFAULT_ALLOWED_UPDATES
        self.webhook: dict[str, Any] | None = None
        self.commands: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.open_callbacks: dict[str, dict[str, Any]] = {}
        self.callback_answers: dict[str, CallbackAnswer] = {}
        self.stats = ServerStats()
        self.updates_signal = Notifier()
        self.changes_signal = Notifier()
        self.poll_generation = 0
        self.closing = False
        self._next_update_id = 1
        self._user_ids = itertools.count(100_000_001)
        self._supergroup_ids = itertools.count(1_000_000_001)
        self._group_ids = itertools.count(400_000_001)
        self.callback_ids = itertools.count(4_382_000_000_000_000_001, 7)

    # -- clock and notifications -------------------------------------------------------------

    @staticmethod
    def now() -> float:
        """Unix time, as used for message dates."""
        return time.time()

    def changed(self) -> None:
        """Tell ``wait_for`` callers that the state changed."""
        self.changes_signal.notify()

    # -- accounts and chats ------------------------------------------------------------------

    def new_user_id(self) -> int:
        """Return a fresh user id."""
        return next(self._user_ids)

    def new_group_id(self, *, supergroup: bool) -> int:
        """Return a fresh chat id: ``-100...`` for supergroups, a small negative id otherwise."""
        if supergroup:
            return -1_000_000_000_000 - next(self._supergroup_ids)
        return -next(self._group_ids)

    def register_user(self, user: SimUser) -> ChatState:
        """Add ``user`` and their private chat with the bot."""
        self.users[user.id] = user
        chat = SimChat(
            id=user.id,
            type="private",
            username=user.username,
            first_name=user.first_name,
            last_name=user.last_name,
        )
        state = ChatState(chat=chat, members={user.id: "member"})
        self.chats[chat.id] = state
        return state

    def state(self, chat_id: int) -> ChatState:
        """Return a chat's state or raise ``chat not found``."""
        state = self.chats.get(chat_id)
        if state is None:
            raise bad_request("chat not found")
        return state

    def resolve(self, ref: int | str | None) -> ChatState:
        """Resolve a ``chat_id`` parameter (number or ``@username``) to a chat."""
        if ref is None:
            raise bad_request("chat_id is empty")
        if isinstance(ref, str):
            name = ref.removeprefix("@").lower()
            for state in self.chats.values():
                if state.chat.type != "private" and (state.chat.username or "").lower() == name:
                    return state
            raise bad_request("chat not found")
        return self.state(ref)

    def ensure_bot_can_write(self, state: ChatState) -> None:
        """Raise the 403 Telegram gives when the bot may not post into ``state``."""
        chat = state.chat
        if chat.type == "private":
            if chat.id in self.blocked:
                raise forbidden("bot was blocked by the user")
            if chat.id in self.not_started:
                raise forbidden("bot can't initiate conversation with a user")
            return
        kind = "supergroup chat" if chat.type == "supergroup" else "group chat"
        if state.bot_status == "kicked":
            raise forbidden(f"bot was kicked from the {kind}")
        if not is_present(state.bot_status):
            raise forbidden(f"bot is not a member of the {kind}")

    # -- messages ------------------------------------------------------------------------------

    def build_message(
        self,
        state: ChatState,
        sender: SimUser,
        content: dict[str, Any],
        *,
        thread_id: int | None = None,
        reply_to: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create, store and return a new message in ``state``.

        In a forum topic a message that replies to nothing gets the topic's creation message as
        ``reply_to_message``, exactly as Telegram does.
        """
        message: dict[str, Any] = {
            "message_id": state.allocate_message_id(),
            "from": sender.to_api(),
            "chat": state.chat.to_api(),
            "date": int(self.now()),
        }
        if thread_id is not None:
            message["message_thread_id"] = thread_id
            if state.chat.is_forum:
                message["is_topic_message"] = True
                if reply_to is None:
                    reply_to = state.messages.get(thread_id)
        if reply_to is not None:
            message["reply_to_message"] = quoted(reply_to)
        message.update(content)
        state.messages[message["message_id"]] = message
        return message

    def check_thread(self, state: ChatState, thread_id: int | None) -> None:
        """Raise ``message thread not found`` unless ``thread_id`` is a topic of this forum."""
        if thread_id is None:
            return
        topic = state.topics.get(thread_id) if state.chat.is_forum else None
        if topic is None:
            raise bad_request("message thread not found")
        if topic.closed and not state.bot_is_admin():
            raise bad_request("TOPIC_CLOSED")

    def outgoing(
        self,
        state: ChatState,
        thread_id: int | None,
        reply_parameters: Any,
        *,
        legacy_reply_to: int | None = None,
        allow_without_reply: bool = False,
    ) -> Outgoing:
        """Validate the target of a message the bot is about to send."""
        self.ensure_bot_can_write(state)
        reply_id = legacy_reply_to
        if isinstance(reply_parameters, dict):
            reply_id = reply_parameters.get("message_id")
            allow_without_reply = bool(reply_parameters.get("allow_sending_without_reply"))
            other_chat = reply_parameters.get("chat_id")
            if other_chat not in (None, state.chat.id, str(state.chat.id)):
                raise bad_request("message to be replied not found")
        elif reply_parameters is not None:
            raise bad_request("can't parse reply parameters JSON object")
        reply_to = None
        if reply_id is not None:
            reply_to = state.messages.get(reply_id) if isinstance(reply_id, int) else None
            if reply_to is None and not allow_without_reply:
                raise bad_request("message to be replied not found")
        if thread_id is None and reply_to is not None and state.chat.is_forum:
            thread_id = reply_to.get("message_thread_id")
        self.check_thread(state, thread_id)
        return Outgoing(state, thread_id, reply_to)

    def take_send_slot(self, state: ChatState) -> None:
        """Count one message against the flood limits, or raise 429 (which is counted)."""
        wait = self.limiter.acquire(state.chat.id, state.kind, time.monotonic())
        if wait:
            self.stats.too_many_requests_total += 1
            self.stats.too_many_requests_by_chat[state.chat.id] += 1
            raise too_many_requests(wait)

    # -- updates -----------------------------------------------------------------------------

    def enqueue(self, kind: str, payload: dict[str, Any]) -> int:
        """Queue an update of ``kind`` for the bot and return its ``update_id``."""
        update_id = self._next_update_id
        self._next_update_id += 1
        self.pending_updates.append({"update_id": update_id, kind: copy.deepcopy(payload)})
        self.updates_signal.notify()
        self.changed()
        return update_id

    def take_updates(self, offset: int | None, limit: int) -> list[dict[str, Any]]:
        """Confirm updates below ``offset`` and return up to ``limit`` allowed pending ones."""
        pending = self.pending_updates
        if offset is not None and offset < 0:
            pending = pending[offset:]
        elif offset is not None:
            pending = [update for update in pending if update["update_id"] >= offset]
        pending = [update for update in pending if update_kind(update) in self.allowed_updates]
        self.pending_updates = pending
        return copy.deepcopy(pending[:limit])


def update_kind(update: dict[str, Any]) -> str:
    """Return the type of an update (``message``, ``callback_query``...)."""
    return next(key for key in update if key != "update_id")


def quoted(message: dict[str, Any]) -> dict[str, Any]:
    """Return ``message`` as it appears inside ``reply_to_message`` (without its own reply)."""
    return {key: value for key, value in message.items() if key != "reply_to_message"}


def service_message(
    world: World, state: ChatState, sender: SimUser, content: dict[str, Any], thread_id: int | None
) -> dict[str, Any]:
    """Create a service message (topic created/edited/closed...) in ``state``."""
    message = world.build_message(state, sender, content, thread_id=thread_id)
    message.pop("reply_to_message", None)
    return message


def create_topic(
    world: World,
    state: ChatState,
    creator: SimUser,
    name: str,
    *,
    icon_color: int,
    icon_custom_emoji_id: str | None = None,
) -> ForumTopic:
    """Create a forum topic; its id is the id of its ``forum_topic_created`` service message."""
    thread_id = state.next_message_id
    created: dict[str, Any] = {"name": name, "icon_color": icon_color}
    if icon_custom_emoji_id:
        created["icon_custom_emoji_id"] = icon_custom_emoji_id
    service_message(world, state, creator, {"forum_topic_created": created}, thread_id)
    topic = ForumTopic(thread_id, name, icon_color, icon_custom_emoji_id, created_at=world.now())
    state.topics[thread_id] = topic
    return topic
