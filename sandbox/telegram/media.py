"""Files the local server holds: uploads from the bot, media sent by scripted users, and helpers.

Every file gets a Telegram-like opaque ``file_id``, a ``file_unique_id`` derived from its bytes
and a ``file_path`` that can be downloaded from ``/file/bot<token>/<file_path>``.
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import struct
import zlib
from dataclasses import dataclass
from typing import Any

MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024

_FOLDERS = {
    "photo": "photos",
    "document": "documents",
    "voice": "voice",
    "video": "videos",
    "audio": "music",
    "sticker": "stickers",
}
_DEFAULT_EXTENSIONS = {
    "photo": ".jpg",
    "voice": ".oga",
    "video": ".mp4",
    "audio": ".mp3",
    "sticker": ".webp",
}
_IMAGE_EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "gif": ".gif", "webp": ".webp"}
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


@dataclass(frozen=True)
class StoredFile:
    """One file known to the server, with the metadata Telegram reports for it."""

    file_id: str
    file_unique_id: str
    kind: str
    data: bytes
    file_path: str
    file_name: str | None = None
    mime_type: str | None = None
    width: int = 0
    height: int = 0
    duration: int = 0
    performer: str | None = None
    title: str | None = None
    emoji: str | None = None

    @property
    def size(self) -> int:
        """Size in bytes."""
        return len(self.data)

    def to_api(self) -> Any:
        """Return the Bot API object for this file (a ``PhotoSize`` list for photos)."""
        base: dict[str, Any] = {
            "file_id": self.file_id,
            "file_unique_id": self.file_unique_id,
            "file_size": self.size,
        }
        if self.kind == "photo":
            return [{**base, "width": self.width, "height": self.height}]
        if self.kind == "sticker":
            base.update(type="regular", width=self.width, height=self.height)
            base.update(is_animated=False, is_video=False)
            return _without_none({**base, "emoji": self.emoji})
        if self.kind in ("video", "voice", "audio"):
            base["duration"] = self.duration
        if self.kind == "video":
            base.update(width=self.width, height=self.height)
        extra = {"file_name": self.file_name, "mime_type": self.mime_type}
        if self.kind == "audio":
            extra.update(performer=self.performer, title=self.title)
        if self.kind == "voice":
            extra.pop("file_name")
        return _without_none({**base, **extra})

    def file_info(self) -> dict[str, Any]:
        """Return the ``File`` object ``getFile`` answers with."""
        return {
            "file_id": self.file_id,
            "file_unique_id": self.file_unique_id,
            "file_size": self.size,
            "file_path": self.file_path,
        }


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


class FileStore:
    """All files the server knows, by ``file_id`` and by download path."""

    def __init__(self) -> None:
        self._by_id: dict[str, StoredFile] = {}
        self._by_path: dict[str, StoredFile] = {}
        self._count = 0

    def add(
        self,
        kind: str,
        data: bytes,
        *,
        file_name: str | None = None,
        mime_type: str | None = None,
        **details: Any,
    ) -> StoredFile:
        """Store ``data`` as a new file of ``kind`` (photo, document, voice, video, audio...)."""
        self._count += 1
        digest = hashlib.sha256(kind.encode() + b"\0" + data).digest()
        unique_id = base64.urlsafe_b64encode(digest[:12]).decode().rstrip("=")
        raw_id = f"local:{kind}:{self._count}:{unique_id}".encode()
        file_id = base64.urlsafe_b64encode(raw_id).decode().rstrip("=")
        if kind in ("photo", "sticker"):
            image = sniff_image(data)
            if image is not None:
                details.setdefault("width", image[1])
                details.setdefault("height", image[2])
        extension = _extension(kind, data, file_name, mime_type)
        path = f"{_FOLDERS.get(kind, 'documents')}/file_{self._count}{extension}"
        stored = StoredFile(
            file_id=file_id,
            file_unique_id=unique_id,
            kind=kind,
            data=data,
            file_path=path,
            file_name=file_name,
            mime_type=mime_type,
            **details,
        )
        self._by_id[file_id] = stored
        self._by_path[path] = stored
        return stored

    def get(self, file_id: str) -> StoredFile | None:
        """Look a file up by ``file_id``."""
        return self._by_id.get(file_id)

    def by_path(self, file_path: str) -> StoredFile | None:
        """Look a file up by the ``file_path`` that ``getFile`` reported."""
        return self._by_path.get(file_path)


def _extension(kind: str, data: bytes, file_name: str | None, mime_type: str | None) -> str:
    if file_name and "." in file_name:
        suffix = "." + file_name.rsplit(".", 1)[1]
        if suffix[1:].isalnum() and len(suffix) <= 8:
            return suffix.lower()
    image = sniff_image(data) if kind in ("photo", "sticker") else None
    if image is not None:
        return _IMAGE_EXTENSIONS[image[0]]
    if kind in _DEFAULT_EXTENSIONS:
        return _DEFAULT_EXTENSIONS[kind]
    guessed = mimetypes.guess_extension(mime_type) if mime_type else None
    return guessed or ""


def sniff_image(data: bytes) -> tuple[str, int, int] | None:
    """Recognise PNG, JPEG, GIF and WebP bytes; return ``(format, width, height)`` or ``None``."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return "png", width, height
    if data.startswith((b"GIF87a", b"GIF89a")) and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return "gif", width, height
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        if data[12:16] == b"VP8X" and len(data) >= 30:
            width = int.from_bytes(data[24:27], "little") + 1
            height = int.from_bytes(data[27:30], "little") + 1
            return "webp", width, height
        return "webp", 0, 0
    if data.startswith(b"\xff\xd8"):
        return _sniff_jpeg(data)
    return None


def _sniff_jpeg(data: bytes) -> tuple[str, int, int] | None:
    index = 2
    while index + 9 <= len(data):
        if data[index] != 0xFF:
            return None
        marker = data[index + 1]
        if marker in _JPEG_SOF_MARKERS:
            height, width = struct.unpack(">HH", data[index + 5 : index + 9])
            return "jpeg", width, height
        (length,) = struct.unpack(">H", data[index + 2 : index + 4])
        index += 2 + length
    return "jpeg", 0, 0


def sample_png(width: int = 2, height: int = 2, rgb: tuple[int, int, int] = (0, 136, 204)) -> bytes:
    """Return a valid solid-colour PNG image, handy as a photo in tests and demos."""
    row = b"\x00" + bytes(rgb) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )
