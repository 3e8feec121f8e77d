"""Validation of ``reply_markup``: inline keyboards are checked the way Telegram checks them."""

from __future__ import annotations

from typing import Any

from .errors import bad_request

MAX_CALLBACK_DATA_BYTES = 64
_ACTION_FIELDS = (
    "url",
    "callback_data",
    "web_app",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
)
_URL_SCHEMES = ("http://", "https://", "tg://")
_OTHER_MARKUPS = ("keyboard", "remove_keyboard", "force_reply")


def check_reply_markup(raw: Any) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Validate a ``reply_markup`` value.

    Return ``(markup, inline)``: the markup as sent, and the inline keyboard that becomes part
    of the message (only inline keyboards are shown in a ``Message``'s ``reply_markup``).
    """
    if raw is None:
        return None, None
    if not isinstance(raw, dict):
        raise bad_request("can't parse reply keyboard markup JSON object")
    if "inline_keyboard" not in raw:
        if not any(key in raw for key in _OTHER_MARKUPS):
            raise bad_request("can't parse reply keyboard markup JSON object")
        return raw, None
    rows = raw["inline_keyboard"]
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise bad_request(
            "can't parse inline keyboard button: InlineKeyboardButton must be an Object"
        )
    for row in rows:
        for button in row:
            _check_button(button)
    if not any(rows):
        return raw, None
    return raw, {"inline_keyboard": rows}


def _check_button(button: Any) -> None:
    if not isinstance(button, dict):
        raise bad_request(
            "can't parse inline keyboard button: InlineKeyboardButton must be an Object"
        )
    text = button.get("text")
    if not isinstance(text, str) or not text.strip():
        raise bad_request("can't parse inline keyboard button: Text must be non-empty")
    actions = [field for field in _ACTION_FIELDS if field in button]
    if not actions:
        raise bad_request("text buttons are unallowed in the inline keyboard")
    data = button.get("callback_data")
    if data is not None and (
        not isinstance(data, str) or not 1 <= len(data.encode()) <= MAX_CALLBACK_DATA_BYTES
    ):
        raise bad_request("BUTTON_DATA_INVALID")
    url = button.get("url")
    if url is not None and (not isinstance(url, str) or not url.startswith(_URL_SCHEMES)):
        raise bad_request(f"inline keyboard button URL '{url}' is invalid: Wrong HTTP URL")
