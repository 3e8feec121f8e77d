"""The people, chats and records of the simulated Telegram, and their Bot API JSON shapes."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

MemberStatus = Literal["creator", "administrator", "member", "restricted", "left", "kicked"]
ChatType = Literal["private", "group", "supergroup"]

TOPIC_ICON_COLORS = (7322096, 16766590, 13338331, 9367192, 16749490, 16478047)


@dataclass(frozen=True)
class SimUser:
    """A Telegram account (a person, or the bot itself when ``is_bot``)."""

    id: int
    first_name: str
    last_name: str | None = None
    username: str | None = None
    language_code: str | None = "en"
    is_bot: bool = False

    @property
    def full_name(self) -> str:
        """First and last name joined by a space."""
        return f"{self.first_name} {self.last_name}" if self.last_name else self.first_name

    def to_api(self) -> dict[str, Any]:
        """Return the Bot API ``User`` object."""
        data: dict[str, Any] = {"id": self.id, "is_bot": self.is_bot, "first_name": self.first_name}
        if self.last_name:
            data["last_name"] = self.last_name
        if self.username:
            data["username"] = self.username
        if self.language_code and not self.is_bot:
            data["language_code"] = self.language_code
        return data


@dataclass(frozen=True)
class SimChat:
    """A chat: the private chat with one user (same id as the user), a group or a supergroup."""

    id: int
    type: ChatType
    title: str | None = None
    username: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    is_forum: bool = False

    def to_api(self) -> dict[str, Any]:
        """Return the Bot API ``Chat`` object."""
        data: dict[str, Any] = {"id": self.id, "type": self.type}
        for key in ("title", "username", "first_name", "last_name"):
            value = getattr(self, key)
            if value:
                data[key] = value
        if self.is_forum:
            data["is_forum"] = True
        return data

    def full_info(self) -> dict[str, Any]:
        """Return the Bot API ``ChatFullInfo`` object that ``getChat`` answers with."""
        return {
            **self.to_api(),
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": {
                "unlimited_gifts": False,
                "limited_gifts": False,
                "unique_gifts": False,
                "premium_subscription": False,
                "gifts_from_channels": False,
            },
        }


@dataclass(frozen=True)
class ForumTopic:
    """A topic of a forum supergroup; ``thread_id`` is Telegram's ``message_thread_id``."""

    thread_id: int
    name: str
    icon_color: int = TOPIC_ICON_COLORS[0]
    icon_custom_emoji_id: str | None = None
    closed: bool = False
    # Unix time of creation (0 for topics set up by a test); it counts against the group limit.
    created_at: float = 0.0

    def to_api(self) -> dict[str, Any]:
        """Return the Bot API ``ForumTopic`` object."""
        data: dict[str, Any] = {
            "message_thread_id": self.thread_id,
            "name": self.name,
            "icon_color": self.icon_color,
        }
        if self.icon_custom_emoji_id:
            data["icon_custom_emoji_id"] = self.icon_custom_emoji_id
        return data


@dataclass(frozen=True)
class SentMessage:
    """One message the bot sent (or one edit it made), as the server recorded it.

    ``text`` is what the recipient sees (text or caption after parsing); ``source_text`` is
    what the bot sent before ``parse_mode`` was applied.  ``message`` is the full Bot API
    ``Message`` the server answered with; ``params`` are the raw request parameters.
    """

    method: str
    chat_id: int
    message_id: int
    time: float
    text: str | None = None
    source_text: str | None = None
    parse_mode: str | None = None
    entities: tuple[dict[str, Any], ...] = ()
    reply_markup: dict[str, Any] | None = None
    thread_id: int | None = None
    reply_to: int | None = None
    media: str | None = None
    file_id: str | None = None
    file_name: str | None = None
    file_bytes: bytes | None = None
    mime_type: str | None = None
    disable_notification: bool = False
    link_preview_options: dict[str, Any] | None = None
    message: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    params: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def buttons(self) -> list[dict[str, Any]]:
        """Return the inline keyboard buttons, row by row, flattened."""
        rows = (self.reply_markup or {}).get("inline_keyboard") or []
        return [button for row in rows for button in row if isinstance(button, dict)]

    def callback_data(self) -> list[str]:
        """Return the ``callback_data`` of every inline button, in order."""
        return [str(b["callback_data"]) for b in self.buttons() if "callback_data" in b]


@dataclass(frozen=True)
class CallbackAnswer:
    """How the bot answered a callback query (``answerCallbackQuery``)."""

    callback_query_id: str
    text: str | None
    show_alert: bool
    url: str | None
    cache_time: int
    time: float


@dataclass(frozen=True)
class ChatActionRecord:
    """One ``sendChatAction`` call."""

    chat_id: int
    action: str
    thread_id: int | None
    time: float


@dataclass
class ServerStats:
    """Counters benchmarks and tests can assert on."""

    requests: Counter[str] = field(default_factory=Counter)
    responses: Counter[int] = field(default_factory=Counter)
    too_many_requests_total: int = 0
    too_many_requests_by_chat: Counter[int] = field(default_factory=Counter)
    injected_failures: int = 0
    held_requests: int = 0  # requests `hold_next` delayed (counted as they arrive)
    late_answers: int = 0  # calls carried out and answered late (`hold_answer_next`)

    def reset(self) -> None:
        """Zero every counter."""
        self.requests.clear()
        self.responses.clear()
        self.too_many_requests_total = 0
        self.too_many_requests_by_chat.clear()
        self.injected_failures = 0
        self.held_requests = 0
        self.late_answers = 0


_ADMIN_RIGHTS = {
    "can_be_edited": False,
    "is_anonymous": False,
    "can_manage_chat": True,
    "can_delete_messages": True,
    "can_manage_video_chats": True,
    "can_restrict_members": True,
    "can_promote_members": False,
    "can_change_info": True,
    "can_invite_users": True,
    "can_post_stories": False,
    "can_edit_stories": False,
    "can_delete_stories": False,
    "can_pin_messages": True,
    "can_manage_topics": True,
}
_RESTRICTIONS = {
    "is_member": True,
    "can_send_messages": False,
    "can_send_audios": False,
    "can_send_documents": False,
    "can_send_photos": False,
    "can_send_videos": False,
    "can_send_video_notes": False,
    "can_send_voice_notes": False,
    "can_send_polls": False,
    "can_send_other_messages": False,
    "can_add_web_page_previews": False,
    "can_change_info": False,
    "can_invite_users": False,
    "can_pin_messages": False,
    "can_manage_topics": False,
    "can_react_to_messages": False,
    "can_edit_tag": False,
    "until_date": 0,
}


def chat_member_json(user: SimUser, status: MemberStatus) -> dict[str, Any]:
    """Return the Bot API ``ChatMember`` object for ``user`` with ``status``."""
    data: dict[str, Any] = {"status": status, "user": user.to_api()}
    if status == "creator":
        data["is_anonymous"] = False
    elif status == "administrator":
        data.update(_ADMIN_RIGHTS)
    elif status == "restricted":
        data.update(_RESTRICTIONS)
    elif status == "kicked":
        data["until_date"] = 0
    return data


def is_present(status: MemberStatus) -> bool:
    """Whether a member with ``status`` is currently in the chat."""
    return status in ("creator", "administrator", "member", "restricted")
