"""Parsers for Telegram's MarkdownV2 and legacy Markdown parse modes.

MarkdownV2 follows the Bot API rules: the characters ``_*[]()~`>#+-=|{}.!`` are reserved
outside entities and must be escaped with a backslash; entities are ``*bold*``, ``_italic_``,
``__underline__``, ``~strikethrough~``, ``||spoiler||``, ```` `code` ````, fenced ``pre``
blocks with an optional language, ``[text](url)``, ``![emoji](tg://emoji?id=...)`` and ``>``
block quotes.  Expandable block quotes (``**>``) are not supported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import EntityParseError
from .text import TextBuilder, byte_offset

_RESERVED = frozenset("_*[]()~`>#+-=|{}.!")
_DISPLAY_NAMES = {
    "bold": "Bold",
    "italic": "Italic",
    "underline": "Underline",
    "strikethrough": "Strikethrough",
    "spoiler": "Spoiler",
    "code": "Code",
    "pre": "Pre",
    "text_link": "TextUrl",
    "custom_emoji": "CustomEmoji",
}
_OPENERS = {"*": "bold", "~": "strikethrough", "[": "text_link"}
_EMOJI_URL_PREFIX = "tg://emoji?id="


@dataclass
class _Open:
    kind: str
    start: int
    source_index: int
    extra: dict[str, Any] = field(default_factory=dict)


def parse_markdown_v2(source: str) -> tuple[str, list[dict[str, Any]]]:
    """Parse MarkdownV2 into ``(plain_text, entities)`` or raise :class:`EntityParseError`."""
    return _MarkdownV2Parser(source).parse()


class _MarkdownV2Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.pos = 0
        self.out = TextBuilder()
        self.stack: list[_Open] = []
        self.quote_start: int | None = None

    def parse(self) -> tuple[str, list[dict[str, Any]]]:
        """Parse the whole source."""
        source = self.source
        while self.pos < len(source):
            char = source[self.pos]
            top = self.stack[-1] if self.stack else None
            if char == "\\":
                self._escape()
            elif top is not None and top.kind in ("code", "pre"):
                self._code_char(top)
            elif char == ">" and (self.pos == 0 or source[self.pos - 1] == "\n"):
                if self.quote_start is None:
                    self.quote_start = self.out.length
                self.pos += 1
            elif char == "\n":
                self._newline()
            elif char not in _RESERVED:
                self.out.append(char)
                self.pos += 1
            else:
                self._reserved(char, top)
        if self.stack:
            self._unclosed(self.stack[-1])
        self._close_quote()
        return self.out.result()

    def _offset(self, index: int) -> int:
        return byte_offset(self.source, index)

    def _unclosed(self, entity: _Open) -> None:
        raise EntityParseError(
            f"Can't find end of {_DISPLAY_NAMES[entity.kind]} entity at byte offset "
            f"{self._offset(entity.source_index)}"
        )

    def _escape(self) -> None:
        following = self.source[self.pos + 1 : self.pos + 2]
        if following and 0 < ord(following) < 127:
            self.out.append(following)
            self.pos += 2
        else:
            self.out.append("\\")
            self.pos += 1

    def _code_char(self, top: _Open) -> None:
        if top.kind == "code" and self.source[self.pos] == "`":
            self._close(1)
        elif top.kind == "pre" and self.source.startswith("```", self.pos):
            self._close(3)
        else:
            self.out.append(self.source[self.pos])
            self.pos += 1

    def _newline(self) -> None:
        if self.quote_start is not None and not self.source.startswith(">", self.pos + 1):
            self._close_quote()
        self.out.append("\n")
        self.pos += 1

    def _close_quote(self) -> None:
        if self.quote_start is not None:
            self.out.close_entity(self.quote_start, {"type": "blockquote"})
            self.quote_start = None

    def _end_length(self, kind: str) -> int:
        """How many characters at ``pos`` end an entity of ``kind`` (0 if they do not)."""
        source, pos = self.source, self.pos
        char = source[pos]
        if kind == "italic":
            return 1 if char == "_" and not source.startswith("__", pos) else 0
        if kind == "underline":
            return 2 if source.startswith("__", pos) else 0
        if kind == "spoiler":
            return 2 if source.startswith("||", pos) else 0
        if kind in ("text_link", "custom_emoji"):
            return 1 if char == "]" else 0
        closers = {"bold": "*", "strikethrough": "~"}
        return 1 if closers.get(kind) == char else 0

    def _reserved(self, char: str, top: _Open | None) -> None:
        if top is not None:
            length = self._end_length(top.kind)
            if length:
                self._close(length)
                return
            if any(self._end_length(entity.kind) for entity in self.stack[:-1]):
                self._unclosed(top)
        self._open(char)

    def _open(self, char: str) -> None:
        source, pos = self.source, self.pos
        if char == "_":
            kind, length = ("underline", 2) if source.startswith("__", pos) else ("italic", 1)
        elif char in _OPENERS:
            kind, length = _OPENERS[char], 1
        elif source.startswith("||", pos):
            kind, length = "spoiler", 2
        elif source.startswith("![", pos):
            kind, length = "custom_emoji", 2
        elif source.startswith("```", pos):
            self._open_pre()
            return
        elif char == "`":
            kind, length = "code", 1
        else:
            raise EntityParseError(
                f"Character '{char}' is reserved and must be escaped with the preceding '\\'"
            )
        self.stack.append(_Open(kind, self.out.length, pos))
        self.pos += length

    def _open_pre(self) -> None:
        source = self.source
        opened_at = self.pos
        self.pos += 3
        end = self.pos
        while end < len(source) and not source[end].isspace() and source[end] != "`":
            end += 1
        extra: dict[str, Any] = {}
        if end > self.pos and end < len(source) and source[end] != "`":
            extra["language"] = source[self.pos : end]
            self.pos = end
        if source.startswith("\r\n", self.pos):
            self.pos += 2
        elif source.startswith("\n", self.pos):
            self.pos += 1
        self.stack.append(_Open("pre", self.out.length, opened_at, extra))

    def _close(self, length: int) -> None:
        entity = self.stack.pop()
        self.pos += length
        if entity.kind in ("text_link", "custom_emoji"):
            url = self._link_target()
            if entity.kind == "text_link":
                if url:
                    self.out.close_entity(entity.start, {"type": "text_link", "url": url})
                return
            if url is None or not url.startswith(_EMOJI_URL_PREFIX):
                raise EntityParseError(
                    "Custom emoji entity must contain a tg://emoji URL at byte offset "
                    f"{self._offset(entity.source_index)}"
                )
            emoji_id = url.removeprefix(_EMOJI_URL_PREFIX)
            self.out.close_entity(
                entity.start, {"type": "custom_emoji", "custom_emoji_id": emoji_id}
            )
            return
        self.out.close_entity(entity.start, {"type": entity.kind, **entity.extra})

    def _link_target(self) -> str | None:
        source = self.source
        if not source.startswith("(", self.pos):
            return None
        opened_at = self.pos
        index = self.pos + 1
        url: list[str] = []
        while index < len(source):
            char = source[index]
            if char == "\\" and index + 1 < len(source):
                url.append(source[index + 1])
                index += 2
            elif char == ")":
                self.pos = index + 1
                return "".join(url)
            else:
                url.append(char)
                index += 1
        raise EntityParseError(f"Can't find end of a URL at byte offset {self._offset(opened_at)}")


def parse_markdown_legacy(source: str) -> tuple[str, list[dict[str, Any]]]:
    """Parse legacy ``Markdown`` (bold, italic, code, pre, links; no nesting)."""
    out = TextBuilder()
    pos = 0
    delimiters = {"*": "bold", "_": "italic", "`": "code"}
    while pos < len(source):
        char = source[pos]
        if char == "\\" and source[pos + 1 : pos + 2] in ("_", "*", "`", "["):
            out.append(source[pos + 1])
            pos += 2
        elif source.startswith("```", pos):
            end = source.find("```", pos + 3)
            if end < 0:
                raise _legacy_unclosed(source, pos)
            body = source[pos + 3 : end]
            language, newline, rest = body.partition("\n")
            extra = {"language": language} if newline and language and " " not in language else {}
            start = out.length
            out.append(rest if extra else body)
            out.close_entity(start, {"type": "pre", **extra})
            pos = end + 3
        elif char in delimiters:
            end = source.find(char, pos + 1)
            if end < 0:
                raise _legacy_unclosed(source, pos)
            start = out.length
            out.append(source[pos + 1 : end])
            out.close_entity(start, {"type": delimiters[char]})
            pos = end + 1
        elif char == "[":
            pos = _legacy_link(source, pos, out)
        else:
            out.append(char)
            pos += 1
    return out.result()


def _legacy_link(source: str, pos: int, out: TextBuilder) -> int:
    close = source.find("]", pos + 1)
    if close < 0:
        raise _legacy_unclosed(source, pos)
    start = out.length
    out.append(source[pos + 1 : close])
    if not source.startswith("(", close + 1):
        return close + 1
    url_end = source.find(")", close + 2)
    if url_end < 0:
        raise _legacy_unclosed(source, pos)
    url = source[close + 2 : url_end]
    if url:
        out.close_entity(start, {"type": "text_link", "url": url})
    return url_end + 1


def _legacy_unclosed(source: str, pos: int) -> EntityParseError:
    return EntityParseError(
        f"Can't find end of the entity starting at byte offset {byte_offset(source, pos)}"
    )
