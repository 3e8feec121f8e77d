"""The content of messages scripted users send: text with detected entities, media, polls..."""

from __future__ import annotations

import mimetypes
from collections.abc import Sequence
from typing import Any

from .entities import detect_entities
from .errors import SimulationError
from .media import StoredFile, sample_png, sniff_image
from .world import World

MEDIA_ARGS = ("photo", "document", "voice", "video", "audio", "sticker")
FileArg = bytes | tuple[str, bytes] | tuple[str, bytes, str]
_DEFAULT_MIME = {"voice": "audio/ogg", "video": "video/mp4", "audio": "audio/mpeg"}


def build_content(
    world: World,
    *,
    text: str | None,
    entities: list[dict[str, Any]] | None,
    caption: str | None,
    media: dict[str, Any],
    others: dict[str, Any],
    duration: int,
) -> dict[str, Any]:
    """Return the message fields for exactly one kind of content given by a scripted user.

    ``media`` maps photo/document/voice/video/audio/sticker to a value or ``None``;
    ``others`` does the same for location, contact and poll.
    """
    given = {name: value for name, value in media.items() if value is not None}
    given.update({name: value for name, value in others.items() if value is not None})
    if text is not None:
        given["text"] = text
    if len(given) != 1:
        raise SimulationError(f"give exactly one kind of content, got {sorted(given) or 'none'}")
    ((kind, value),) = given.items()
    if kind == "text":
        if caption is not None:
            raise SimulationError("a text message cannot have a caption")
        if not value.strip():
            raise SimulationError("Telegram clients do not send empty messages")
        return with_entities({"text": value}, "entities", value, entities)
    if caption is not None and kind not in MEDIA_ARGS:
        raise SimulationError(f"a {kind} cannot have a caption")
    content = _non_text(world, kind, value, duration)
    if caption:
        content = with_entities({**content, "caption": caption}, "caption_entities", caption)
    return content


def with_entities(
    content: dict[str, Any], key: str, text: str, given: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Put ``given`` plus the entities Telegram detects in ``text`` into ``content[key]``."""
    found = detect_entities(text, given)
    if found:
        content[key] = found
    return content


def _non_text(world: World, kind: str, value: Any, duration: int) -> dict[str, Any]:
    if kind == "location":
        latitude, longitude = value
        return {"location": {"latitude": latitude, "longitude": longitude}}
    if kind == "contact":
        phone, first_name = value
        return {"contact": {"phone_number": phone, "first_name": first_name}}
    if kind == "poll":
        question, options = value
        return {"poll": _poll(world, question, options)}
    return {kind: _store_media(world, kind, value, duration).to_api()}


def _store_media(world: World, kind: str, value: Any, duration: int) -> StoredFile:
    files = world.files
    if kind == "sticker":
        emoji = value if isinstance(value, str) else None
        data = value if isinstance(value, bytes) else sample_png(1, 1)
        return files.add("sticker", data, emoji=emoji, width=512, height=512)
    name, data, mime = _file_arg(value)
    if not data:
        raise SimulationError(f"the {kind} is empty")
    if kind == "photo":
        if sniff_image(data) is None:
            raise SimulationError("photo bytes must be a PNG, JPEG, GIF or WebP image")
        return files.add("photo", data)
    details: dict[str, Any] = {"duration": duration} if kind != "document" else {}
    mime = mime or _DEFAULT_MIME.get(kind) or "application/octet-stream"
    file_name = name if kind in ("document", "audio") else None
    return files.add(kind, data, file_name=file_name, mime_type=mime, **details)


def _poll(world: World, question: str, options: Sequence[str]) -> dict[str, Any]:
    return {
        "id": str(next(world.callback_ids)),
        "question": question,
        "options": [
            {"text": option, "voter_count": 0, "persistent_id": str(index)}
            for index, option in enumerate(options)
        ],
        "total_voter_count": 0,
        "is_closed": False,
        "is_anonymous": True,
        "type": "regular",
        "allows_multiple_answers": False,
        "allows_revoting": True,
        "members_only": False,
    }


def _file_arg(value: FileArg) -> tuple[str | None, bytes, str | None]:
    if isinstance(value, bytes):
        return None, value, None
    if len(value) == 2:
        name, data = value
        return name, data, mimetypes.guess_type(name, strict=False)[0]
    name, data, mime = value
    return name, data, mime
