"""What a Telegram message carries, in the core's terms: its text and its attachments."""

from __future__ import annotations

from dataclasses import dataclass

from telegram import Message

from tickets.model import Attachment

# What the desk can carry to an agent and back. Anything else gets a polite "please send…".
CARRIED = "text, photos, documents, voice messages, audio, video and animations (with captions)"


@dataclass(frozen=True)
class Content:
    text: str
    attachments: tuple[Attachment, ...]

    @property
    def empty(self) -> bool:
        return not self.text.strip() and not self.attachments


def content_of(message: Message) -> Content | None:
    """The text and files of a message, or None for kinds the desk cannot carry (stickers, …)."""
    text = message.text or message.caption or ""
    found: list[Attachment] = []
    if message.photo:
        largest = max(message.photo, key=lambda size: size.width * size.height)
        found.append(
            Attachment(
                kind="photo", ref=largest.file_id, mime_type="image/jpeg", size=largest.file_size
            )
        )
    for kind in ("animation", "document", "voice", "audio", "video", "video_note"):
        media = getattr(message, kind, None)
        if media is not None:
            found.append(
                Attachment(
                    kind=kind,
                    ref=media.file_id,
                    filename=getattr(media, "file_name", None),
                    mime_type=getattr(media, "mime_type", None),
                    size=media.file_size,
                )
            )
            break  # one media object per message (an animation also sets `document`)
    if not text and not found:
        return None
    return Content(text=text, attachments=tuple(found))


def external_id(message: Message) -> str:
    """A message's identity across restarts: its chat and its id within that chat."""
    return f"{message.chat_id}:{message.message_id}"


def display_name(message: Message) -> str:
    user = message.from_user
    if user is None:
        return ""
    return user.full_name or (f"@{user.username}" if user.username else str(user.id))
