"""Turning message text plus ``parse_mode`` or ``entities`` into what Telegram stores and shows.

:func:`render_text` is what the send and edit methods use; :func:`detect_entities` adds the
entities Telegram finds by itself in text typed by a user (commands, mentions, links...), which
python-telegram-bot's ``CommandHandler`` relies on.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import ApiError, EntityParseError, bad_request
from .markup_html import parse_html
from .markup_markdown import parse_markdown_legacy, parse_markdown_v2
from .text import sort_entities, utf16_len

MAX_TEXT_LENGTH = 4096
MAX_CAPTION_LENGTH = 1024

ENTITY_TYPES = frozenset(
    {
        "mention",
        "hashtag",
        "cashtag",
        "bot_command",
        "url",
        "email",
        "phone_number",
        "bold",
        "italic",
        "underline",
        "strikethrough",
        "spoiler",
        "blockquote",
        "expandable_blockquote",
        "code",
        "pre",
        "text_link",
        "text_mention",
        "custom_emoji",
    }
)
_REQUIRED_FIELDS = {"text_link": "url", "text_mention": "user", "custom_emoji": "custom_emoji_id"}

_AUTO_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("bot_command", re.compile(r"(?<![\w/@])/[a-zA-Z0-9_]{1,32}(?:@[a-zA-Z0-9_]{3,32})?(?![\w/])")),
    ("email", re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[a-zA-Z]{2,}(?![\w@])")),
    ("url", re.compile(r"(?<![\w@/])(?:(?:https?|tg)://|www\.)[^\s<>\"]+")),
    ("mention", re.compile(r"(?<![\w@])@[a-zA-Z0-9_]{5,32}(?![\w@])")),
    ("hashtag", re.compile(r"(?<![\w#])#\w*[^\W\d_]\w*")),
    ("cashtag", re.compile(r"(?<![\w$])\$[A-Z]{3,8}(?![\w$])")),
)
_URL_TRAILING = ".,;:!?)]}'\""


def render_text(
    text: str, parse_mode: str | None, entities: object, *, caption: bool = False
) -> tuple[str, list[dict[str, Any]]]:
    """Return the plain text and entities Telegram would store, or raise a 400 :class:`ApiError`.

    Explicit ``entities`` win over ``parse_mode``, as in the Bot API.  Empty text and text over
    the limit (4096 UTF-16 units, or 1024 for captions) are refused after parsing.
    """
    if entities is not None:
        plain, parsed = text, validate_entities(text, entities)
    else:
        plain, parsed = _parse(text, parse_mode)
    limit = MAX_CAPTION_LENGTH if caption else MAX_TEXT_LENGTH
    if utf16_len(plain) > limit:
        raise bad_request("message caption is too long" if caption else "message is too long")
    if not caption and not plain.strip():
        raise bad_request("message text is empty")
    return plain, parsed


def _parse(text: str, parse_mode: str | None) -> tuple[str, list[dict[str, Any]]]:
    mode = (parse_mode or "").lower()
    try:
        if not mode:
            return text, []
        if mode == "html":
            return parse_html(text)
        if mode == "markdownv2":
            return parse_markdown_v2(text)
        if mode == "markdown":
            return parse_markdown_legacy(text)
    except EntityParseError as error:
        raise error.as_api_error() from None
    raise bad_request("unsupported parse_mode")


def validate_entities(text: str, entities: object) -> list[dict[str, Any]]:
    """Check an explicit ``entities`` list against ``text`` and return it in Telegram's order."""
    if not isinstance(entities, list):
        raise bad_request("can't parse entities JSON object")
    total = utf16_len(text)
    checked: list[dict[str, Any]] = []
    for entity in entities:
        checked.append(_check_entity(entity, total))
    return sort_entities(checked)


def _check_entity(entity: object, total: int) -> dict[str, Any]:
    if not isinstance(entity, dict):
        raise bad_request("can't parse entities JSON object")
    kind, offset, length = entity.get("type"), entity.get("offset"), entity.get("length")
    if kind not in ENTITY_TYPES:
        raise _entity_error(f"unsupported entity type {kind!r}")
    if not isinstance(offset, int) or not isinstance(length, int) or offset < 0 or length <= 0:
        raise _entity_error("entity offset and length must be non-negative integers")
    if offset + length > total:
        raise _entity_error(f"entity beginning at UTF-16 offset {offset} ends after the text")
    required = _REQUIRED_FIELDS.get(str(kind))
    if required is not None and not entity.get(required):
        raise _entity_error(f"entity of type {kind} needs the field {required!r}")
    return dict(entity)


def _entity_error(detail: str) -> ApiError:
    return bad_request(f"can't parse entities: {detail}")


def detect_entities(
    text: str, existing: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Add the entities Telegram detects on its own (commands, mentions, URLs...) to ``existing``.

    Detected entities never overlap each other or an existing entity.
    """
    taken: list[tuple[int, int]] = [
        (entity["offset"], entity["offset"] + entity["length"]) for entity in existing or []
    ]
    found: list[dict[str, Any]] = list(existing or [])
    matches: list[tuple[int, int, str]] = []
    for kind, pattern in _AUTO_PATTERNS:
        for match in pattern.finditer(text):
            start, end = match.span()
            if kind == "url":
                end = start + len(match.group().rstrip(_URL_TRAILING))
            matches.append((start, end, kind))
    matches.sort(key=lambda item: (item[0], -(item[1] - item[0])))
    for start, end, kind in matches:
        offset = utf16_len(text[:start])
        stop = offset + utf16_len(text[start:end])
        if stop <= offset or any(
            offset < used_end and used_start < stop for used_start, used_end in taken
        ):
            continue
        taken.append((offset, stop))
        found.append({"type": kind, "offset": offset, "length": stop - offset})
    return sort_entities(found)
