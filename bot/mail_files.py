"""Files customers mail, shown to the agents (issue 15, point 2): which go up as photos, which
as documents, and which are only listed with their size.

Bots may upload 50 MB per file over multipart (the local Bot API server in `sandbox/telegram`
enforces the same); photos up to 10 MB. A file over the mail intake's cap was never kept, so it
is listed too. Each post is one of the group's messages: `AgentFeed` paces them.
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.format import escape
from tickets.mailed_files import MailedFile

UPLOAD_LIMIT = 50 * 1024 * 1024
PHOTO_LIMIT = 10 * 1024 * 1024
PHOTO_TYPES = frozenset({"image/jpeg", "image/png", "image/webp"})


def split_files(files: Sequence[MailedFile]) -> tuple[list[MailedFile], list[MailedFile]]:
    """The files to post (kept, within the upload limit) and the ones only to list."""
    posted = [f for f in files if f.data is not None and 0 < len(f.data) <= UPLOAD_LIMIT]
    listed = [f for f in files if f not in posted]
    return posted, listed


def as_photo(file: MailedFile) -> bool:
    """Whether Telegram shows the file as a photo."""
    return file.mime_type.lower() in PHOTO_TYPES and file.size <= PHOTO_LIMIT


def size_text(size: int) -> str:
    """A file size as agents read it: 812 B, 14.2 KB, 73.4 MB."""
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def caption(number: int, file: MailedFile) -> str:
    """The plain-text caption of a posted file."""
    return f"📎 #{number} · {file.filename[:200]} ({size_text(file.size)})"


def listing_html(number: int, listed: Sequence[MailedFile]) -> str:
    """The one message naming the files too large to post here."""
    lines = [
        f"📎 #{number}: too large to post here (Telegram takes up to "
        f"{UPLOAD_LIMIT // (1024 * 1024)} MB); the mail on the server keeps them:"
    ]
    lines += [f"• {escape(f.filename[:200])} — {size_text(f.size)}" for f in listed[:50]]
    if len(listed) > 50:
        lines.append(f"… and {len(listed) - 50} more")
    return "\n".join(lines)
