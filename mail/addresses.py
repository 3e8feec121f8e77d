"""Tolerant address-list parsing for From/To/Reply-To/Sender headers.

A small scanner instead of ``email.utils.getaddresses`` (whose behaviour on
malformed input changed between Python releases): it understands quoted
strings, nested comments, ``<angle-addr>``s, groups (``name: a, b;``) and
domain literals, and when an entry has no clean ``addr-spec`` it looks for the
first address-shaped token in the junk.  Display names are RFC 2047-decoded
(also inside quotes, which real clients do) and flattened to one line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mail.decode import ENCODED_WORD_RE, decode_header, one_line, text8

__all__ = ["Mailbox", "parse_mailboxes"]

MAX_ADDRESS_HEADER = 20_000
"""Address headers are cut to this many characters before scanning."""

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u00a1-\U0010ffff-]"
_LOCAL = rf'(?:{_ATEXT}+(?:\.{_ATEXT}+)*|"(?:[^"\\\r\n]|\\.)*")'
_LETTER = r"A-Za-z0-9\u00a1-\U0010ffff"
_LABEL = rf"[{_LETTER}](?:[{_LETTER}_-]{{0,61}}[{_LETTER}])?"
_DOMAIN = rf"(?:{_LABEL}(?:\.{_LABEL})*\.?|\[[^\[\]\\\s]{{1,100}}\])"
_ADDR_RE = re.compile(rf"{_LOCAL}@{_DOMAIN}")
_ADDR_SEARCH_RE = re.compile(
    rf"(?<![A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~\u00a1-\U0010ffff-]){_ATEXT}+(?:\.{_ATEXT}+)*@{_DOMAIN}"
)
_NAME_JUNK = " \t\"'<>,;:()[]"


@dataclass(frozen=True)
class Mailbox:
    """One parsed mailbox: lower-cased address (None if unusable), display name, raw token."""

    address: str | None
    name: str
    token: str
    messy: bool


@dataclass
class _Entry:
    phrase: list[str]
    comments: list[str]
    angle: str | None
    raw: list[str]

    @classmethod
    def empty(cls) -> _Entry:
        return cls([], [], None, [])


def _scan_until(value: str, start: int, closer: str) -> tuple[str, int]:
    """Text up to the unescaped *closer* (exclusive) and the index after it."""
    out: list[str] = []
    i = start
    while i < len(value):
        char = value[i]
        if char == "\\" and i + 1 < len(value):
            out.append(value[i + 1])
            i += 2
            continue
        if char == closer:
            return "".join(out), i + 1
        out.append(char)
        i += 1
    return "".join(out), i


def _scan_comment(value: str, start: int) -> tuple[str, int]:
    depth = 1
    i = start
    while i < len(value):
        char = value[i]
        if char == "\\":
            i += 2
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return value[start:i], i + 1
        i += 1
    return value[start:], i


def _entries(value: str) -> list[_Entry]:
    entries: list[_Entry] = []
    entry = _Entry.empty()
    i = 0
    while i < len(value):
        char = value[i]
        start = i
        if char == '"':
            text, i = _scan_until(value, i + 1, '"')
            entry.phrase.append(text)
        elif char == "(":
            text, i = _scan_comment(value, i + 1)
            entry.comments.append(text)
        elif char == "<":
            text, i = _scan_until(value, i + 1, ">")
            if entry.angle is None:
                entry.angle = text
        elif char == "[":
            text, i = _scan_until(value, i + 1, "]")
            entry.phrase.append(f"[{text}]")
        elif char in ",;":
            entries.append(entry)
            entry = _Entry.empty()
            i += 1
            continue
        elif char == "=" and (word := ENCODED_WORD_RE.match(value, i)):
            entry.phrase.append(word.group(0))  # encoded-words may hide ",", ":" or "<"
            i = word.end()
        elif char == ":" and entry.angle is None:
            entry = _Entry.empty()  # group name: drop it
            i += 1
            continue
        else:
            end = i + 1
            while end < len(value) and value[end] not in '"(<[,;:=':
                end += 1
            entry.phrase.append(value[i:end])
            i = end
        entry.raw.append(value[start:i])
    entries.append(entry)
    return [e for e in entries if e.angle is not None or "".join(e.raw).strip()]


def _clean_name(text: str) -> str:
    decoded, _notes = decode_header(text)
    return one_line(decoded).strip(_NAME_JUNK)


def _mailbox(entry: _Entry) -> Mailbox:
    phrase = " ".join(part.strip() for part in entry.phrase if part.strip())
    if entry.angle is not None:
        token = entry.angle.strip()
        if token.startswith("@") and ":" in token:  # obsolete source route
            token = token.rsplit(":", 1)[1].strip()
        name = phrase or " ".join(entry.comments)
    else:
        token = "".join(part for part in entry.phrase).strip()
        name = " ".join(entry.comments)
    if _ADDR_RE.fullmatch(token):
        return Mailbox(token.lower().rstrip("."), _clean_name(name), token, messy=False)
    raw = "".join(entry.raw)
    found = _ADDR_SEARCH_RE.search(raw)
    if found is None:
        return Mailbox(None, _clean_name(name or phrase), token or one_line(raw), messy=True)
    address = found.group(0).rstrip(".")
    guess = raw[: found.start()].strip(_NAME_JUNK) or name or raw[found.end() :]
    return Mailbox(address.lower(), _clean_name(guess), address, messy=True)


def parse_mailboxes(value: str) -> list[Mailbox]:
    """All mailboxes in an address header value (raw, possibly surrogate-escaped)."""
    text = one_line(text8(value[:MAX_ADDRESS_HEADER])[0])
    return [_mailbox(entry) for entry in _entries(text)]
