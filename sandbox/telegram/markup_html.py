"""A strict parser for Telegram's HTML parse mode, producing plain text and message entities.

Supported, as in the Bot API: ``b strong i em u ins s strike del a[href] code pre
tg-spoiler span.tg-spoiler blockquote[expandable] tg-emoji[emoji-id]``, the named entities
``&lt; &gt; &amp; &quot;`` and numeric entities.  Anything else is refused with the same kind
of error Telegram gives (``can't parse entities: ...``).  Unlike Telegram, which keeps a stray
``&`` literally, this parser also refuses an ``&`` that does not start a valid entity, because
that is always an escaping bug in the bot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import EntityParseError
from .text import TextBuilder, byte_offset

_SIMPLE_TAGS = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "code": "code",
    "pre": "pre",
    "tg-spoiler": "spoiler",
    "blockquote": "blockquote",
}
_SPECIAL_TAGS = frozenset({"a", "span", "tg-emoji"})
_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}

_ENTITY_RE = re.compile(r"&(?:#([0-9]{1,8})|#[xX]([0-9a-fA-F]{1,8})|([a-zA-Z][a-zA-Z0-9]*));")
_TAG_NAME_RE = re.compile(r"<([a-zA-Z][a-zA-Z0-9-]*)")
_END_TAG_RE = re.compile(r"</\s*([a-zA-Z0-9-]*)\s*>")
_ATTR_NAME_RE = re.compile(r"[a-zA-Z0-9_-]+")
_UNQUOTED_VALUE_RE = re.compile(r"[^\s>\"']+")
_PLAIN_RE = re.compile(r"[^&<]+")


@dataclass
class _OpenTag:
    tag: str
    entity: dict[str, Any] | None
    start: int


def parse_html(source: str) -> tuple[str, list[dict[str, Any]]]:
    """Parse Telegram HTML into ``(plain_text, entities)`` or raise :class:`EntityParseError`."""
    return _HtmlParser(source).parse()


def decode_entity(source: str, pos: int) -> tuple[str, int] | None:
    """Decode the HTML entity starting at ``pos``; return ``(text, end)`` or ``None``."""
    match = _ENTITY_RE.match(source, pos)
    if match is None:
        return None
    decimal, hexadecimal, name = match.groups()
    if name is not None:
        char = _NAMED_ENTITIES.get(name)
        return (char, match.end()) if char is not None else None
    code = int(decimal) if decimal is not None else int(hexadecimal, 16)
    if code <= 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return None
    return chr(code), match.end()


class _HtmlParser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.pos = 0
        self.out = TextBuilder()
        self.stack: list[_OpenTag] = []

    def parse(self) -> tuple[str, list[dict[str, Any]]]:
        """Parse the whole source."""
        while self.pos < len(self.source):
            char = self.source[self.pos]
            if char == "&":
                self.out.append(self._entity(self.pos))
            elif char == "<":
                if self.source.startswith("</", self.pos):
                    self._end_tag()
                else:
                    self._start_tag()
            else:
                match = _PLAIN_RE.match(self.source, self.pos)
                assert match is not None
                self.out.append(match.group())
                self.pos = match.end()
        if self.stack:
            tag = self.stack[-1].tag
            raise EntityParseError(f'Can\'t find end tag corresponding to start tag "{tag}"')
        return self.out.result()

    def _offset(self, index: int) -> int:
        return byte_offset(self.source, index)

    def _entity(self, pos: int) -> str:
        decoded = decode_entity(self.source, pos)
        if decoded is None:
            match = _ENTITY_RE.match(self.source, pos)
            if match is not None:
                raise EntityParseError(
                    f'Unsupported HTML entity "{match.group()}" at byte offset {self._offset(pos)}'
                )
            raise EntityParseError(
                f"Character '&' at byte offset {self._offset(pos)} must be escaped as &amp;"
            )
        text, self.pos = decoded
        return text

    def _end_tag(self) -> None:
        start = self.pos
        match = _END_TAG_RE.match(self.source, start)
        if match is None:
            raise EntityParseError(
                f"Can't find end of the end tag at byte offset {self._offset(start)}"
            )
        name = match.group(1).lower()
        if not self.stack:
            raise EntityParseError(f"Unexpected end tag at byte offset {self._offset(start)}")
        top = self.stack[-1]
        if name != top.tag:
            raise EntityParseError(
                f"Unmatched end tag at byte offset {self._offset(start)}, "
                f'expected "</{top.tag}>", found "</{name}>"'
            )
        self.stack.pop()
        if top.entity is not None:
            self.out.close_entity(top.start, top.entity)
        self.pos = match.end()

    def _start_tag(self) -> None:
        start = self.pos
        match = _TAG_NAME_RE.match(self.source, start)
        if match is None:
            raise EntityParseError(
                f"Character '<' at byte offset {self._offset(start)} must be escaped as &lt;"
            )
        name = match.group(1).lower()
        if name not in _SIMPLE_TAGS and name not in _SPECIAL_TAGS:
            raise EntityParseError(
                f'Unsupported start tag "{name}" at byte offset {self._offset(start)}'
            )
        self.pos = match.end()
        attributes = self._attributes(name, start)
        entity = self._entity_for(name, attributes, start)
        self.stack.append(_OpenTag(name, entity, self.out.length))

    def _attributes(self, tag: str, start: int) -> dict[str, str]:
        attributes: dict[str, str] = {}
        source = self.source
        while True:
            while self.pos < len(source) and source[self.pos].isspace():
                self.pos += 1
            if self.pos >= len(source):
                raise EntityParseError(
                    f'Unclosed start tag "{tag}" at byte offset {self._offset(start)}'
                )
            if source[self.pos] == ">":
                self.pos += 1
                return attributes
            name_match = _ATTR_NAME_RE.match(source, self.pos)
            if name_match is None:
                raise EntityParseError(
                    f'Malformed start tag "{tag}" at byte offset {self._offset(start)}'
                )
            self.pos = name_match.end()
            attributes[name_match.group().lower()] = self._attribute_value(tag, start)

    def _attribute_value(self, tag: str, start: int) -> str:
        source = self.source
        while self.pos < len(source) and source[self.pos].isspace():
            self.pos += 1
        if self.pos >= len(source) or source[self.pos] != "=":
            return ""
        self.pos += 1
        while self.pos < len(source) and source[self.pos].isspace():
            self.pos += 1
        if self.pos < len(source) and source[self.pos] in "\"'":
            quote = source[self.pos]
            end = source.find(quote, self.pos + 1)
            if end < 0:
                raise EntityParseError(
                    f'Unclosed attribute value in tag "{tag}" at byte offset {self._offset(start)}'
                )
            raw = source[self.pos + 1 : end]
            self.pos = end + 1
        else:
            value_match = _UNQUOTED_VALUE_RE.match(source, self.pos)
            if value_match is None:
                raise EntityParseError(
                    f'Malformed start tag "{tag}" at byte offset {self._offset(start)}'
                )
            raw = value_match.group()
            self.pos = value_match.end()
        return self._decode_attribute(raw)

    def _decode_attribute(self, raw: str) -> str:
        parts: list[str] = []
        index = 0
        while index < len(raw):
            if raw[index] == "&" and (decoded := decode_entity(raw, index)) is not None:
                parts.append(decoded[0])
                index = decoded[1]
            else:
                parts.append(raw[index])
                index += 1
        return "".join(parts)

    def _entity_for(
        self, tag: str, attributes: dict[str, str], start: int
    ) -> dict[str, Any] | None:
        if tag == "a":
            href = attributes.get("href", "")
            return {"type": "text_link", "url": href} if href else None
        if tag == "span":
            if attributes.get("class") != "tg-spoiler":
                raise EntityParseError(
                    f'Tag "span" must have class "tg-spoiler" at byte offset {self._offset(start)}'
                )
            return {"type": "spoiler"}
        if tag == "tg-emoji":
            emoji_id = attributes.get("emoji-id", "")
            if not emoji_id.isdigit():
                raise EntityParseError(
                    f'Tag "tg-emoji" must have attribute "emoji-id" at byte offset '
                    f"{self._offset(start)}"
                )
            return {"type": "custom_emoji", "custom_emoji_id": emoji_id}
        if tag == "blockquote" and "expandable" in attributes:
            return {"type": "expandable_blockquote"}
        if tag == "code" and self.stack and self.stack[-1].tag == "pre":
            pre = self.stack[-1]
            language = attributes.get("class", "")
            if pre.entity is not None and language.startswith("language-"):
                pre.entity["language"] = language.removeprefix("language-")
            return None
        return {"type": _SIMPLE_TAGS[tag]}
