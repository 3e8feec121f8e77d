"""Writes a MIME message's wire form directly: headers folded by hand, bodies encoded in C.

The standard library's `email` package builds a parse tree for every header it writes, which
cost about 2 ms per reply, more than the rest of sending one. The mail the desk sends has a small,
fixed shape (a few headers, a text part, an HTML alternative, maybe attachments), so this module
writes it straight to bytes: ASCII header text is folded at spaces, other text becomes RFC 2047
encoded words of whole characters, parameters use RFC 2231, and bodies are 7bit when they can be,
otherwise quoted-printable or base64, whichever is shorter (the stdlib's rule). Every line ends in
CRLF and stays within 998 characters. Callers pass values without line breaks (`header_text`).
"""

from __future__ import annotations

import binascii
import re
import secrets
from base64 import b64encode
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

__all__ = [
    "Part",
    "address_header",
    "attachment_part",
    "encoded_words",
    "header",
    "id_header",
    "multipart",
    "text_part",
]

CRLF = b"\r\n"
_WIDTH = 78  # preferred line length (RFC 5322 2.1.1)
_WORD_BYTES = 45  # UTF-8 bytes per encoded word: base64 of 45 bytes + "=?utf-8?b??=" is 72 chars
_ATOM_PHRASE_RE = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~ ]*")
_PRINTABLE_RE = re.compile(r"[ -~]*")
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,100}")


@dataclass(frozen=True)
class Part:
    """One body part: its headers (name, value) and its encoded body, lines ending in CRLF."""

    headers: tuple[tuple[str, str], ...]
    body: bytes

    def to_bytes(self) -> bytes:
        head = b"".join(header(name, value) for name, value in self.headers)
        return head + CRLF + self.body


def header(name: str, value: str) -> bytes:
    """An unstructured header: folded at spaces if ASCII, else RFC 2047 encoded words."""
    if value.isascii() and "=?" not in value:  # "=?" could read as an encoded word
        return _fold(f"{name}:", value.split(" "))
    return _fold(f"{name}:", encoded_words(value))


def id_header(name: str, ids: Sequence[str]) -> bytes:
    """A header of Message-IDs, folded only between ids (an encoded id breaks threading)."""
    return _fold(f"{name}:", ids)


def address_header(name: str, address: str, display_name: str = "") -> bytes:
    """`Name: "Display" <address>`; the address must already be checked ASCII."""
    if not display_name:
        return _fold(f"{name}:", [address])
    if not display_name.isascii():
        words = encoded_words(display_name)
    elif _ATOM_PHRASE_RE.fullmatch(display_name):
        words = display_name.split(" ")
    else:
        quoted = display_name.replace("\\", "\\\\").replace('"', '\\"')
        words = [f'"{quoted}"']
    return _fold(f"{name}:", [*words, f"<{address}>"])


def encoded_words(text: str) -> list[str]:
    """RFC 2047 base64 encoded words, each whole UTF-8 characters and at most 75 characters."""
    words: list[str] = []
    chunk: list[str] = []
    size = 0
    for char in text:
        width = len(char.encode("utf-8", "surrogatepass"))
        if size + width > _WORD_BYTES and chunk:
            words.append(_encoded_word("".join(chunk)))
            chunk, size = [], 0
        chunk.append(char)
        size += width
    if chunk or not words:
        words.append(_encoded_word("".join(chunk)))
    return words


def _encoded_word(text: str) -> str:
    data = text.encode("utf-8", "replace")
    return f"=?utf-8?b?{b64encode(data).decode('ascii')}?="


def _fold(start: str, words: Sequence[str]) -> bytes:
    """Words joined by single spaces, a line break (CRLF + space) wherever one would pass 78."""
    lines: list[str] = []
    line = start
    bare = True  # nothing after the header name yet: a break there would leave an empty line
    for word in words:
        if not bare and word and len(line) + 1 + len(word) > _WIDTH:
            lines.append(line)
            line = ""
        line = f"{line} {word}"
        bare = False
    lines.append(line)
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def text_part(content: str, subtype: str) -> Part:
    """A text part in UTF-8: 7bit when it is short-lined ASCII, else QP or base64 (shorter)."""
    lines = content.replace("\r\n", "\n").replace("\r", "\n")
    if not lines.endswith("\n"):
        lines += "\n"
    data = lines.replace("\n", "\r\n").encode("utf-8", "replace")
    content_type = f'text/{subtype}; charset="utf-8"'
    if data.isascii() and all(len(line) <= 998 for line in data.split(CRLF)):
        body, encoding = data, "7bit"
    else:
        printable = binascii.b2a_qp(data, istext=True)
        packed = _base64_lines(data)
        body, encoding = (
            (printable, "quoted-printable") if len(printable) <= len(packed) else (packed, "base64")
        )
    return Part((("Content-Type", content_type), ("Content-Transfer-Encoding", encoding)), body)


def attachment_part(data: bytes, mime_type: str, filename: str) -> Part:
    """A base64 attachment; a type that is not two tokens becomes application/octet-stream."""
    maintype, _, subtype = mime_type.partition("/")
    if (
        not (_TOKEN_RE.fullmatch(maintype) and _TOKEN_RE.fullmatch(subtype))
        or maintype.lower() == "multipart"
    ):
        maintype, subtype = "application", "octet-stream"
    disposition = "attachment; " + _filename_parameter(filename)
    return Part(
        (
            ("Content-Type", f"{maintype}/{subtype}"),
            ("Content-Transfer-Encoding", "base64"),
            ("Content-Disposition", disposition),
        ),
        _base64_lines(data),
    )


def multipart(subtype: str, parts: Sequence[Part]) -> Part:
    """A multipart body whose boundary occurs in none of its parts."""
    bodies = [part.to_bytes() for part in parts]
    while True:
        boundary = f"=_{secrets.token_hex(12)}"
        marker = boundary.encode("ascii")
        if not any(marker in body for body in bodies):
            break
    out = [b"--" + marker + CRLF + body + CRLF for body in bodies]
    content_type = f'multipart/{subtype}; boundary="{boundary}"'
    return Part((("Content-Type", content_type),), b"".join(out) + b"--" + marker + b"--" + CRLF)


def _filename_parameter(filename: str) -> str:
    """`filename="..."`, or RFC 2231 `filename*0*=utf-8''...; filename*1*=...` pieces."""
    if filename.isascii() and len(filename) <= 60 and _PRINTABLE_RE.fullmatch(filename):
        quoted = filename.replace("\\", "\\\\").replace('"', '\\"')
        return f'filename="{quoted}"'
    encoded = quote(filename.encode("utf-8", "replace"), safe="")
    pieces: list[str] = []
    while encoded:
        cut = 60
        while len(encoded) > cut and "%" in encoded[cut - 2 : cut]:
            cut -= 1  # never split a %XX escape
        pieces.append(encoded[:cut])
        encoded = encoded[cut:]
    if len(pieces) <= 1:
        return "filename*=utf-8''" + "".join(pieces)
    first = f"filename*0*=utf-8''{pieces[0]}"
    rest = [f"filename*{n}*={piece}" for n, piece in enumerate(pieces[1:], start=1)]
    return "; ".join([first, *rest])


def _base64_lines(data: bytes) -> bytes:
    raw = b64encode(data)
    return b"".join(raw[start : start + 76] + CRLF for start in range(0, len(raw), 76))
