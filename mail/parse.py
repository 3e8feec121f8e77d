"""Turn raw RFC 5322 bytes (as fetched over IMAP) into what the support desk needs.

Entry point: :func:`parse_mail`.  It never raises on arbitrary input except
:class:`MailParseError` when there is no header block at all; everything else
that is malformed is tolerated and described in ``ParsedMail.defects``.

Choices worth knowing:

* Charsets: see :mod:`mail.decode` for the fallback order
  (declared → UTF-8 → declared-with-replacement → mostly-UTF-8 → cp1252 → latin-1).
* ``text`` prefers text/plain; HTML-only mail is converted (:mod:`mail.html_text`).
  ``format=flowed`` plain text is un-flowed.  ``text`` is capped at
  :data:`TEXT_LIMIT` characters (a defect notes the cut); HTML input beyond
  ``mail.html_text.MAX_HTML_INPUT`` characters is not converted.
* ``visible_text``: :mod:`mail.quotes`.  Forwarded messages are kept.
* ``reply_to`` is the first valid Reply-To address, falling back to
  ``from_address`` — it is always "the address to answer" (None only when
  neither exists).  A Reply-To pointing at ``our_address`` is ignored.
* ``ticket_tag``: the FIRST ``[#123]`` in the subject wins.  Our outgoing
  subjects start with the tag, so the leftmost tag is the newest one the desk
  put there ("[#12] Re: [#345] …" → 12); customer "Re:"/"AW:" prefixes do not
  contain tags.
* ``message_id``/``in_reply_to``/``references`` keep their case and angle
  brackets; an id must contain "@" and no whitespace.  A bare ``id@host``
  without brackets is accepted (and noted).
* ``Attachment.content_id`` is stored without angle brackets (the ``cid:``
  URL form).  message/rfc822 parts become ``.eml`` attachments (their text is
  not merged into ``text``).
* ``auth``: only the leading run of Authentication-Results headers that share
  the first one's authserv-id is used (the receiving server prepends its own);
  several dkim results count as ``pass`` if any passed.
* ``automated``: the first matching rule gives the reason; checked in the
  order loop header, own address, Auto-Submitted, multipart/report,
  mailer-daemon/postmaster sender, ``Return-Path: <>``, Precedence,
  X-Precedence, X-Autoreply, X-Autorespond, X-Auto-Response-Suppress.
* ``broken``: the MIME structure itself was damaged (a header line without a colon, a
  multipart without a boundary, a boundary never closed).  The parser repairs what it can
  before reading: a header line without a colon is dropped (it would end the header block and
  push the real headers into the body), and a multipart without a boundary parameter gets the
  first ``--delimiter`` line of its body as its boundary.  The caller keeps the raw source
  for the agents, since the best decoded text may still miss something.
* ``bounce_of`` is filled for multipart/report; report-type=delivery-status
  and for mail from mailer-daemon/postmaster: Message-IDs from attached
  message/rfc822 or text/rfc822-headers parts, else ``Message-ID:`` lines in
  the text (non-MIME bounces), then the bounce's In-Reply-To/References.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email import errors
from email.message import Message
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import TypeVar

from mail.addresses import Mailbox, parse_mailboxes
from mail.decode import clip, decode_header, header_token, one_line, strip_comments, unescape_bytes
from mail.mime import POLICY, Attachment, Body, collect_body, str_param
from mail.quotes import visible_text

__all__ = [
    "TEXT_LIMIT",
    "Attachment",
    "AuthVerdict",
    "MailParseError",
    "ParsedMail",
    "parse_mail",
]

TEXT_LIMIT = 200_000
"""``ParsedMail.text`` is cut to this many characters (with a defect note)."""

_ID_RE = re.compile(r"<([^<>\s]{1,500})>")
_BARE_ID_RE = re.compile(r"[^<>\s,;()\"]{1,500}@[^<>\s,;()\"]{1,500}")
_TAG_RE = re.compile(r"\[#(\d{1,18})\]")
_QUOTED_RE = re.compile(r'"(?:[^"\\]|\\.)*"')
_AUTH_RE = re.compile(r"(?<![\w.])(spf|dkim|dmarc)(?:/\d+)?\s*=\s*([A-Za-z]+)", re.IGNORECASE)
_HEADER_ID_RE = re.compile(r"^[ \t>]*message-id:[ \t]*(<[^<>\s]{1,500}>)", re.IGNORECASE | re.M)
_BOUNCE_LOCALS = frozenset({"mailer-daemon", "postmaster"})
_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply", "auto-reply"})
_DELIMITER_RE = re.compile(rb"^--([0-9A-Za-z'()+_,./:=?-]{1,70})[ \t]*\r?$", re.M)
_CONTENT_TYPE_RE = re.compile(rb"^content-type:", re.IGNORECASE)
# Parser defects that mean the structure, not just a header's value, is damaged.
_STRUCTURAL = (
    errors.MissingHeaderBodySeparatorDefect,
    errors.NoBoundaryInMultipartDefect,
    errors.StartBoundaryNotFoundDefect,
    errors.CloseBoundaryNotFoundDefect,
    errors.MultipartInvariantViolationDefect,
    errors.FirstHeaderLineIsContinuationDefect,
)

_T = TypeVar("_T")


class MailParseError(Exception):
    """The input has no usable header block at all (e.g. empty bytes)."""


class AuthVerdict(Enum):
    PASS = "pass"  # noqa: S105 - not a password
    FAIL = "fail"
    NONE = "none"


@dataclass(frozen=True)
class ParsedMail:
    message_id: str | None
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    subject: str
    from_address: str | None
    from_name: str
    reply_to: str | None
    to: tuple[str, ...]
    date: datetime | None
    text: str
    visible_text: str
    attachments: tuple[Attachment, ...]
    automated: str | None
    bounce_of: tuple[str, ...]
    auth: AuthVerdict
    auth_detail: str
    ticket_tag: int | None
    defects: tuple[str, ...]
    broken: bool = False
    language: str | None = None  # the `Content-Language` header as sent (issue 16)


def _guard(defects: list[str], what: str, func: Callable[[], _T], default: _T) -> _T:
    """Run one extraction step; an unexpected failure becomes a defect, not an exception."""
    try:
        return func()
    except Exception as exc:
        defects.append(f"{what}: could not be read ({type(exc).__name__}); left empty")
        return default


def _headers(msg: Message, name: str) -> list[str]:
    return [str(value) for value in msg.get_all(name) or []]


def _first(msg: Message, name: str) -> str | None:
    values = _headers(msg, name)
    return values[0] if values else None


def _parse_bytes(raw: bytes, defects: list[str]) -> Message:
    data = raw.removeprefix(b"\xef\xbb\xbf")
    stripped = data.lstrip(b"\r\n\t ")
    if len(stripped) != len(data) and stripped:
        defects.append("blank lines or spaces before the headers were skipped")
    if not stripped:
        raise MailParseError("empty input: no header block")
    try:
        msg: Message = BytesParser(policy=POLICY).parsebytes(stripped)
    except Exception as exc:
        defects.append(f"MIME structure unreadable ({type(exc).__name__}); body taken as is")
        try:
            msg = BytesParser(policy=POLICY).parsebytes(stripped, headersonly=True)
        except Exception as inner:
            raise MailParseError("unreadable header block") from inner
    if not msg.keys():
        raise MailParseError("no header block")
    if _structure_broken(msg):
        mended = _repaired(stripped, defects)
        if mended is not None:
            with contextlib.suppress(Exception):
                again: Message = BytesParser(policy=POLICY).parsebytes(mended)
                if again.keys():
                    msg = again
    return msg


def _structure_broken(msg: Message) -> bool:
    """Whether any part of the parsed tree reports damaged MIME structure."""
    parts = [msg, *msg.walk()] if msg.is_multipart() else [msg]
    return any(isinstance(d, _STRUCTURAL) for part in parts[:MAX_WALK] for d in part.defects)


MAX_WALK = 500


def _repaired(raw: bytes, defects: list[str]) -> bytes | None:
    """The raw source with its header block mended, or None when there was nothing to mend."""
    match = re.search(rb"\r?\n\r?\n", raw)
    head, body = (raw[: match.start()], raw[match.start() :]) if match else (raw, b"")
    lines = head.splitlines(keepends=True)
    kept: list[bytes] = []
    changed = False
    for index, line in enumerate(lines):
        stripped = line.rstrip(b"\r\n")
        continuation = index > 0 and stripped[:1] in (b" ", b"\t")
        if not continuation and b":" not in stripped:
            shown = clip(stripped.decode("latin-1"))
            defects.append(f"header line without a colon dropped: '{shown}'")
            changed = True
            continue
        kept.append(line)
    ctype = next((i for i, line in enumerate(kept) if _CONTENT_TYPE_RE.match(line)), None)
    if ctype is not None:
        end = ctype + 1
        while end < len(kept) and kept[end][:1] in (b" ", b"\t"):
            end += 1
        value = b"".join(kept[ctype:end])
        lowered = value.lower()
        if b"multipart/" in lowered and b"boundary" not in lowered:
            found = _DELIMITER_RE.search(body)
            if found is not None:
                boundary = found.group(1)
                eol = b"\r\n" if value.endswith(b"\r\n") else b"\n"
                mended = value.rstrip(b"\r\n") + b'; boundary="' + boundary + b'"' + eol
                kept[ctype:end] = [mended]
                defects.append(
                    f"multipart without a boundary: took '{boundary.decode('ascii')}' from its body"
                )
                changed = True
    return b"".join(kept) + body if changed else None


def _message_ids(value: str | None, label: str, defects: list[str]) -> list[str]:
    if value is None:
        return []
    text = unescape_bytes(value)
    ids = [f"<{inner}>" for inner in _ID_RE.findall(text) if _valid_id(inner)]
    if not ids and "<" not in text:
        ids = [f"<{token}>" for token in _BARE_ID_RE.findall(text) if _valid_id(token)]
        if ids:
            defects.append(f"{label}: message id(s) without angle brackets accepted")
    if not ids and text.strip():
        defects.append(f"{label}: no valid message id in '{clip(text)}'")
    unique: list[str] = []
    for item in ids:
        if item not in unique:
            unique.append(item)
    return unique


def _valid_id(inner: str) -> bool:
    left, at, right = inner.rpartition("@")
    return bool(at and left and right) and inner.isascii() and inner.isprintable()


def _subject(value: str | None, defects: list[str]) -> str:
    if value is None:
        return ""
    decoded, notes = decode_header(value)
    defects.extend(f"Subject: {note}" for note in notes)
    return one_line(decoded)


def _ticket_tag(subject: str) -> int | None:
    for match in _TAG_RE.finditer(subject):
        number = int(match.group(1))
        if number > 0:
            return number
    return None


def _date(value: str | None, defects: list[str]) -> datetime | None:
    if value is None:
        defects.append("Date header missing")
        return None
    text = one_line(unescape_bytes(value))[:200]
    try:
        parsed = parsedate_to_datetime(text)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except Exception:
        defects.append(f"Date: could not parse '{clip(text)}'; left empty")
        return None


def _mailboxes(msg: Message, name: str, defects: list[str]) -> list[Mailbox]:
    found: list[Mailbox] = []
    for value in _headers(msg, name):
        if not value.isascii():
            defects.append(f"{name}: raw 8-bit bytes in header decoded")
        boxes = parse_mailboxes(value)
        for box in boxes:
            if box.messy:
                shown = clip(unescape_bytes(value))
                if box.address:
                    defects.append(f"{name}: malformed, took {box.address} out of '{shown}'")
                else:
                    defects.append(f"{name}: no valid address in '{shown}'")
        found.extend(boxes)
    return found


def _auth(values: list[str]) -> tuple[AuthVerdict, str]:
    if not values:
        return AuthVerdict.NONE, ""
    results: dict[str, list[str]] = {"spf": [], "dkim": [], "dmarc": []}
    first_id: str | None = None
    for value in values:
        text = _QUOTED_RE.sub('""', strip_comments(unescape_bytes(value)))
        head, _sep, rest = text.partition(";")
        tokens = head.split()
        server = tokens[0].lower() if tokens else ""
        if first_id is None:
            first_id = server
        elif server != first_id:
            break
        for method, result in _AUTH_RE.findall(rest if _sep else text):
            results[method.lower()].append(result.lower())
    spf = results["spf"][0] if results["spf"] else "none"
    dkims = results["dkim"]
    dkim = "pass" if "pass" in dkims else ("fail" if "fail" in dkims else (dkims or ["none"])[0])
    dmarc = results["dmarc"][0] if results["dmarc"] else "none"
    detail = f"spf={spf} dkim={dkim} dmarc={dmarc}"
    if spf in ("fail", "softfail", "permerror") or dkim == "fail" or dmarc == "fail":
        return AuthVerdict.FAIL, detail
    if dmarc == "pass" or (dkim == "pass" and spf == "pass"):
        return AuthVerdict.PASS, detail
    return AuthVerdict.NONE, detail


def _bounce_sender(boxes: list[Mailbox]) -> Mailbox | None:
    """The mailer-daemon/postmaster mailbox among From/Sender, if any."""
    for box in boxes:
        if box.token.split("@")[0].strip().lower() in _BOUNCE_LOCALS:
            return box
    return None


def _automated(  # noqa: PLR0911 - one return per documented rule
    msg: Message, sender: list[Mailbox], from_address: str | None, our: str, loop_header: str
) -> str | None:
    loop = _first(msg, loop_header)
    if loop is not None:
        return f"{loop_header}: {clip(loop)}" if clip(loop) else f"{loop_header} present"
    if from_address and our and from_address == our:
        return f"From our own address {our}"
    auto = _first(msg, "Auto-Submitted")
    if auto is not None and header_token(auto) != "no":
        return f"Auto-Submitted: {clip(auto)}"
    if msg.get_content_type() == "multipart/report":
        return "Content-Type: multipart/report"
    daemon = _bounce_sender(sender)
    if daemon is not None:
        return f"sender is {clip(daemon.address or daemon.token)}"
    if any("".join(header_token(v).split()) == "<>" for v in _headers(msg, "Return-Path")):
        return "Return-Path: <>"
    for name in ("Precedence", "X-Precedence"):
        value = _first(msg, name)
        if value is not None and header_token(value) in _PRECEDENCE:
            return f"{name}: {clip(value)}"
    for name in ("X-Autoreply", "X-Autorespond", "X-Auto-Response-Suppress"):
        value = _first(msg, name)
        if value is not None:
            return f"{name}: {clip(value)}" if clip(value) else f"{name} present"
    return None


def _bounce_ids(msg: Message, body: Body, own: str | None, defects: list[str]) -> list[str]:
    ids: list[str] = []
    for headers in body.embedded_headers:
        ids.extend(_message_ids(_first(headers, "Message-ID"), "bounced message", defects))
    if not ids:
        ids.extend(_HEADER_ID_RE.findall(body.text[:1_000_000]))
    ids.extend(_message_ids(_first(msg, "In-Reply-To"), "In-Reply-To", []))
    ids.extend(_message_ids(_first(msg, "References"), "References", []))
    unique: list[str] = []
    for item in ids:
        if item != own and item not in unique and _valid_id(item[1:-1]):
            unique.append(item)
    return unique


def parse_mail(
    raw: bytes,
    *,
    our_address: str,
    loop_header: str = "X-Supportbot-Loop",
    attachment_cap: int = 10 * 1024 * 1024,
) -> ParsedMail:
    """Parse one raw message.  Raises MailParseError only when there is no header block."""
    defects: list[str] = []
    msg = _parse_bytes(bytes(raw), defects)
    broken = _guard(defects, "MIME structure", lambda: _broken(bytes(raw), msg), True)
    our = our_address.strip().strip("<>").strip().lower()

    def ids(name: str) -> list[str]:
        return _message_ids(_first(msg, name), name, defects)

    message_id_list: list[str] = _guard(defects, "Message-ID", lambda: ids("Message-ID"), [])
    if _first(msg, "Message-ID") is None:
        defects.append("Message-ID missing")
    message_id = message_id_list[0] if message_id_list else None
    in_reply_to: list[str] = _guard(defects, "In-Reply-To", lambda: ids("In-Reply-To"), [])
    references: list[str] = _guard(defects, "References", lambda: ids("References"), [])
    subject = _guard(defects, "Subject", lambda: _subject(_first(msg, "Subject"), defects), "")
    senders: list[Mailbox] = _guard(defects, "From", lambda: _mailboxes(msg, "From", defects), [])
    if not _headers(msg, "From"):
        defects.append("From header missing")
    extra: list[Mailbox] = _guard(defects, "Sender", lambda: _mailboxes(msg, "Sender", []), [])
    sender_boxes = senders + extra
    first_from = next((box for box in senders if box.address), senders[0] if senders else None)
    from_address = first_from.address if first_from else None
    from_name = first_from.name if first_from else ""
    reply_boxes: list[Mailbox] = _guard(
        defects, "Reply-To", lambda: _mailboxes(msg, "Reply-To", defects), []
    )
    reply_to = next((box.address for box in reply_boxes if box.address), None)
    if reply_to is not None and our and reply_to == our:
        defects.append("Reply-To points at our own address; ignored")
        reply_to = None
    reply_to = reply_to or from_address
    to_boxes: list[Mailbox] = _guard(defects, "To", lambda: _mailboxes(msg, "To", defects), [])
    to = tuple(dict.fromkeys(box.address for box in to_boxes if box.address))
    date = _guard(defects, "Date", lambda: _date(_first(msg, "Date"), defects), None)
    body = _guard(
        defects,
        "body",
        lambda: collect_body(msg, attachment_cap=attachment_cap, text_limit=TEXT_LIMIT),
        Body(),
    )
    defects.extend(body.defects)
    automated = _guard(
        defects,
        "automation check",
        lambda: _automated(msg, sender_boxes, from_address, our, loop_header),
        None,
    )
    bounce: list[str] = []
    report_type = _guard(defects, "report-type", lambda: str_param(msg, "report-type"), "")
    is_report = msg.get_content_type() == "multipart/report" and report_type == "delivery-status"
    if is_report or _bounce_sender(sender_boxes) is not None:
        bounce = _guard(defects, "bounce", lambda: _bounce_ids(msg, body, message_id, defects), [])
    visible = _guard(defects, "visible text", lambda: visible_text(body.text), body.text)
    auth, auth_detail = _guard(
        defects,
        "Authentication-Results",
        lambda: _auth(_headers(msg, "Authentication-Results")),
        (AuthVerdict.NONE, ""),
    )
    language = _guard(defects, "Content-Language", lambda: _first(msg, "Content-Language"), None)
    return ParsedMail(
        message_id=message_id,
        in_reply_to=tuple(in_reply_to),
        references=tuple(references),
        subject=subject,
        from_address=from_address,
        from_name=from_name,
        reply_to=reply_to,
        to=to,
        date=date,
        text=body.text,
        visible_text=visible,
        attachments=tuple(body.attachments),
        automated=automated,
        bounce_of=tuple(bounce),
        auth=auth,
        auth_detail=auth_detail,
        ticket_tag=_ticket_tag(subject),
        defects=tuple(dict.fromkeys(defects)),
        broken=broken,
        language=language,
    )


def _broken(raw: bytes, msg: Message) -> bool:
    """Damaged structure, in the source as received (a mended parse still counts)."""
    if _structure_broken(msg):
        return True
    first: Message = BytesParser(policy=POLICY).parsebytes(raw.lstrip(b"\r\n\t "))
    return _structure_broken(first)
