"""Byte, charset and header decoding for inbound mail that never raises.

Charset order used by :func:`decode_bytes` (the same for bodies, raw 8-bit
header bytes and RFC 2047 encoded-words):

1. the declared charset, strictly — first its de-facto meaning where that is
   wider (``iso-8859-1`` is read as ``cp1252`` like browsers do), then the
   label itself, then known supersets (``gb2312``/``gbk`` → ``gb18030``,
   ``shift_jis`` → ``cp932``, ``euc-kr`` → ``cp949``, ``big5`` → ``cp950``/``big5hkscs``).
   Exception: bytes labelled Latin-1/cp1252/ISO-8859-15/ASCII that are valid
   UTF-8 *and* contain non-ASCII are read as UTF-8 (the commonest lie);
2. UTF-8, strictly;
3. the declared charset with U+FFFD replacement, when Python knows it and it
   is not UTF-8/ASCII (a few bad bytes in a real Shift_JIS mail must not turn
   the whole body into mojibake);
4. UTF-8 with U+FFFD replacement when the bytes are *mostly* UTF-8 (valid
   multi-byte characters outnumber invalid sequences four to one);
5. cp1252, strictly;
6. latin-1, which cannot fail.

Unknown labels (``x-unknown``, ``unknown-8bit``, typos) start at step 2.
Codecs that are not real text charsets (``idna``, ``punycode``,
``unicode-escape``, ``zlib``, ``base64``, …) are treated as unknown.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re

__all__ = [
    "ENCODED_WORD_RE",
    "b64decode_lenient",
    "clip",
    "codec_name",
    "decode_bytes",
    "decode_header",
    "header_token",
    "one_line",
    "strip_comments",
    "text8",
    "unescape_bytes",
]

_DENY = frozenset({"idna", "punycode", "raw-unicode-escape", "unicode-escape", "undefined"})
_EXTRA_LABELS = {
    "x-sjis": "shift_jis",
    "windows-31j": "cp932",
    "iso-8859-8-i": "iso8859-8",
    "iso-8859-8-e": "iso8859-8",
    "iso-8859-6-i": "iso8859-6",
    "iso-8859-6-e": "iso8859-6",
    "windows-874": "cp874",
    "x-gbk": "gbk",
    "x-mac-roman": "mac_roman",
    "x-mac-cyrillic": "mac_cyrillic",
    "x-euc-jp": "euc_jp",
    "unicode-1-1-utf-7": "utf-7",
    "utf8mb4": "utf-8",
}
_PREFER = {"iso8859-1": "cp1252"}
_WIDER: dict[str, tuple[str, ...]] = {
    "gb2312": ("gb18030",),
    "gbk": ("gb18030",),
    "shift_jis": ("cp932",),
    "euc_kr": ("cp949",),
    "big5": ("cp950", "big5hkscs"),
    "iso2022_jp": ("iso2022_jp_2", "iso2022_jp_ext"),
}
_LATIN = frozenset({"iso8859-1", "cp1252", "iso8859-15", "ascii"})
_CP_RE = re.compile(r"^(?:cp|windows|win)[-_]?(\d{3,5})$")
_LINE_JUNK = re.compile(r"[\s\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/=]")
_B64_PAD = re.compile(rb"=+")


def one_line(text: str) -> str:
    """Collapse all whitespace and control characters (CR, LF, NEL, U+2028…) to single spaces."""
    return _LINE_JUNK.sub(" ", text).strip()


def clip(text: str, limit: int = 60) -> str:
    """A short single-line excerpt for defect notes."""
    flat = one_line(unescape_bytes(text))
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def unescape_bytes(text: str) -> str:
    """Replace surrogate-escaped raw bytes (from the email parser) by U+FFFD."""
    if text.isascii():
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def strip_comments(text: str) -> str:
    """Remove (possibly nested) RFC 5322 comments."""
    if "(" not in text:
        return text
    out: list[str] = []
    depth = 0
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif not depth:
            out.append(char)
    return "".join(out)


def header_token(value: str | None) -> str:
    """The lower-cased first token of a structured header ("Bulk (x); y" → "bulk")."""
    if value is None:
        return ""
    return one_line(strip_comments(unescape_bytes(value))).split(";")[0].strip().lower()


def text8(value: str) -> tuple[str, str | None]:
    """Decode raw 8-bit bytes (surrogate-escaped by the email parser) in a header value."""
    if value.isascii():
        return value, None
    return decode_bytes(value.encode("utf-8", "surrogateescape"), None)


def codec_name(label: str | None) -> str | None:
    """Python's codec name for a MIME charset label, or None if unknown/unsafe."""
    if not label:
        return None
    name = label.strip().strip("\"'").strip().lower()
    if not name or len(name) > 40 or not name.isascii():
        return None
    name = _EXTRA_LABELS.get(name, name)
    candidates = [name]
    if name.startswith("x-"):
        candidates.append(name[2:])
    match = _CP_RE.match(name)
    if match:
        candidates.append("cp" + match.group(1))
    for candidate in candidates:
        try:
            info = codecs.lookup(candidate)
        except Exception:  # noqa: S112 - LookupError, or ValueError on odd names
            continue
        if not getattr(info, "_is_text_encoding", True) or info.name in _DENY:
            return None
        return info.name
    return None


def _attempt(data: bytes, codec: str, errors: str) -> str | None:
    try:
        return data.decode(codec, errors)
    except Exception:
        return None


def decode_bytes(data: bytes, label: str | None) -> tuple[str, str | None]:  # noqa: PLR0911, PLR0912
    """Decode *data* declared as charset *label*; returns (text, note or None)."""
    codec = codec_name(label)
    shown = clip(label or "", 30)
    unknown = f"unknown charset '{shown}'" if label and codec is None else None
    if not data:
        return "", unknown
    if codec in _LATIN and not data.isascii():
        text = _attempt(data, "utf-8", "strict")
        if text is not None:
            return text, f"charset '{shown}' declared but the bytes are UTF-8; read as UTF-8"
    if codec is not None:
        tried: list[str] = []
        for candidate in (_PREFER.get(codec, codec), codec, *_WIDER.get(codec, ())):
            if candidate in tried:
                continue
            tried.append(candidate)
            text = _attempt(data, candidate, "strict")
            if text is not None:
                return text, None
    text = _attempt(data, "utf-8", "strict")
    if text is not None:
        if codec is not None:
            return text, f"bytes are not valid '{shown}'; read as UTF-8"
        return text, unknown
    if codec is not None and codec not in ("utf-8", "ascii"):
        text = _attempt(data, codec, "replace")
        if text is not None:
            return text, f"bytes invalid in charset '{shown}' replaced with U+FFFD"
    text = data.decode("utf-8", "replace")
    bad = text.count("\ufffd")
    good = len(text) - len(text.encode("ascii", "ignore")) - bad
    prefix = (
        f"{unknown}; " if unknown else ("" if codec is None else f"bytes are not valid '{shown}'; ")
    )
    if good > 0 and good >= 4 * bad:
        return text, f"{prefix}read as UTF-8 with {bad} invalid byte sequence(s) replaced"
    text = _attempt(data, "cp1252", "strict")
    if text is not None:
        return text, f"{prefix}read as cp1252"
    return data.decode("latin-1"), f"{prefix}read as latin-1"


def b64decode_lenient(data: bytes) -> tuple[bytes, str | None]:
    """Decode base64, tolerating junk characters, bad padding and padded chunks.

    Returns (bytes, note or None).  Data that is clearly not base64 at all
    (more than 5 % non-alphabet characters) is returned unchanged with a note.
    """
    compact = b"".join(data.split())
    try:
        return base64.b64decode(compact, validate=True), None
    except (binascii.Error, ValueError):
        pass
    junk = len(_B64_JUNK.findall(compact))
    if compact and junk * 20 > len(compact):
        return data, "declared base64 but is not base64; used as is"
    cleaned = _B64_JUNK.sub(b"", compact)
    chunks = _B64_PAD.split(cleaned)
    if len(chunks) > 1000:
        chunks = [cleaned.replace(b"=", b"")]
    out = bytearray()
    for chunk in chunks:
        usable = chunk[: len(chunk) - (len(chunk) % 4 == 1)]
        if not usable:
            continue
        padded = usable + b"=" * (-len(usable) % 4)
        try:
            out += base64.b64decode(padded)
        except (binascii.Error, ValueError):
            continue
    return bytes(out), "broken base64 (padding or stray characters) decoded leniently"


# RFC 2047 encoded-word: =?charset[*lang]?B|Q?text?=  (spaces tolerated inside the text).
ENCODED_WORD_RE = _EW_RE = re.compile(
    r"=\?([^?\s*]{1,60})(?:\*[^?\s]{0,20})?\?([bBqQ])\?([^?]*)\?="
)
_EW_TAIL_RE = re.compile(r"=\?([^?\s*]{1,60})(?:\*[^?\s]{0,20})?\?([bBqQ])\?([^?]*)\??$")
_FOLD_RE = re.compile(r"\r?\n(?=[ \t])")


def _word_bytes(encoding: str, text: str) -> bytes:
    raw = text.encode("utf-8", "surrogateescape")
    if encoding in "bB":
        return b64decode_lenient(raw)[0]
    return binascii.a2b_qp(raw, header=True)


def _literal(text: str, notes: list[str]) -> str:
    if text.isascii():
        if "=?" in text:
            notes.append(f"malformed encoded-word left as is: '{clip(text)}'")
        return text
    decoded, note = decode_bytes(text.encode("utf-8", "surrogateescape"), None)
    notes.append("raw 8-bit bytes in header" + (f" ({note})" if note else ""))
    return decoded


def decode_header(value: str) -> tuple[str, list[str]]:
    """Decode RFC 2047 encoded-words and raw 8-bit bytes; returns (text, notes).

    Adjacent encoded-words in the same charset are joined *before* charset
    decoding, so multi-byte characters split across words survive.  The
    result may still contain control characters: pass it through
    :func:`one_line` for display.
    """
    notes: list[str] = []
    value = _FOLD_RE.sub("", value)
    out: list[str] = []
    pending_charset: str | None = None
    pending = bytearray()

    def flush() -> None:
        nonlocal pending_charset
        if pending_charset is not None:
            text, note = decode_bytes(bytes(pending), pending_charset)
            if note:
                notes.append(f"encoded-word: {note}")
            out.append(text)
        pending_charset = None
        pending.clear()

    pos = 0
    for match in _EW_RE.finditer(value):
        between = value[pos : match.start()]
        if pending_charset is None or not (between == "" or between.isspace()):
            flush()
            out.append(_literal(between, notes))
        charset = match.group(1).lower()
        if pending_charset is not None and pending_charset != charset:
            flush()
        pending_charset = charset
        pending.extend(_word_bytes(match.group(2), match.group(3)))
        pos = match.end()
    tail = value[pos:]
    tail_match = _EW_TAIL_RE.search(tail)
    if tail_match:
        if pending_charset is None or tail[: tail_match.start()].strip():
            flush()
            out.append(_literal(tail[: tail_match.start()], notes))
        notes.append("unterminated encoded-word decoded anyway")
        charset = tail_match.group(1).lower()
        if pending_charset is not None and pending_charset != charset:
            flush()
        pending_charset = charset
        pending.extend(_word_bytes(tail_match.group(2), tail_match.group(3)))
        flush()
    else:
        flush()
        out.append(_literal(tail, notes))
    return "".join(out), notes
