"""The IMAP4rev1 syntax the local IMAP server reads and writes (RFC 3501, section 9).

Command arguments (atoms, quoted strings, literals and parenthesised lists), sequence sets, flags,
the FETCH items and SEARCH keys the server supports, and the INTERNALDATE format. Anything outside
that subset raises :class:`SyntaxProblem`, which the server answers with a tagged BAD.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeAlias

Arg: TypeAlias = "str | bytes | list[Arg]"
"""An atom (str), a quoted string or a literal (bytes), or a parenthesised list."""

LITERAL_MARK = "\x00"
"""Stands for the next literal in a command's text (NUL itself is never allowed in a command)."""

MAX_NUMBER = 2**32 - 1
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
RECENT = "\\Recent"
_SYSTEM = {flag.lower(): flag for flag in SYSTEM_FLAGS}
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_SET = re.compile(r"^(?:\d+|\*)(?::(?:\d+|\*))?(?:,(?:\d+|\*)(?::(?:\d+|\*))?)*$")
_BODY = re.compile(r"^BODY(\.PEEK)?\[(HEADER|TEXT|)\]$")
_KEYWORD = re.compile(r"^[^\\(){%*\"\]\s\x00-\x1f\x7f]+$")


class SyntaxProblem(ValueError):
    """A command the server cannot parse or does not support; answered with BAD."""


# -- arguments -----------------------------------------------------------------------------------


def parse_arguments(text: str, literals: Sequence[bytes]) -> list[Arg]:
    """Split command arguments; each LITERAL_MARK in `text` is the next of `literals`."""
    parser = _Arguments(text, literals)
    items = parser.items(closing=False)
    if parser.literals_left():
        raise SyntaxProblem("a literal outside the arguments")
    return items


class _Arguments:
    def __init__(self, text: str, literals: Sequence[bytes]) -> None:
        self._text = text
        self._pos = 0
        self._literals = list(literals)
        self._used = 0

    def literals_left(self) -> bool:
        return self._used != len(self._literals)

    def items(self, *, closing: bool) -> list[Arg]:
        found: list[Arg] = []
        text = self._text
        while True:
            while self._pos < len(text) and text[self._pos] == " ":
                self._pos += 1
            if self._pos >= len(text):
                if closing:
                    raise SyntaxProblem("missing )")
                return found
            char = text[self._pos]
            if char == ")":
                if not closing:
                    raise SyntaxProblem("unexpected )")
                self._pos += 1
                return found
            if char == "(":
                self._pos += 1
                found.append(self.items(closing=True))
            elif char == '"':
                found.append(self._quoted())
            elif char == LITERAL_MARK:
                self._pos += 1
                if self._used >= len(self._literals):
                    raise SyntaxProblem("a literal is missing")
                found.append(self._literals[self._used])
                self._used += 1
            else:
                found.append(self._atom())

    def _quoted(self) -> bytes:
        text, out = self._text, []
        self._pos += 1
        while self._pos < len(text):
            char = text[self._pos]
            if char == "\\":
                escaped = text[self._pos + 1 : self._pos + 2]
                if escaped not in ('"', "\\"):
                    raise SyntaxProblem('only \\" and \\\\ may be escaped in a quoted string')
                out.append(escaped)
                self._pos += 2
                continue
            if char == '"':
                self._pos += 1
                return "".join(out).encode("latin-1")
            if char == LITERAL_MARK:
                break
            out.append(char)
            self._pos += 1
        raise SyntaxProblem("unterminated quoted string")

    def _atom(self) -> str:
        """An atom; a `[...]` section inside it (BODY[HEADER]) may hold spaces and parentheses."""
        text, start, depth = self._text, self._pos, 0
        while self._pos < len(text):
            char = text[self._pos]
            if char == LITERAL_MARK or char < " " or char == "\x7f":
                break
            if depth == 0 and char in ' ()"':
                break
            if char == "[":
                depth += 1
            elif char == "]" and depth:
                depth -= 1
            self._pos += 1
        if depth:
            raise SyntaxProblem("missing ]")
        if self._pos == start:
            raise SyntaxProblem(f"unexpected character {text[start]!r}")
        return text[start : self._pos]


def atom(arg: Arg, what: str) -> str:
    """An argument that must be an atom (a command word, a set, a key)."""
    if not isinstance(arg, str):
        raise SyntaxProblem(f"expected {what}")
    return arg


def astring(arg: Arg, what: str) -> bytes:
    """An atom or a string (a user name, a password, a mailbox name), as bytes."""
    if isinstance(arg, list):
        raise SyntaxProblem(f"expected {what}")
    return arg.encode("latin-1") if isinstance(arg, str) else arg


def number(arg: Arg, what: str) -> int:
    """A number argument (LARGER 1000)."""
    text = atom(arg, what)
    if not text.isdigit() or int(text) > MAX_NUMBER:
        raise SyntaxProblem(f"expected a number for {what}")
    return int(text)


# -- sequence sets -------------------------------------------------------------------------------


@dataclass(frozen=True)
class NumberSet:
    """A sequence set (`1:4,7,9:*`) with `*` resolved: a union of inclusive ranges."""

    ranges: tuple[tuple[int, int], ...]

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int) and any(low <= value <= high for low, high in self.ranges)

    def lowest(self) -> int:
        """The smallest number the set names."""
        return min(low for low, _ in self.ranges)

    def highest(self) -> int:
        """The largest number the set names."""
        return max(high for _, high in self.ranges)


def parse_set(text: str, largest: int) -> NumberSet:
    """Parse a sequence set; `*` is `largest` (the last UID or the message count, 0 if none)."""
    if not _SET.match(text):
        raise SyntaxProblem(f"not a sequence set: {text!r}")
    ranges = []
    for part in text.split(","):
        first, _, last = part.partition(":")
        low = _set_number(first, largest)
        high = _set_number(last, largest) if last else low
        ranges.append((min(low, high), max(low, high)))
    return NumberSet(tuple(ranges))


def _set_number(text: str, largest: int) -> int:
    if text == "*":
        return largest
    value = int(text)
    if not 1 <= value <= MAX_NUMBER:
        raise SyntaxProblem(f"not a valid message number: {text}")
    return value


def is_set(text: str) -> bool:
    """Whether a search key is a sequence set."""
    return bool(_SET.match(text))


# -- flags and dates -----------------------------------------------------------------------------


def flag(arg: Arg) -> str:
    """A storable flag: a system flag in its canonical spelling, or a keyword."""
    text = atom(arg, "a flag")
    if text.startswith("\\"):
        canonical = _SYSTEM.get(text.lower())
        if canonical is None:
            raise SyntaxProblem(f"flag {text} cannot be stored")
        return canonical
    if not _KEYWORD.match(text):
        raise SyntaxProblem(f"not a valid keyword: {text!r}")
    return text


def internal_date(moment: datetime) -> str:
    """INTERNALDATE text, `27-Nov-2026 01:27:36 +0000` (a one-digit day is padded by a space)."""
    offset = moment.utcoffset() or timedelta(0)
    minutes = abs(int(offset.total_seconds())) // 60
    sign = "-" if offset < timedelta(0) else "+"
    return (
        f"{moment.day:2d}-{_MONTHS[moment.month - 1]}-{moment.year:04d} "
        f"{moment:%H:%M:%S} {sign}{minutes // 60:02d}{minutes % 60:02d}"
    )


# -- FETCH ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FetchItem:
    """One FETCH data item: its name in the response, the part of the message, and \\Seen."""

    name: str
    part: str | None = None  # "" for the whole message, "HEADER" or "TEXT"; None: not content
    marks_seen: bool = False


_SIMPLE_ITEMS = {
    "UID": FetchItem("UID"),
    "FLAGS": FetchItem("FLAGS"),
    "INTERNALDATE": FetchItem("INTERNALDATE"),
    "RFC822.SIZE": FetchItem("RFC822.SIZE"),
    "RFC822": FetchItem("RFC822", "", marks_seen=True),
    "RFC822.HEADER": FetchItem("RFC822.HEADER", "HEADER"),
    "RFC822.TEXT": FetchItem("RFC822.TEXT", "TEXT", marks_seen=True),
}


def fetch_items(arg: Arg) -> list[FetchItem]:
    """The items of a FETCH: one item, the FAST macro, or a parenthesised list."""
    if isinstance(arg, str) and arg.upper() == "FAST":
        return [_SIMPLE_ITEMS["FLAGS"], _SIMPLE_ITEMS["INTERNALDATE"], _SIMPLE_ITEMS["RFC822.SIZE"]]
    names = arg if isinstance(arg, list) else [arg]
    if not names:
        raise SyntaxProblem("no FETCH items")
    items = []
    for name in names:
        text = atom(name, "a FETCH item").upper()
        simple = _SIMPLE_ITEMS.get(text)
        if simple is not None:
            items.append(simple)
            continue
        body = _BODY.match(text)
        if body is None:
            raise SyntaxProblem(f"FETCH {text} is not supported by this server")
        items.append(FetchItem(f"BODY[{body.group(2)}]", body.group(2), body.group(1) is None))
    return items


def message_part(raw: bytes, part: str) -> bytes:
    """The whole message, its header (with the blank line after it) or its text."""
    if part == "":
        return raw
    if raw.startswith(b"\r\n"):
        split = 2
    else:
        end = raw.find(b"\r\n\r\n")
        split = len(raw) if end < 0 else end + 4
    return raw[:split] if part == "HEADER" else raw[split:]


# -- SEARCH --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """What SEARCH looks at in one message, as one session sees it."""

    seq: int
    uid: int
    flags: frozenset[str]  # with \\Recent when the message is recent for this session
    size: int


Criterion = Callable[[Candidate], bool]

_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True),
    "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True),
    "SEEN": ("\\Seen", True),
    "RECENT": (RECENT, True),
    "OLD": (RECENT, False),
    "UNANSWERED": ("\\Answered", False),
    "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
}


def search_criterion(args: Sequence[Arg], *, last_uid: int, count: int) -> Criterion:
    """Compile SEARCH keys (all must match); `*` in sets is the last UID or the count."""
    if not args:
        raise SyntaxProblem("SEARCH needs a key")
    keys = _SearchKeys(list(args), last_uid, count)
    criteria = []
    while not keys.done():
        criteria.append(keys.next())
    return lambda mail: all(check(mail) for check in criteria)


class _SearchKeys:
    def __init__(self, args: list[Arg], last_uid: int, count: int) -> None:
        self._args = args
        self._pos = 0
        self._last_uid = last_uid
        self._count = count

    def done(self) -> bool:
        return self._pos >= len(self._args)

    def _take(self, what: str) -> Arg:
        if self.done():
            raise SyntaxProblem(f"SEARCH: missing {what}")
        arg = self._args[self._pos]
        self._pos += 1
        return arg

    def next(self) -> Criterion:
        arg = self._take("a search key")
        if isinstance(arg, list):
            return search_criterion(arg, last_uid=self._last_uid, count=self._count)
        key = atom(arg, "a search key").upper()
        if key in _FLAG_KEYS:
            name, wanted = _FLAG_KEYS[key]
            return lambda mail: (name in mail.flags) == wanted
        if is_set(key):
            numbers = parse_set(key, self._count)
            return lambda mail: mail.seq in numbers
        compile_key = getattr(self, f"_key_{key.lower()}", None)
        if key.isalpha() and compile_key is not None:
            made: Criterion = compile_key()
            return made
        raise SyntaxProblem(f"SEARCH {key} is not supported by this server")

    def _key_all(self) -> Criterion:
        return lambda _mail: True

    def _key_new(self) -> Criterion:
        return lambda mail: RECENT in mail.flags and "\\Seen" not in mail.flags

    def _key_keyword(self) -> Criterion:
        keyword = flag(self._take("a keyword"))
        return lambda mail: keyword in mail.flags

    def _key_unkeyword(self) -> Criterion:
        keyword = flag(self._take("a keyword"))
        return lambda mail: keyword not in mail.flags

    def _key_larger(self) -> Criterion:
        size = number(self._take("a size"), "LARGER")
        return lambda mail: mail.size > size

    def _key_smaller(self) -> Criterion:
        size = number(self._take("a size"), "SMALLER")
        return lambda mail: mail.size < size

    def _key_not(self) -> Criterion:
        negated = self.next()
        return lambda mail: not negated(mail)

    def _key_or(self) -> Criterion:
        left, right = self.next(), self.next()
        return lambda mail: left(mail) or right(mail)

    def _key_uid(self) -> Criterion:
        uids = parse_set(atom(self._take("a UID set"), "a UID set"), self._last_uid)
        return lambda mail: mail.uid in uids
