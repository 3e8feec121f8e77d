"""Scripted people: what tests and the demo make users (and group admins) do.

These methods are mixed into :class:`~sandbox.telegram.server.LocalBotApi`.  Each action changes the
simulated world the way a real Telegram client would and queues the update the bot would get.
An action no real client could perform (posting into a group one is not in, pressing a button
that does not exist...) raises :class:`~sandbox.telegram.errors.SimulationError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .content import MEDIA_ARGS, FileArg, build_content, with_entities
from .errors import SimulationError
from .models import (
    TOPIC_ICON_COLORS,
    ForumTopic,
    MemberStatus,
    SentMessage,
    SimChat,
    SimUser,
    chat_member_json,
    is_present,
)
from .world import ChatState, World, create_topic

ChatRef = SimChat | SimUser | int
MessageRef = SentMessage | Mapping[str, Any]


def chat_id_of(chat: ChatRef) -> int:
    """Return the chat id of a chat, a user (their private chat) or a plain id."""
    return chat if isinstance(chat, int) else chat.id


def message_ids_of(message: MessageRef) -> tuple[int, int]:
    """Return ``(chat_id, message_id)`` of a recorded or Bot API message."""
    if isinstance(message, SentMessage):
        return message.chat_id, message.message_id
    return int(message["chat"]["id"]), int(message["message_id"])


class ScriptedPeople:
    """Actions of the people around the bot."""

    _world: World

    # -- accounts, groups, membership --------------------------------------------------------

    def add_user(
        self,
        first_name: str,
        *,
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = "en",
        started: bool = True,
    ) -> SimUser:
        """Create a user; ``started=False`` means they never opened the bot (sends get 403)."""
        user = SimUser(
            id=self._world.new_user_id(),
            first_name=first_name,
            last_name=last_name,
            username=username,
            language_code=language_code,
        )
        self._world.register_user(user)
        if not started:
            self._world.not_started.add(user.id)
        return user

    def add_group(
        self,
        title: str,
        *,
        forum: bool = False,
        supergroup: bool = True,
        username: str | None = None,
        bot_status: MemberStatus = "administrator",
    ) -> SimChat:
        """Create a group with the bot in it (an administrator by default).

        ``forum=True`` makes a supergroup with topics; basic groups cannot be forums.
        """
        if forum and not supergroup:
            raise SimulationError("only supergroups can be forums")
        chat = SimChat(
            id=self._world.new_group_id(supergroup=supergroup),
            type="supergroup" if supergroup else "group",
            title=title,
            username=username,
            is_forum=forum,
        )
        state = ChatState(chat=chat, bot_status=bot_status)
        state.allocate_message_id()  # id 1 is the "group created" service message
        self._world.chats[chat.id] = state
        return chat

    async def add_member(
        self,
        group: SimChat,
        user: SimUser,
        *,
        status: MemberStatus = "member",
        announce: bool = False,
    ) -> None:
        """Put ``user`` into ``group``; ``announce`` also posts the ``new_chat_members`` message."""
        await self.set_member_status(group, user, status)
        if announce:
            state = self._group(group)
            message = self._world.build_message(state, user, {"new_chat_members": [user.to_api()]})
            self._deliver(state, message, "message", service=True)

    async def set_member_status(
        self, group: SimChat, user: SimUser, status: MemberStatus, *, by: SimUser | None = None
    ) -> None:
        """Change a member's status; queues a ``chat_member`` update (needs it allowed)."""
        state = self._group(group)
        old = state.members.get(user.id, "left")
        state.members[user.id] = status
        if state.bot_is_admin() and old != status:
            self._world.enqueue(
                "chat_member",
                self._member_update(state, by or user, user, old, status),
            )
        self._world.changed()

    def set_bot_status(
        self, group: SimChat, status: MemberStatus, *, by: SimUser | None = None
    ) -> None:
        """Change the bot's own status in ``group``; queues a ``my_chat_member`` update."""
        state = self._group(group)
        old, state.bot_status = state.bot_status, status
        actor = by or self._world.bot
        self._world.enqueue(
            "my_chat_member", self._member_update(state, actor, self._world.bot, old, status)
        )

    def block_bot(self, user: SimUser) -> None:
        """``user`` blocks the bot: later sends to them fail with 403."""
        self._set_blocked(user, blocked=True)

    def unblock_bot(self, user: SimUser) -> None:
        """``user`` unblocks (restarts) the bot."""
        self._set_blocked(user, blocked=False)

    def _set_blocked(self, user: SimUser, *, blocked: bool) -> None:
        world = self._world
        if (user.id in world.blocked) == blocked:
            return
        old: MemberStatus = "member" if blocked else "kicked"
        new: MemberStatus = "kicked" if blocked else "member"
        if blocked:
            world.blocked.add(user.id)
        else:
            world.blocked.discard(user.id)
            world.not_started.discard(user.id)
        state = world.state(user.id)
        world.enqueue("my_chat_member", self._member_update(state, user, world.bot, old, new))

    def _member_update(
        self,
        state: ChatState,
        actor: SimUser,
        member: SimUser,
        old: MemberStatus,
        new: MemberStatus,
    ) -> dict[str, Any]:
        return {
            "chat": state.chat.to_api(),
            "from": actor.to_api(),
            "date": int(self._world.now()),
            "old_chat_member": chat_member_json(member, old),
            "new_chat_member": chat_member_json(member, new),
        }

    def add_topic(
        self,
        group: SimChat,
        name: str,
        *,
        by: SimUser | None = None,
        icon_color: int = TOPIC_ICON_COLORS[0],
    ) -> ForumTopic:
        """Create a forum topic; when ``by`` a user, the bot gets the service message."""
        state = self._group(group)
        if not state.chat.is_forum:
            raise SimulationError(f"{state.chat.title!r} is not a forum")
        topic = create_topic(self._world, state, by or self._world.bot, name, icon_color=icon_color)
        if by is not None:
            self._deliver(state, state.messages[topic.thread_id], "message", service=True)
        return topic

    # -- messages ----------------------------------------------------------------------------

    async def user_sends(
        self,
        user: SimUser,
        *,
        chat: SimChat | None = None,
        text: str | None = None,
        entities: list[dict[str, Any]] | None = None,
        caption: str | None = None,
        photo: bytes | None = None,
        document: FileArg | None = None,
        voice: bytes | None = None,
        video: bytes | None = None,
        audio: FileArg | None = None,
        sticker: str | bytes | None = None,
        location: tuple[float, float] | None = None,
        contact: tuple[str, str] | None = None,
        poll: tuple[str, Sequence[str]] | None = None,
        duration: int = 1,
        thread_id: int | None = None,
        reply_to: int | MessageRef | None = None,
    ) -> dict[str, Any]:
        """``user`` sends a message to the bot (or into ``chat``); return the Bot API message.

        Give exactly one kind of content: ``text`` or one media/location/contact/poll (media
        may have a ``caption``).  ``document``/``audio`` take bytes or ``(name, bytes[, mime])``.
        """
        state = self._writable_chat(user, chat)
        content = build_content(
            self._world,
            text=text,
            entities=entities,
            caption=caption,
            media={
                "photo": photo,
                "document": document,
                "voice": voice,
                "video": video,
                "audio": audio,
                "sticker": sticker,
            },
            others={"location": location, "contact": contact, "poll": poll},
            duration=duration,
        )
        reply = self._reply_target(state, reply_to)
        if thread_id is None and reply is not None and state.chat.is_forum:
            thread_id = reply.get("message_thread_id")
        self._check_user_thread(state, user, thread_id)
        message = self._world.build_message(
            state, user, content, thread_id=thread_id, reply_to=reply
        )
        self._deliver(state, message, "message")
        return dict(message)

    async def user_edits(
        self,
        user: SimUser,
        message: MessageRef,
        text: str,
        *,
        entities: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """``user`` edits their message's text (or caption); queues an ``edited_message``."""
        chat_id, message_id = message_ids_of(message)
        state = self._world.state(chat_id)
        current = state.messages.get(message_id)
        if current is None:
            raise SimulationError(f"message {message_id} does not exist in chat {chat_id}")
        if current.get("from", {}).get("id") != user.id:
            raise SimulationError(f"{user.first_name} can only edit their own messages")
        field = "text" if "text" in current else "caption"
        if field == "caption" and not any(k in current for k in MEDIA_ARGS):
            raise SimulationError("only text messages and captions can be edited")
        if not text.strip():
            raise SimulationError("Telegram clients do not save empty edits")
        entity_key = "entities" if field == "text" else "caption_entities"
        edited = {key: value for key, value in current.items() if key != entity_key}
        edited[field] = text
        edited = with_entities(edited, entity_key, text, entities)
        edited["edit_date"] = int(self._world.now())
        state.messages[message_id] = edited
        self._deliver(state, edited, "edited_message")
        return dict(edited)

    async def press_button(
        self, user: SimUser, message: MessageRef, data: str, *, tampered: bool = False
    ) -> str:
        """``user`` presses the inline button with this ``callback_data``; return the query id.

        ``tampered`` models a modified client that sends data no button of the message carries.
        """
        chat_id, message_id = message_ids_of(message)
        world = self._world
        state = world.state(chat_id)
        self._check_can_see(state, user)
        current = state.messages.get(message_id)
        if current is None:
            raise SimulationError(f"message {message_id} in chat {chat_id} was deleted")
        rows = current.get("reply_markup", {}).get("inline_keyboard", [])
        available = [button.get("callback_data") for row in rows for button in row]
        if data not in available and not tampered:
            raise SimulationError(f"no button with callback_data {data!r}; there are {available}")
        query_id = str(next(world.callback_ids))
        query = {
            "id": query_id,
            "from": user.to_api(),
            "message": current,
            "chat_instance": state.chat_instance,
            "data": data,
        }
        world.open_callbacks[query_id] = query
        world.enqueue("callback_query", query)
        return query_id

    # -- helpers -----------------------------------------------------------------------------

    def _group(self, group: SimChat) -> ChatState:
        state = self._world.chats.get(group.id)
        if state is None or state.chat.type == "private":
            raise SimulationError(f"{group!r} is not a group of this server")
        return state

    def _check_can_see(self, state: ChatState, user: SimUser) -> None:
        if state.chat.type == "private":
            if state.chat.id != user.id:
                raise SimulationError(f"{user.first_name} cannot see another user's chat")
        elif not is_present(state.members.get(user.id, "left")):
            raise SimulationError(f"{user.first_name} is not in {state.chat.title!r}")

    def _writable_chat(self, user: SimUser, chat: SimChat | None) -> ChatState:
        world = self._world
        if chat is None or chat.id == user.id:
            if user.id in world.blocked:
                raise SimulationError(f"{user.first_name} blocked the bot; unblock_bot() first")
            world.not_started.discard(user.id)
            return world.state(user.id)
        state = self._group(chat)
        self._check_can_see(state, user)
        if state.members.get(user.id) == "restricted":
            raise SimulationError(f"{user.first_name} may not send messages in {chat.title!r}")
        return state

    def _check_user_thread(self, state: ChatState, user: SimUser, thread_id: int | None) -> None:
        if thread_id is None:
            return
        topic = state.topics.get(thread_id)
        if topic is None:
            raise SimulationError(f"there is no topic {thread_id} in {state.chat.title!r}")
        admin = state.members.get(user.id) in ("creator", "administrator")
        if topic.closed and not admin:
            raise SimulationError(f"topic {topic.name!r} is closed")

    def _reply_target(
        self, state: ChatState, reply_to: int | MessageRef | None
    ) -> dict[str, Any] | None:
        if reply_to is None:
            return None
        if isinstance(reply_to, int):
            message_id = reply_to
        else:
            chat_id, message_id = message_ids_of(reply_to)
            if chat_id != state.chat.id:
                raise SimulationError("replies must target a message in the same chat")
        target = state.messages.get(message_id)
        if target is None:
            raise SimulationError(f"message {message_id} does not exist in this chat")
        return target

    def _deliver(
        self, state: ChatState, message: dict[str, Any], kind: str, *, service: bool = False
    ) -> None:
        world = self._world
        if state.chat.type != "private" and not self._bot_sees(state, message, service=service):
            world.changed()
            return
        world.enqueue(kind, message)

    def _bot_sees(self, state: ChatState, message: dict[str, Any], *, service: bool) -> bool:
        """Whether a group message reaches the bot, honouring privacy mode like Telegram."""
        world = self._world
        if not is_present(state.bot_status):
            return False
        if service or not world.privacy_mode or state.bot_is_admin():
            return True
        reply = message.get("reply_to_message")
        if reply is not None and reply.get("from", {}).get("id") == world.bot.id:
            return "forum_topic_created" not in reply
        text = message.get("text") or ""
        command = text.split(maxsplit=1)[0] if text.startswith("/") else ""
        target = command.partition("@")[2]
        return bool(command) and (
            not target or target.lower() == (world.bot.username or "").lower()
        )
