"""Bot API methods that create, change or remove messages: send*, copy, forward, edit, delete."""

from __future__ import annotations

import mimetypes
from collections.abc import Awaitable, Callable
from typing import Any

from .entities import render_text
from .errors import bad_request
from .markup_check import check_reply_markup
from .media import StoredFile, sniff_image
from .models import SentMessage
from .params import Params, Upload
from .world import ChatState, Outgoing, World

MEDIA_KINDS = ("photo", "document", "voice", "video", "audio", "sticker")
_CONTENT_KEYS = (
    *MEDIA_KINDS,
    "text",
    "location",
    "venue",
    "contact",
    "poll",
    "dice",
    "animation",
    "video_note",
)
_COPIED_KEYS = (*_CONTENT_KEYS, "entities", "caption", "caption_entities")
_DEFAULT_MIME = {
    "voice": "audio/ogg",
    "video": "video/mp4",
    "audio": "audio/mpeg",
    "document": "application/octet-stream",
}
Handler = Callable[[World, Params], Awaitable[Any]]
_NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly the "
    "same as a current content and reply markup of the message"
)


def outgoing_from(world: World, p: Params) -> Outgoing:
    """Resolve ``chat_id``, ``message_thread_id`` and the reply parameters of a send call."""
    state = world.resolve(p.get_chat_ref("chat_id"))
    return world.outgoing(
        state,
        p.get_int("message_thread_id"),
        p.get_json("reply_parameters"),
        legacy_reply_to=p.get_int("reply_to_message_id"),
        allow_without_reply=p.get_bool("allow_sending_without_reply"),
    )


def media_of(world: World, message: dict[str, Any]) -> tuple[str | None, StoredFile | None]:
    """Return the media kind of ``message`` and its stored file, if it has one."""
    for kind in MEDIA_KINDS:
        if kind in message:
            item = message[kind]
            file_id = item[-1]["file_id"] if isinstance(item, list) else item["file_id"]
            return kind, world.files.get(file_id)
    return None, None


def make_record(
    world: World,
    method: str,
    state: ChatState,
    message: dict[str, Any],
    p: Params,
    *,
    source_text: str | None,
    reply_markup: dict[str, Any] | None,
) -> SentMessage:
    """Describe ``message`` (just sent or edited by the bot) as a :class:`SentMessage`."""
    kind, stored = media_of(world, message)
    reply = message.get("reply_to_message")
    explicit_reply = reply is not None and "forum_topic_created" not in reply
    return SentMessage(
        method=method,
        chat_id=state.chat.id,
        message_id=message["message_id"],
        time=world.now(),
        text=message.get("text", message.get("caption")),
        source_text=source_text,
        parse_mode=p.get_str("parse_mode"),
        entities=tuple(message.get("entities", message.get("caption_entities", ()))),
        reply_markup=reply_markup,
        thread_id=message.get("message_thread_id"),
        reply_to=reply["message_id"] if reply is not None and explicit_reply else None,
        media=kind,
        file_id=stored.file_id if stored else None,
        file_name=stored.file_name if stored else None,
        file_bytes=stored.data if stored else None,
        mime_type=stored.mime_type if stored else None,
        disable_notification=p.get_bool("disable_notification"),
        link_preview_options=p.get_json("link_preview_options"),
        message=message,
        params=p.public(),
    )


def _commit(
    world: World,
    method: str,
    p: Params,
    out: Outgoing,
    content: dict[str, Any],
    *,
    source_text: str | None,
) -> dict[str, Any]:
    markup, inline = check_reply_markup(p.get_json("reply_markup"))
    world.take_send_slot(out.state)
    if inline is not None:
        content["reply_markup"] = inline
    if p.get_bool("protect_content"):
        content["has_protected_content"] = True
    message = world.build_message(
        out.state, world.bot, content, thread_id=out.thread_id, reply_to=out.reply_to
    )
    record = make_record(
        world, method, out.state, message, p, source_text=source_text, reply_markup=markup
    )
    out.state.sent.append(record)
    return message


async def send_message(world: World, p: Params) -> Any:
    """``sendMessage``."""
    out = outgoing_from(world, p)
    source = p.get_str("text") or ""
    text, entities = render_text(source, p.get_str("parse_mode"), p.get_json("entities"))
    content: dict[str, Any] = {"text": text}
    if entities:
        content["entities"] = entities
    preview = p.get_json("link_preview_options")
    if isinstance(preview, dict) and preview:
        content["link_preview_options"] = preview
    return _commit(world, "sendMessage", p, out, content, source_text=source)


def _caption(p: Params, content: dict[str, Any]) -> str | None:
    source = p.get_str("caption")
    if not source:
        return source
    caption, entities = render_text(
        source, p.get_str("parse_mode"), p.get_json("caption_entities"), caption=True
    )
    if caption:
        content["caption"] = caption
    if entities:
        content["caption_entities"] = entities
    return source


def _file_param(world: World, p: Params, kind: str) -> StoredFile:
    value = p.get_file(kind)
    if value is None or value == "":
        raise bad_request(f"there is no {kind} in the request")
    if isinstance(value, Upload):
        return _store_upload(world, p, kind, value)
    if value.startswith(("http://", "https://")):
        raise bad_request("failed to get HTTP URL content")
    stored = world.files.get(value)
    if stored is None:
        raise bad_request("wrong file identifier/HTTP URL specified")
    if stored.kind != kind:
        raise bad_request("type of file mismatch")
    return stored


def _store_upload(world: World, p: Params, kind: str, upload: Upload) -> StoredFile:
    if not upload.data:
        raise bad_request("file must be non-empty")
    image = sniff_image(upload.data)
    if kind == "photo" and image is None:
        raise bad_request("IMAGE_PROCESS_FAILED")
    details: dict[str, Any] = {}
    if kind in ("voice", "video", "audio"):
        details["duration"] = p.get_int("duration") or 0
    if kind == "video":
        details.update(width=p.get_int("width") or 0, height=p.get_int("height") or 0)
    if kind == "audio":
        details.update(performer=p.get_str("performer"), title=p.get_str("title"))
    if kind == "sticker" and image is None:
        details.update(width=512, height=512)
    mime = upload.content_type
    if not mime or mime == "application/octet-stream":
        guessed = mimetypes.guess_type(upload.filename or "", strict=False)[0]
        mime = guessed or _DEFAULT_MIME.get(kind)
    keeps_name = kind in ("document", "video", "audio")
    return world.files.add(
        kind,
        upload.data,
        file_name=upload.filename if keeps_name else None,
        mime_type=mime if kind in _DEFAULT_MIME else None,
        **details,
    )


def _media_sender(kind: str, method: str) -> Handler:
    async def send_media(world: World, p: Params) -> Any:
        out = outgoing_from(world, p)
        stored = _file_param(world, p, kind)
        content: dict[str, Any] = {kind: stored.to_api()}
        source = _caption(p, content) if kind != "sticker" else None
        return _commit(world, method, p, out, content, source_text=source)

    send_media.__doc__ = f"``{method}``."
    return send_media


def _source_message(world: World, p: Params, missing: str) -> dict[str, Any]:
    source_state = world.resolve(p.get_chat_ref("from_chat_id"))
    message = source_state.messages.get(p.require_int("message_id"))
    if message is None:
        raise bad_request(missing)
    if not any(key in message for key in _CONTENT_KEYS):
        raise bad_request("message can't be copied")
    return message


async def copy_message(world: World, p: Params) -> Any:
    """``copyMessage``: a new message with the same content, without a link to the original."""
    original = _source_message(world, p, "message to copy not found")
    out = outgoing_from(world, p)
    content = {key: original[key] for key in _COPIED_KEYS if key in original}
    source = content.get("text", content.get("caption"))
    if p.has("caption"):
        content.pop("caption", None)
        content.pop("caption_entities", None)
        source = _caption(p, content)
    message = _commit(world, "copyMessage", p, out, content, source_text=source)
    return {"message_id": message["message_id"]}


async def forward_message(world: World, p: Params) -> Any:
    """``forwardMessage``: the same content with ``forward_origin`` pointing at the sender."""
    original = _source_message(world, p, "message to forward not found")
    out = outgoing_from(world, p)
    out.reply_to = None
    content = {key: original[key] for key in _COPIED_KEYS if key in original}
    content["forward_origin"] = original.get("forward_origin") or {
        "type": "user",
        "sender_user": original["from"],
        "date": original["date"],
    }
    source = content.get("text", content.get("caption"))
    return _commit(world, "forwardMessage", p, out, content, source_text=source)


def _editable(world: World, p: Params) -> tuple[ChatState, dict[str, Any]]:
    if p.has("inline_message_id") and not p.has("chat_id"):
        raise bad_request("MESSAGE_ID_INVALID")
    state = world.resolve(p.get_chat_ref("chat_id"))
    world.ensure_bot_can_write(state)
    message = state.messages.get(p.require_int("message_id"))
    if message is None:
        raise bad_request("message to edit not found")
    if message.get("from", {}).get("id") != world.bot.id:
        raise bad_request("message can't be edited")
    return state, message


def _apply_edit(
    world: World,
    method: str,
    p: Params,
    *,
    state: ChatState,
    message: dict[str, Any],
    changes: dict[str, Any],
    source_text: str | None,
    counts: bool,
) -> dict[str, Any]:
    markup, inline = check_reply_markup(p.get_json("reply_markup"))
    if markup is not None and inline is None:
        raise bad_request("reply markup of an edited message must be an inline keyboard")
    edited = dict(message)
    for key, value in {**changes, "reply_markup": inline}.items():
        if value:
            edited[key] = value
        else:
            edited.pop(key, None)
    if edited == message:
        raise bad_request(_NOT_MODIFIED)
    if counts:
        world.take_send_slot(state)
    edited["edit_date"] = int(world.now())
    state.messages[edited["message_id"]] = edited
    record = make_record(
        world, method, state, edited, p, source_text=source_text, reply_markup=markup
    )
    state.edits.append(record)
    return edited


async def edit_message_text(world: World, p: Params) -> Any:
    """``editMessageText`` (an edit without ``reply_markup`` removes the inline keyboard)."""
    state, message = _editable(world, p)
    if "text" not in message:
        raise bad_request("there is no text in the message to edit")
    source = p.get_str("text") or ""
    text, entities = render_text(source, p.get_str("parse_mode"), p.get_json("entities"))
    changes = {"text": text, "entities": entities}
    return _apply_edit(
        world,
        "editMessageText",
        p,
        state=state,
        message=message,
        changes=changes,
        source_text=source,
        counts=True,
    )


async def edit_message_caption(world: World, p: Params) -> Any:
    """``editMessageCaption``."""
    state, message = _editable(world, p)
    if not any(kind in message for kind in MEDIA_KINDS):
        raise bad_request("there is no caption in the message to edit")
    changes: dict[str, Any] = {"caption": None, "caption_entities": None}
    source = _caption(p, changes)
    return _apply_edit(
        world,
        "editMessageCaption",
        p,
        state=state,
        message=message,
        changes=changes,
        source_text=source,
        counts=False,
    )


async def edit_message_reply_markup(world: World, p: Params) -> Any:
    """``editMessageReplyMarkup`` (no ``reply_markup`` removes the keyboard)."""
    state, message = _editable(world, p)
    return _apply_edit(
        world,
        "editMessageReplyMarkup",
        p,
        state=state,
        message=message,
        changes={},
        source_text=None,
        counts=False,
    )


async def delete_message(world: World, p: Params) -> Any:
    """``deleteMessage``: the bot's own messages anywhere, others' in private chats or as admin."""
    state = world.resolve(p.get_chat_ref("chat_id"))
    message_id = p.require_int("message_id")
    message = state.messages.get(message_id)
    if message is None:
        raise bad_request("message to delete not found")
    own = message.get("from", {}).get("id") == world.bot.id
    if not (own or state.chat.type == "private" or state.bot_is_admin()):
        raise bad_request("message can't be deleted")
    del state.messages[message_id]
    state.deleted.append(message_id)
    return True


MESSAGE_METHODS: dict[str, Handler] = {
    "sendMessage": send_message,
    "sendPhoto": _media_sender("photo", "sendPhoto"),
    "sendDocument": _media_sender("document", "sendDocument"),
    "sendVoice": _media_sender("voice", "sendVoice"),
    "sendVideo": _media_sender("video", "sendVideo"),
    "sendAudio": _media_sender("audio", "sendAudio"),
    "sendSticker": _media_sender("sticker", "sendSticker"),
    "copyMessage": copy_message,
    "forwardMessage": forward_message,
    "editMessageText": edit_message_text,
    "editMessageCaption": edit_message_caption,
    "editMessageReplyMarkup": edit_message_reply_markup,
    "deleteMessage": delete_message,
}
