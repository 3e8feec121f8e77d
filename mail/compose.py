"""Build the mail the desk sends: threading headers, a text and an HTML part, no header injection.

Every value that reaches a header goes through :func:`header_text` (CR, LF and every other control
or line-separator character become a space) or is checked as an address or a Message-ID, so no
value can start a header of its own. :mod:`mail.wire` writes the bytes. Message-IDs in
``Message-ID``, ``In-Reply-To`` and ``References`` are folded only between ids and never encoded:
an encoded id breaks threading in every mail client.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateNotFound

from mail import wire
from tickets import languages
from tickets.ports import FileData

__all__ = [
    "LOOP_HEADER",
    "ComposeError",
    "MailTemplates",
    "OutgoingMail",
    "check_address",
    "header_text",
    "message_bytes",
    "message_id",
    "paragraphs",
]

LOOP_HEADER = "X-Supportbot-Loop"
SUBJECT_LIMIT = 900
_BREAKS_RE = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")
_SPACES_RE = re.compile(r" {2,}")
_ID_RE = re.compile(r"<[!-;=?-~]{1,900}@[!-;=?-~]{1,900}>")  # printable ASCII without < > or space
_ID_LIMIT = 900  # an id must fit on a header line (998 characters)
_ADDRESS_RE = re.compile(
    r"[^\s\x00-\x1f\x7f@<>()\[\],;:\"\\]{1,64}@[^\s\x00-\x1f\x7f@<>()\[\],;:\"\\]{1,255}"
)
_HEADER_NAME_RE = re.compile(r"[!-9;-~]{1,76}")


class ComposeError(ValueError):
    """The row cannot become a mail (a bad address or Message-ID); retrying will not help."""


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


def header_text(value: object, limit: int = SUBJECT_LIMIT) -> str:
    """One line of header text: a customer's CR/LF can never start a header of its own."""
    text = _BREAKS_RE.sub(" ", str(value))
    return _SPACES_RE.sub(" ", text).strip()[:limit]


def message_id(value: object) -> str | None:
    """The Message-ID if it is one we can put in a header unchanged, else None."""
    if not isinstance(value, str):
        return None
    candidate = value.strip()
    if len(candidate) > _ID_LIMIT or not _ID_RE.fullmatch(candidate):
        return None
    return candidate


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


def message_bytes(mail: OutgoingMail, *, loop_header: str = LOOP_HEADER) -> bytes:
    """The wire form of one mail: text/plain, an HTML alternative, then any attachments."""
    if not _HEADER_NAME_RE.fullmatch(loop_header):
        raise ComposeError(f"not a header name: {loop_header!r}")
    own_id = message_id(mail.message_id)
    if own_id is None:
        raise ComposeError(f"not a usable Message-ID: {header_text(mail.message_id, 200)!r}")
    sender = check_address(mail.sender)
    recipient = check_address(mail.recipient)
    head = [
        wire.address_header("From", sender, header_text(mail.sender_name, 200)),
        wire.address_header("To", recipient),
        wire.header("Subject", header_text(mail.subject)),
        wire.header("Date", format_datetime(mail.date)),
        wire.id_header("Message-ID", [own_id]),
    ]
    parent = message_id(mail.in_reply_to)
    if parent is not None:
        head.append(wire.id_header("In-Reply-To", [parent]))
    references = _unique(message_id(item) for item in mail.references)
    if parent is not None and parent not in references:
        references.append(parent)
    if references:
        head.append(wire.id_header("References", references))
    if mail.automatic:
        head.append(wire.header("Auto-Submitted", "auto-generated"))
        head.append(wire.header("X-Auto-Response-Suppress", "All"))
    head.append(wire.header(loop_header, header_text(sender, 200)))
    head.append(wire.header("MIME-Version", "1.0"))
    body = wire.text_part(mail.text, "plain")
    if mail.html is not None:
        body = wire.multipart("alternative", [body, wire.text_part(mail.html, "html")])
    if mail.attachments:
        files = [
            wire.attachment_part(
                item.data,
                header_text(item.mime_type, 200),
                header_text(item.filename, 200) or "attachment",
            )
            for item in mail.attachments
        ]
        body = wire.multipart("mixed", [body, *files])
    return b"".join(head) + body.to_bytes()


def _unique(items: Iterable[str | None]) -> list[str]:
    found: list[str] = []
    for item in items:
        if item is not None and item not in found:
            found.append(item)
    return found


class MailTemplates:
    """Renders `mail/<kind>.txt` and `mail/<kind>.html` (HTML autoescaped); `reply` by default.
    The frame around the text (the footer with the ticket tag) is in the customer's locale."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._loader = FileSystemLoader(directory)
        self._envs: dict[str, tuple[Environment, Environment]] = {}

    def _environments(self, locale: str) -> tuple[Environment, Environment]:
        envs = self._envs.get(locale)
        if envs is None:
            catalog = languages.translations(self.directory, locale)
            text = Environment(
                loader=self._loader,
                undefined=StrictUndefined,
                autoescape=False,  # noqa: S701 - text/plain; the HTML environment escapes
                trim_blocks=True,
                keep_trailing_newline=False,
                extensions=["jinja2.ext.i18n"],
            )
            html = Environment(
                loader=self._loader,
                undefined=StrictUndefined,
                autoescape=True,
                trim_blocks=True,
                extensions=["jinja2.ext.i18n"],
            )
            for env in (text, html):
                env.install_gettext_translations(catalog, newstyle=True)  # type: ignore[attr-defined]
                env.globals["locale"] = locale
            envs = self._envs[locale] = (text, html)
        return envs

    def render(
        self, kind: str, context: Mapping[str, Any], locale: str | None = None
    ) -> tuple[str, str]:
        """The text and the HTML body for one kind of mail."""
        text_env, html_env = self._environments(languages.choose(locale))
        values = {**context, "paragraphs": paragraphs(str(context.get("text", "")))}
        text = self._pick(text_env, kind, "txt").render(**values).strip() + "\n"
        html = self._pick(html_env, kind, "html").render(**values).strip() + "\n"
        return text, html

    def _pick(self, env: Environment, kind: str, suffix: str) -> Any:
        names: Sequence[str] = (f"mail/{kind}.{suffix}", f"mail/reply.{suffix}")
        for name in names:
            try:
                return env.get_template(name)
            except TemplateNotFound:
                continue
        raise FileNotFoundError(f"template mail/reply.{suffix} is missing from {self.directory}")
