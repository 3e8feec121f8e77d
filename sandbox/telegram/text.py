"""Text helpers shared by the markup parsers: UTF-16 lengths and an entity-collecting builder.

Telegram measures text and entity offsets in UTF-16 code units, so a character outside the
Basic Multilingual Plane (most emoji) counts twice.
"""

from __future__ import annotations

from typing import Any


def utf16_len(text: str) -> int:
    """Return the length of ``text`` in UTF-16 code units, as Telegram counts it."""
    return len(text) + sum(1 for char in text if ord(char) > 0xFFFF)


def byte_offset(source: str, index: int) -> int:
    """Return the UTF-8 byte offset of character ``index`` in ``source`` (for error messages)."""
    return len(source[:index].encode("utf-8", errors="surrogatepass"))


def sort_entities(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Order entities the way Telegram does: by offset, outer (longer) entities first."""
    return sorted(entities, key=lambda entity: (entity["offset"], -entity["length"]))


class TextBuilder:
    """Collects the plain text and the entities produced while parsing marked-up text."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self.length = 0
        self.entities: list[dict[str, Any]] = []

    def append(self, chunk: str) -> None:
        """Append plain text."""
        if chunk:
            self._parts.append(chunk)
            self.length += utf16_len(chunk)

    def close_entity(self, start: int, entity: dict[str, Any]) -> None:
        """Record ``entity`` covering everything appended since UTF-16 offset ``start``."""
        if self.length > start:
            self.entities.append({**entity, "offset": start, "length": self.length - start})

    def result(self) -> tuple[str, list[dict[str, Any]]]:
        """Return the plain text and its entities in Telegram's order."""
        return "".join(self._parts), sort_entities(self.entities)
