"""Bot API methods about the bot, updates, chats, members, topics, callbacks, commands and files."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import replace
from typing import Any

from .errors import bad_request, conflict, forbidden
from .media import MAX_DOWNLOAD_BYTES
from .messages import Handler
from .models import (
    TOPIC_ICON_COLORS,
    CallbackAnswer,
    ChatActionRecord,
    ForumTopic,
    chat_member_json,
    is_present,
)
from .params import Params
from .world import (
    ALL_UPDATE_TYPES,
    DEFAULT_ALLOWED_UPDATES,
    ChatState,
    World,
    create_topic,
    service_message,
)

CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
_COMMAND_RE = re.compile(r"[a-z0-9_]{1,32}")
_MAX_COMMANDS = 100


async def get_me(world: World, p: Params) -> Any:
    """``getMe``."""
    return {
        **world.bot.to_api(),
        "can_join_groups": True,
        "can_read_all_group_messages": not world.privacy_mode,
        "supports_inline_queries": False,
        "can_connect_to_business": False,
        "has_main_web_app": False,
    }


async def log_out(world: World, p: Params) -> Any:
    """``logOut`` and ``close``: nothing to do locally."""
    return True


async def set_webhook(world: World, p: Params) -> Any:
    """``setWebhook``: pending updates are then pushed to ``url`` (``sandbox.telegram.webhook``).

    Telegram wants HTTPS; the local server also takes plain HTTP on a loopback address, where
    the tests run the bot's webhook server.
    """
    url = p.get_str("url") or ""
    if not url:
        return await delete_webhook(world, p)
    loopback = url.startswith(("http://127.0.0.1:", "http://localhost:"))
    if not url.startswith("https://") and not loopback:
        raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
    secret = p.get_str("secret_token")
    if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret):
        raise bad_request("bad webhook: secret token contains unallowed characters")
    world.webhook = {"url": url, **p.public()}
    if p.get_bool("drop_pending_updates"):
        world.pending_updates.clear()
    return True


async def delete_webhook(world: World, p: Params) -> Any:
    """``deleteWebhook``, optionally dropping pending updates."""
    world.webhook = None
    if p.get_bool("drop_pending_updates"):
        world.pending_updates.clear()
    return True


async def get_webhook_info(world: World, p: Params) -> Any:
    """``getWebhookInfo``."""
    return {
        "url": (world.webhook or {}).get("url", ""),
        "has_custom_certificate": False,
        "pending_update_count": len(world.pending_updates),
    }


async def get_updates(world: World, p: Params) -> Any:
    """``getUpdates``: long polling with ``offset``, ``limit``, ``timeout``, ``allowed_updates``."""
    if world.webhook is not None:
        raise conflict(
            "can't use getUpdates method while webhook is active; "
            "use deleteWebhook to delete the webhook first"
        )
    offset = p.get_int("offset")
    limit = min(max(p.get_int("limit") or 100, 1), 100)
    timeout = max(p.get_float("timeout") or 0.0, 0.0)
    allowed = p.get_json("allowed_updates")
    if allowed is not None:
        if not isinstance(allowed, list):
            raise bad_request("can't parse allowed_updates JSON array")
        chosen = frozenset(str(kind) for kind in allowed) & ALL_UPDATE_TYPES
        world.allowed_updates = chosen or DEFAULT_ALLOWED_UPDATES
    world.poll_generation += 1
    generation = world.poll_generation
    world.updates_signal.notify()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if world.poll_generation != generation:
            raise conflict(
                "terminated by other getUpdates request; "
                "make sure that only one bot instance is running"
            )
        batch = world.take_updates(offset, limit)
        remaining = deadline - loop.time()
        if batch or remaining <= 0 or world.closing:
            return batch
        await world.updates_signal.wait(remaining)


def _commands_key(p: Params) -> tuple[str, str]:
    scope = p.get_json("scope") or {"type": "default"}
    if not isinstance(scope, dict) or "type" not in scope:
        raise bad_request("can't parse BotCommandScope JSON object")
    return json.dumps(scope, sort_keys=True), p.get_str("language_code") or ""


async def set_my_commands(world: World, p: Params) -> Any:
    """``setMyCommands`` with Telegram's validation of names and descriptions."""
    commands = p.get_json("commands")
    if not isinstance(commands, list) or len(commands) > _MAX_COMMANDS:
        raise bad_request("can't parse commands JSON array")
    checked: list[dict[str, Any]] = []
    for entry in commands:
        if not isinstance(entry, dict):
            raise bad_request("can't parse BotCommand JSON object")
        command = str(entry.get("command", "")).removeprefix("/")
        description = str(entry.get("description", ""))
        if not _COMMAND_RE.fullmatch(command):
            raise bad_request("BOT_COMMAND_INVALID")
        if not 1 <= len(description) <= 256:
            raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
        checked.append({"command": command, "description": description})
    world.commands[_commands_key(p)] = checked
    return True


async def get_my_commands(world: World, p: Params) -> Any:
    """``getMyCommands``."""
    return list(world.commands.get(_commands_key(p), []))


async def delete_my_commands(world: World, p: Params) -> Any:
    """``deleteMyCommands``."""
    world.commands.pop(_commands_key(p), None)
    return True


def _group_visible(state: ChatState) -> None:
    if state.chat.type != "private" and not is_present(state.bot_status):
        kind = "supergroup chat" if state.chat.type == "supergroup" else "group chat"
        raise forbidden(f"bot is not a member of the {kind}")


async def get_chat(world: World, p: Params) -> Any:
    """``getChat``: a ``ChatFullInfo``."""
    state = world.resolve(p.get_chat_ref())
    _group_visible(state)
    return state.chat.full_info()


async def get_chat_member(world: World, p: Params) -> Any:
    """``getChatMember``: the member's status in the chat (``left`` if never joined)."""
    state = world.resolve(p.get_chat_ref())
    _group_visible(state)
    user_id = p.require_int("user_id")
    if user_id == world.bot.id:
        status = "member" if state.chat.type == "private" else state.bot_status
        return chat_member_json(world.bot, status)
    user = world.users.get(user_id)
    if user is None:
        raise bad_request("user not found")
    return chat_member_json(user, state.members.get(user_id, "left"))


async def get_chat_administrators(world: World, p: Params) -> Any:
    """``getChatAdministrators``."""
    state = world.resolve(p.get_chat_ref())
    _group_visible(state)
    admins = [
        chat_member_json(world.users[user_id], status)
        for user_id, status in state.members.items()
        if status in ("creator", "administrator") and user_id in world.users
    ]
    if state.bot_is_admin():
        admins.append(chat_member_json(world.bot, state.bot_status))
    return admins


def _forum(world: World, p: Params, rights_error: str) -> ChatState:
    state = world.resolve(p.get_chat_ref())
    world.ensure_bot_can_write(state)
    if not state.chat.is_forum:
        raise bad_request("the chat is not a forum")
    if not state.bot_is_admin():
        raise bad_request(rights_error)
    return state


def _topic(world: World, p: Params) -> tuple[ChatState, ForumTopic]:
    state = _forum(world, p, "not enough rights to manage topics")
    topic = state.topics.get(p.require_int("message_thread_id"))
    if topic is None:
        raise bad_request("message thread not found")
    return state, topic


async def create_forum_topic(world: World, p: Params) -> Any:
    """``createForumTopic``: needs a forum supergroup where the bot is an administrator.

    Creating a topic posts its "topic created" service message in the group, so it counts
    against the group's flood limit like a message does (a 429 creates nothing).
    """
    state = _forum(world, p, "not enough rights to create a topic")
    name = p.get_str("name") or ""
    if not 1 <= len(name) <= 128:
        raise bad_request("TOPIC_TITLE_EMPTY" if not name else "TOPIC_TITLE_TOO_LONG")
    color = p.get_int("icon_color") or TOPIC_ICON_COLORS[0]
    if color not in TOPIC_ICON_COLORS:
        raise bad_request("TOPIC_ICON_COLOR_INVALID")
    emoji = p.get_str("icon_custom_emoji_id") or None
    world.take_send_slot(state)
    return create_topic(
        world, state, world.bot, name, icon_color=color, icon_custom_emoji_id=emoji
    ).to_api()


async def edit_forum_topic(world: World, p: Params) -> Any:
    """``editForumTopic``: rename and/or change the icon."""
    state, topic = _topic(world, p)
    changes: dict[str, Any] = {}
    name = p.get_str("name")
    if name is not None and name != topic.name:
        if not 1 <= len(name) <= 128:
            raise bad_request("TOPIC_TITLE_EMPTY" if not name else "TOPIC_TITLE_TOO_LONG")
        changes["name"] = name
    emoji = p.get_str("icon_custom_emoji_id")
    if emoji is not None and (emoji or None) != topic.icon_custom_emoji_id:
        changes["icon_custom_emoji_id"] = emoji or None
    if not changes:
        raise bad_request("TOPIC_NOT_MODIFIED")
    state.topics[topic.thread_id] = replace(topic, **changes)
    edited = {key: value or "" for key, value in changes.items()}
    service_message(world, state, world.bot, {"forum_topic_edited": edited}, topic.thread_id)
    return True


def _topic_closer(closed: bool) -> Handler:
    async def toggle(world: World, p: Params) -> Any:
        state, topic = _topic(world, p)
        if topic.closed == closed:
            raise bad_request("TOPIC_NOT_MODIFIED")
        state.topics[topic.thread_id] = replace(topic, closed=closed)
        kind = "forum_topic_closed" if closed else "forum_topic_reopened"
        service_message(world, state, world.bot, {kind: {}}, topic.thread_id)
        return True

    toggle.__doc__ = "``closeForumTopic``." if closed else "``reopenForumTopic``."
    return toggle


async def delete_forum_topic(world: World, p: Params) -> Any:
    """``deleteForumTopic``: the topic and all its messages disappear."""
    state, topic = _topic(world, p)
    del state.topics[topic.thread_id]
    for message_id, message in list(state.messages.items()):
        if message.get("message_thread_id") == topic.thread_id:
            del state.messages[message_id]
    return True


async def send_chat_action(world: World, p: Params) -> Any:
    """``sendChatAction``: validated and recorded."""
    state = world.resolve(p.get_chat_ref())
    world.ensure_bot_can_write(state)
    thread_id = p.get_int("message_thread_id")
    world.check_thread(state, thread_id)
    action = p.get_str("action") or ""
    if action not in CHAT_ACTIONS:
        raise bad_request("wrong parameter action in request")
    state.actions.append(ChatActionRecord(state.chat.id, action, thread_id, world.now()))
    return True


async def answer_callback_query(world: World, p: Params) -> Any:
    """``answerCallbackQuery``: each query can be answered once."""
    query_id = p.get_str("callback_query_id") or ""
    if world.open_callbacks.pop(query_id, None) is None:
        raise bad_request("query is too old and response timeout expired or query ID is invalid")
    world.callback_answers[query_id] = CallbackAnswer(
        callback_query_id=query_id,
        text=p.get_str("text"),
        show_alert=p.get_bool("show_alert"),
        url=p.get_str("url"),
        cache_time=p.get_int("cache_time") or 0,
        time=world.now(),
    )
    return True


async def get_file(world: World, p: Params) -> Any:
    """``getFile``: a ``File`` with the path to download it from."""
    stored = world.files.get(p.get_str("file_id") or "")
    if stored is None:
        raise bad_request("wrong file_id or the file is temporarily unavailable")
    if stored.size > MAX_DOWNLOAD_BYTES:
        raise bad_request("file is too big")
    return stored.file_info()


CHAT_METHODS: dict[str, Handler] = {
    "getMe": get_me,
    "logOut": log_out,
    "close": log_out,
    "setWebhook": set_webhook,
    "deleteWebhook": delete_webhook,
    "getWebhookInfo": get_webhook_info,
    "getUpdates": get_updates,
    "setMyCommands": set_my_commands,
    "getMyCommands": get_my_commands,
    "deleteMyCommands": delete_my_commands,
    "getChat": get_chat,
    "getChatMember": get_chat_member,
    "getChatAdministrators": get_chat_administrators,
    "createForumTopic": create_forum_topic,
    "editForumTopic": edit_forum_topic,
    "closeForumTopic": _topic_closer(closed=True),
    "reopenForumTopic": _topic_closer(closed=False),
    "deleteForumTopic": delete_forum_topic,
    "sendChatAction": send_chat_action,
    "answerCallbackQuery": answer_callback_query,
    "getFile": get_file,
}
