"""Build the mail the desk sends: threading headers, a text and an HTML part, no header injection.

Every value that reaches a header goes through :func:`header_text` (CR, LF and every other control
or line-separator character become a space) or is checked as an address or a Message-ID, and the
message is serialised with ``email.policy.SMTP``, which refuses a header value that still holds a
line break. Message-IDs in ``Message-ID``, ``In-Reply-To`` and ``References`` are folded only
between ids: the standard policy would turn a long id into an RFC 2047 encoded word, which breaks
threading in every mail client.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address, BaseHeader, HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from pathlib import Path
from typing import Any, cast

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateNotFound

__all__ = [
    "LOOP_HEADER",
    "ComposeError",
    "FileData",
    "MailTemplates",
    "OutgoingMail",
    "build_message",
    "check_address",
    "header_text",
    "message_id",
    "paragraphs",
    "to_bytes",
]

LOOP_HEADER = "X-Supportbot-Loop"
SUBJECT_LIMIT = 900
_BREAKS_RE = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")
_SPACES_RE = re.compile(r" {2,}")
_ID_RE = re.compile(r"<[!-;=?-~]{1,900}@[!-;=?-~]{1,900}>")  # printable ASCII without < > or space
_ADDRESS_RE = re.compile(
    r"[^\s\x00-\x1f\x7f@<>()\[\],;:\"\\]{1,64}@[^\s\x00-\x1f\x7f@<>()\[\],;:\"\\]{1,255}"
)
_HEADER_NAME_RE = re.compile(r"[!-9;-~]{1,76}")
_ID_HEADERS = ("message-id", "in-reply-to", "references")


class ComposeError(ValueError):
    """The row cannot become a mail (a bad address or Message-ID); retrying will not help."""


@dataclass(frozen=True)
class FileData:
    """An attachment's bytes, as a loader hands them over."""

    filename: str
    mime_type: str
    data: bytes


@dataclass(frozen=True)
class OutgoingMail:
    """Everything one outgoing mail says, already checked and rendered."""

    sender: str
    sender_name: str
    recipient: str
    subject: str
    message_id: str
    in_reply_to: str | None
    references: tuple[str, ...]
    text: str
    html: str | None
    date: datetime
    automatic: bool = False
    attachments: tuple[FileData, ...] = ()


class _MessageIdListHeader(UnstructuredHeader):
    """A header of Message-IDs: folded between ids, never turned into encoded words."""

    max_count = 1
    name: str  # provided by email.headerregistry.BaseHeader, which the registry mixes in

    def fold(self, *, policy: Any) -> str:
        linesep = str(policy.linesep)
        lines: list[str] = []
        line = f"{self.name}:"
        for word in str(self).split():
            if len(line) + 1 + len(word) > 78 and line != f"{self.name}:":
                lines.append(line)
                line = ""
            line += f" {word}"
        lines.append(line)
        return linesep.join(lines) + linesep


def _registry() -> HeaderRegistry:
    registry = HeaderRegistry()
    for name in _ID_HEADERS:
        registry.map_to_type(name, cast("type[BaseHeader]", _MessageIdListHeader))
    return registry


POLICY = SMTP.clone(header_factory=_registry())


def header_text(value: object, limit: int = SUBJECT_LIMIT) -> str:
    """One line of header text: a customer's CR/LF can never start a header of its own."""
    text = _BREAKS_RE.sub(" ", str(value))
    return _SPACES_RE.sub(" ", text).strip()[:limit]


def message_id(value: object) -> str | None:
    """The Message-ID if it is one we can put in a header unchanged, else None."""
    if not isinstance(value, str):
        return None
    candidate = value.strip()
    return candidate if _ID_RE.fullmatch(candidate) else None


def check_address(value: str) -> str:
    """A bare address fit for the envelope and the To header; raises ComposeError otherwise."""
    address = value.strip()
    if not _ADDRESS_RE.fullmatch(address):
        raise ComposeError(f"not a deliverable email address: {header_text(value, 200)!r}")
    local, _, domain = address.rpartition("@")
    if not local.isascii():
        raise ComposeError(f"{address!r} needs SMTPUTF8, which supportbot does not send")
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            raise ComposeError(f"{address!r} has a domain that cannot be encoded") from None
    return f"{local}@{domain}"


def paragraphs(text: str) -> list[list[str]]:
    """Text as paragraphs of lines, so an HTML template can lay it out without raw markup."""
    blocks: list[list[str]] = []
    current: list[str] = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if line.strip():
            current.append(line)
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


def build_message(mail: OutgoingMail, *, loop_header: str = LOOP_HEADER) -> EmailMessage:
    """The MIME message for one mail: text/plain, an HTML alternative, then any attachments."""
    if not _HEADER_NAME_RE.fullmatch(loop_header):
        raise ComposeError(f"not a header name: {loop_header!r}")
    own_id = message_id(mail.message_id)
    if own_id is None:
        raise ComposeError(f"not a usable Message-ID: {header_text(mail.message_id, 200)!r}")
    sender = check_address(mail.sender)
    recipient = check_address(mail.recipient)
    msg = EmailMessage(policy=POLICY)
    msg["From"] = Address(display_name=header_text(mail.sender_name, 200), addr_spec=sender)
    msg["To"] = Address(addr_spec=recipient)
    msg["Subject"] = header_text(mail.subject)
    msg["Date"] = format_datetime(mail.date)
    msg["Message-ID"] = own_id
    parent = message_id(mail.in_reply_to)
    if parent is not None:
        msg["In-Reply-To"] = parent
    references = _unique(message_id(item) for item in mail.references)
    if parent is not None and parent not in references:
        references.append(parent)
    if references:
        msg["References"] = " ".join(references)
    if mail.automatic:
        msg["Auto-Submitted"] = "auto-generated"
        msg["X-Auto-Response-Suppress"] = "All"
    msg[loop_header] = header_text(sender, 200)
    msg.set_content(_lines(mail.text), charset="utf-8")
    if mail.html is not None:
        msg.add_alternative(_lines(mail.html), subtype="html", charset="utf-8")
    for item in mail.attachments:
        maintype, _, subtype = item.mime_type.partition("/")
        if not (maintype and subtype) or maintype == "multipart":
            maintype, subtype = "application", "octet-stream"
        msg.add_attachment(
            item.data,
            maintype=header_text(maintype, 100),
            subtype=header_text(subtype, 100),
            filename=header_text(item.filename, 200) or "attachment",
        )
    return msg


def to_bytes(msg: EmailMessage) -> bytes:
    """The wire form: CRLF line ends, headers folded by the SMTP policy."""
    return msg.as_bytes(policy=POLICY)


def _lines(text: str) -> str:
    body = text.replace("\r\n", "\n").replace("\r", "\n")
    return body if body.endswith("\n") else body + "\n"


def _unique(items: Iterable[str | None]) -> list[str]:
    found: list[str] = []
    for item in items:
        if item is not None and item not in found:
            found.append(item)
    return found


class MailTemplates:
    """Renders `mail/<kind>.txt` and `mail/<kind>.html` (HTML autoescaped); `reply` by default."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        loader = FileSystemLoader(directory)
        self._text = Environment(
            loader=loader,
            undefined=StrictUndefined,
            autoescape=False,  # noqa: S701 - text/plain; the HTML environment escapes
            trim_blocks=True,
            keep_trailing_newline=False,
        )
        self._html = Environment(
            loader=loader, undefined=StrictUndefined, autoescape=True, trim_blocks=True
        )

    def render(self, kind: str, context: Mapping[str, Any]) -> tuple[str, str]:
        """The text and the HTML body for one kind of mail."""
        values = {**context, "paragraphs": paragraphs(str(context.get("text", "")))}
        text = self._pick(self._text, kind, "txt").render(**values).strip() + "\n"
        html = self._pick(self._html, kind, "html").render(**values).strip() + "\n"
        return text, html

    def _pick(self, env: Environment, kind: str, suffix: str) -> Any:
        names: Sequence[str] = (f"mail/{kind}.{suffix}", f"mail/reply.{suffix}")
        for name in names:
            try:
                return env.get_template(name)
            except TemplateNotFound:
                continue
        raise FileNotFoundError(f"template mail/reply.{suffix} is missing from {self.directory}")
