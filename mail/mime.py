"""Walk a parsed MIME tree: pick the readable body, collect attachments.

* multipart/alternative: the first non-blank inline text/plain child wins,
  else the last child carrying HTML; the other alternatives' text is dropped
  (their images etc. still become attachments);
* multipart/related: text only from the root part (``start`` parameter or
  the first part); the rest are (usually inline, ``cid:``) attachments;
* any other multipart (mixed, report, signed, …): inline text parts are
  concatenated in order, everything else is an attachment;
* a text/plain or text/html leaf is body text unless it has a filename or
  ``Content-Disposition: attachment``;
* message/* parts (forwarded mail, bounce copies) become ``.eml``/``.txt``
  attachments and their header blocks are kept for bounce matching.

The walk is bounded: :data:`MAX_DEPTH` levels, :data:`MAX_PARTS` parts.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from email.parser import HeaderParser
from email.policy import Compat32
from typing import TypeVar

from mail.decode import b64decode_lenient, clip, decode_bytes, decode_header, header_token
from mail.html_text import MAX_HTML_INPUT, html_to_text

__all__ = ["MAX_DEPTH", "MAX_PARTS", "POLICY", "Attachment", "Body", "collect_body", "str_param"]

MAX_DEPTH = 40
MAX_PARTS = 500
_PARAM_HEADERS = frozenset({"content-type", "content-disposition"})
_PARAM_HEADER_LIMIT = 2000
_HEADER_PARTS = frozenset(
    {"text/rfc822-headers", "message/rfc822-headers", "message/global-headers"}
)
_EMBEDDED = frozenset({"message/rfc822", "message/global", "message/news"})
_EXTENSIONS = {
    "text/plain": ".txt",
    "text/html": ".html",
    "text/calendar": ".ics",
    "text/csv": ".csv",
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/gif": ".gif",
    "image/webp": ".webp",
    "application/pdf": ".pdf",
    "application/zip": ".zip",
    "message/rfc822": ".eml",
    "message/global": ".eml",
    "message/delivery-status": ".txt",
    "text/rfc822-headers": ".txt",
    "application/pgp-signature": ".asc",
}
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_TRAILING_WS_RE = re.compile(r"(?m)(?<!^--)[ \t]+$")
_KNOWN_CTE = frozenset(
    {"", "7bit", "8bit", "binary", "quoted-printable", "x-uuencode", "uuencode", "uue", "x-uue"}
)
_T = TypeVar("_T")
_UNSAFE_NAME = str.maketrans({c: "_" for c in '<>:"|?*'})


class _RawPolicy(Compat32):
    """compat32 that hands header values back untouched (we decode them ourselves)
    and caps parameter headers, whose stdlib parsing is quadratic in the worst case."""

    def header_source_parse(self, sourcelines: list[str]) -> tuple[str, str]:
        name, value = super().header_source_parse(sourcelines)
        if name.strip().lower() in _PARAM_HEADERS and len(value) > _PARAM_HEADER_LIMIT:
            value = value[:_PARAM_HEADER_LIMIT]
        return name, value

    def header_fetch_parse(self, name: str, value: str) -> str:
        return value


POLICY = _RawPolicy()


@dataclass(frozen=True)
class Attachment:
    """One attachment.  ``data`` is None when ``size`` exceeds the cap;
    ``content_id`` has no angle brackets (the ``cid:`` URL form)."""

    filename: str
    content_type: str
    size: int
    data: bytes | None
    inline: bool
    content_id: str | None


@dataclass
class Body:
    text: str = ""
    attachments: list[Attachment] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    embedded_headers: list[Message] = field(default_factory=list)


def _safe(func: Callable[[], _T], default: _T) -> _T:
    """Call a compat32 accessor that can raise on hostile input (odd charsets, NULs…)."""
    try:
        return func()
    except Exception:
        return default


def _raw_param(part: Message, name: str) -> str:
    value = _safe(lambda: part.get_param(name), None)
    return value.strip() if isinstance(value, str) else ""


def _filename(part: Message) -> str | None:
    name = _safe(part.get_filename, None)
    if name is None:  # RFC 2231 decoding failed: take the raw parameter text
        raw = _safe(lambda: part.get_param("filename", header="content-disposition"), None)
        raw = raw or _safe(lambda: part.get_param("name"), None)
        name = raw[2] if isinstance(raw, tuple) else raw
    return name if isinstance(name, str) else None


def str_param(part: Message, name: str) -> str:
    return header_token(_raw_param(part, name))


def _unflow(text: str, delsp: bool) -> str:
    """Undo RFC 3676 format=flowed soft line breaks."""
    out: list[str] = []
    para: list[str] = []
    depth = -1
    for line in text.split("\n"):
        content = line.lstrip(">")
        level = len(line) - len(content)
        content = content.removeprefix(" ")
        if para and level != depth:
            out.append(">" * depth + (" " if depth else "") + "".join(para))
            para = []
        depth = level
        if content.endswith(" ") and content != "-- ":
            para.append(content[:-1] if delsp else content)
            continue
        para.append(content)
        out.append(">" * depth + (" " if depth else "") + "".join(para))
        para = []
    if para:
        out.append(">" * depth + (" " if depth else "") + "".join(para))
    return "\n".join(out)


def _clean_filename(raw: str | None, content_type: str, number: int) -> str:
    name = ""
    if raw:
        decoded, _notes = decode_header(raw)
        name = decoded.replace("\\", "/").rsplit("/", 1)[-1]
        name = "".join(ch for ch in name if unicodedata.category(ch)[0] not in "CZ" or ch == " ")
        name = " ".join(name.translate(_UNSAFE_NAME).split()).strip(". ")
        if len(name) > 200:
            stem, dot, ext = name.rpartition(".")
            name = stem[: 199 - len(ext)] + dot + ext if dot and len(ext) <= 10 else name[:200]
    return name or f"attachment-{number}{_EXTENSIONS.get(content_type, '.bin')}"


def _content_id(value: str | None) -> str | None:
    if value is None:
        return None
    cid = value.strip().removeprefix("<").removesuffix(">").strip()
    ok = 0 < len(cid) <= 250 and cid.isascii() and cid.isprintable() and " " not in cid
    return cid if ok else None


def _defect_note(defect: object) -> str:
    doc = (type(defect).__doc__ or "").strip().split("\n")[0]
    return f"MIME: {doc or type(defect).__name__}"


class _Collector:
    def __init__(self, attachment_cap: int, text_limit: int) -> None:
        self.cap = attachment_cap
        self.text_limit = text_limit
        self.body = Body()
        self.segments: list[str] = []
        self.text_size = 0
        self.parts = 0
        self.cache: dict[int, str] = {}

    def note(self, text: str) -> None:
        if text not in self.body.defects:
            self.body.defects.append(text)

    def payload(self, part: Message) -> bytes:
        """Transfer-decoded bytes of a leaf part (lenient base64; raw 8-bit bytes kept)."""
        cte = header_token(part.get("content-transfer-encoding"))
        if cte == "base64":
            # The str payload is the raw base64 text.  compat32 re-decodes bodies with
            # 8-bit junk using the charset parameter, which can raise: then fall back
            # to its own (stricter) base64 decoding.
            payload = _safe(part.get_payload, None)
            if isinstance(payload, str):
                data, note = b64decode_lenient(payload.encode("utf-8", "surrogateescape"))
                if note:
                    self.note(f"body part {part.get_content_type()}: {note}")
                return data
        if cte not in _KNOWN_CTE:
            self.note(f"unknown Content-Transfer-Encoding '{clip(cte)}'; body used as is")
        # compat32 returns the original bytes for 7bit/8bit/binary/unknown, and
        # decodes quoted-printable (binascii, tolerant) and uuencode itself.
        decoded = _safe(lambda: part.get_payload(decode=True), None)
        return decoded if isinstance(decoded, bytes) else b""

    def decoded_text(self, part: Message) -> str:
        key = id(part)
        if key not in self.cache:
            charset = _safe(part.get_content_charset, None)
            text, note = decode_bytes(self.payload(part), charset)
            if note:
                self.note(f"{part.get_content_type()} body: {note}")
            text = _CONTROL_RE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
            self.cache[key] = text.replace("\u2028", "\n").replace("\u2029", "\n\n")
        return self.cache[key]

    def add_text(self, part: Message, content_type: str) -> None:
        room = self.text_limit - self.text_size
        if room <= 0:
            self.note(f"text cut at {self.text_limit} characters")
            return
        text = self.decoded_text(part)
        if content_type == "text/html":
            if len(text) > MAX_HTML_INPUT:
                self.note(f"HTML body longer than {MAX_HTML_INPUT} characters; rest not converted")
            text, cut = html_to_text(text, max_chars=room)
            if cut:
                self.note(f"text cut at {self.text_limit} characters")
        elif str_param(part, "format") == "flowed":
            text = _unflow(text, str_param(part, "delsp") == "yes")
        text = _TRAILING_WS_RE.sub("", text).strip("\n")
        if len(text) > room:
            text = text[:room]
            self.note(f"text cut at {self.text_limit} characters")
        if text.strip():
            self.segments.append(text)
            self.text_size += len(text) + 2

    def attach(self, part: Message, content_type: str, data: bytes) -> None:
        number = len(self.body.attachments) + 1
        filename = _clean_filename(_filename(part), content_type, number)
        disposition = part.get_content_disposition()
        cid = _content_id(part.get("content-id"))
        size = len(data)
        if size > self.cap:
            self.note(f"attachment {filename} ({size} bytes) is over the size cap; data dropped")
        self.body.attachments.append(
            Attachment(
                filename=filename,
                content_type=content_type,
                size=size,
                data=data if size <= self.cap else None,
                inline=disposition == "inline" or (disposition is None and cid is not None),
                content_id=cid,
            )
        )

    def is_text_body(self, part: Message) -> bool:
        return (
            part.get_content_type() in ("text/plain", "text/html")
            and part.get_content_disposition() != "attachment"
            and not _filename(part)
        )

    def choose(self, children: list[Message]) -> int:
        html: int | None = None
        for index, child in enumerate(children):
            content_type = child.get_content_type()
            if content_type == "text/plain" and self.is_text_body(child):
                if self.decoded_text(child).strip():
                    return index
            elif content_type == "text/html" or content_type.startswith("multipart/"):
                html = index
        return html if html is not None else len(children) - 1

    def note_defects(self, part: Message) -> None:
        for defect in part.defects:
            self.note(_defect_note(defect))
        if len(part.get("content-type") or "") >= _PARAM_HEADER_LIMIT:
            self.note(f"Content-Type header longer than {_PARAM_HEADER_LIMIT} characters; cut")

    def visit(self, part: Message, depth: int, mode: str) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            self.note(f"more than {MAX_PARTS} MIME parts; the rest were ignored")
            return
        self.note_defects(part)
        content_type = part.get_content_type()
        if part.is_multipart():
            payload = part.get_payload()
            if depth >= MAX_DEPTH:
                self.note(f"MIME nesting deeper than {MAX_DEPTH} levels; inner parts ignored")
                return
            children = [child for child in payload if isinstance(child, Message)]
            if content_type.startswith("message/") or not content_type.startswith("multipart/"):
                self.attach_message(part, content_type, children)
            else:
                self.visit_children(part, content_type, children, depth, mode)
            return
        if content_type.startswith("multipart/"):
            self.note(f"{content_type} without usable parts; shown as plain text")
            if mode == "body":
                self.add_text(part, "text/plain")
            return
        if self.is_text_body(part):
            if mode == "body":
                self.add_text(part, content_type)
            if mode != "attach":
                return
        data = self.payload(part)
        if content_type in _HEADER_PARTS:
            text, _note = decode_bytes(data, None)
            self.body.embedded_headers.append(HeaderParser(policy=POLICY).parsestr(text))
        self.attach(part, content_type, data)

    def visit_children(
        self, part: Message, content_type: str, children: list[Message], depth: int, mode: str
    ) -> None:
        modes = [mode] * len(children)
        if content_type == "multipart/alternative" and children:
            chosen = self.choose(children)
            modes = [mode if index == chosen else "skip" for index in range(len(children))]
        elif content_type == "multipart/related" and children:
            start = _content_id(_raw_param(part, "start") or None)
            ids = [_content_id(child.get("content-id")) for child in children]
            root = ids.index(start) if start and start in ids else 0
            modes = [mode if index == root else "attach" for index in range(len(children))]
        for child, child_mode in zip(children, modes, strict=True):
            self.visit(child, depth + 1, child_mode)

    def attach_message(self, part: Message, content_type: str, children: list[Message]) -> None:
        if content_type in _EMBEDDED and children:
            self.body.embedded_headers.append(children[0])
        chunks: list[bytes] = []
        for child in children:
            try:
                chunks.append(child.as_bytes())
            except Exception:
                self.note(f"{content_type} part could not be re-serialised; left out")
        self.attach(part, content_type, b"\n".join(chunks))


def collect_body(msg: Message, *, attachment_cap: int, text_limit: int) -> Body:
    """Body text (plain preferred, HTML converted) and attachments of *msg*."""
    collector = _Collector(attachment_cap, text_limit)
    collector.visit(msg, 0, "body")
    body = collector.body
    body.text = "\n\n".join(collector.segments).strip()
    return body
