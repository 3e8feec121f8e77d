"""The mail we write reads back, through the standard library's parser, as exactly what we meant.

`mail.wire` writes the bytes by hand, so these tests hold it to what a mail client sees: headers
decode to the values given, bodies to the texts, attachments to their bytes and names; no line
passes 998 characters, every line ends in CRLF, and no value can add a header.
"""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.message import EmailMessage, MIMEPart

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mail.compose import OutgoingMail, header_text, message_bytes
from tickets.ports import FileData

SUPPORT = "support@example.com"
_text = st.text(st.characters(codec="utf-8"), max_size=300)
_file = st.builds(
    FileData,
    filename=_text,
    mime_type=st.sampled_from(["application/pdf", "image/png", "text/plain", "multipart/x", "x"]),
    data=st.binary(max_size=500),
)


def _mail(**changes: object) -> OutgoingMail:
    values: dict[str, object] = {
        "sender": SUPPORT,
        "sender_name": "Support",
        "recipient": "ann@example.org",
        "subject": "[#7] Re: Help",
        "message_id": "<reply-7@example.com>",
        "in_reply_to": "<q-1@example.org>",
        "references": ("<q-0@example.org>",),
        "text": "Hello Ann,\n\nthe refund is on its way.\n",
        "html": "<p>Hello Ann,</p><p>the refund is on its way.</p>\n",
        "date": datetime(2026, 11, 24, 9, 30, tzinfo=UTC),
    }
    values.update(changes)
    return OutgoingMail(**values)  # type: ignore[arg-type]


def _parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def _display_name(data: bytes) -> str:
    """The From header's display name, decoded by RFC 2047's rules.

    (The stdlib's address parser keeps a space between adjacent encoded words, which RFC 2047
    6.2 says to drop, so it misreads long names, its own included; `decode_header` does not.)
    """
    raw = email.message_from_bytes(data, policy=email.policy.compat32)["From"]
    unfolded = re.sub(r"\r\n(?=[ \t])", "", raw)
    if unfolded == SUPPORT:
        return ""
    phrase = unfolded.removesuffix(f" <{SUPPORT}>")
    if phrase.startswith("=?"):
        return str(make_header(decode_header(phrase)))
    if phrase.startswith('"'):
        return re.sub(r"\\(.)", r"\1", phrase[1:-1])
    return phrase


def _check_lines(data: bytes) -> None:
    assert data.isascii()
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert b"\r" not in data.replace(b"\r\n", b"")
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))
    head = data.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n"):
        assert line.strip(b" "), "a header line of nothing but spaces"


def _content(part: MIMEPart | None) -> str:
    """A text part's content with the wire's CRLF line ends read as newlines, as clients do."""
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def _body(text: str) -> str:
    lines = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = lines.encode("utf-8", "replace").decode("utf-8")
    return lines if lines.endswith("\n") else lines + "\n"


def test_a_reply_reads_back_header_by_header() -> None:
    data = message_bytes(_mail(automatic=True))
    _check_lines(data)
    message = _parse(data)
    assert message["From"] == f"Support <{SUPPORT}>"
    assert message["To"] == "ann@example.org"
    assert message["Subject"] == "[#7] Re: Help"
    assert message["Date"].datetime == datetime(2026, 11, 24, 9, 30, tzinfo=UTC)
    assert message["Message-ID"] == "<reply-7@example.com>"
    assert message["In-Reply-To"] == "<q-1@example.org>"
    assert message["References"].split() == ["<q-0@example.org>", "<q-1@example.org>"]
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["X-Supportbot-Loop"] == SUPPORT
    assert message.get_content_type() == "multipart/alternative"
    plain = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert _content(plain) == "Hello Ann,\n\nthe refund is on its way.\n"
    assert plain is not None and plain["Content-Transfer-Encoding"] == "7bit"
    assert _content(html) == "<p>Hello Ann,</p><p>the refund is on its way.</p>\n"
    assert not message.defects


def test_non_ascii_names_subjects_and_bodies_are_encoded_and_read_back() -> None:
    mail = _mail(
        sender_name="Служба поддержки",
        subject="[#7] Re: Grüße — 返金について " + "длинная тема " * 10,
        text="Здравствуйте!\n\n" + "деньги вернутся " * 30,
        html=None,
    )
    data = message_bytes(mail)
    _check_lines(data)
    message = _parse(data)
    assert _display_name(data) == "Служба поддержки"
    assert message["Subject"] == mail.subject.strip()
    assert message.get_content_type() == "text/plain"
    assert _content(message) == _body(mail.text)
    assert message["Content-Transfer-Encoding"] == "base64"  # shorter than QP for Cyrillic


def test_display_names_with_specials_are_quoted() -> None:
    data = message_bytes(_mail(sender_name='ACME, "Support" \\ Team <x@y>'))
    [address] = _parse(data)["From"].addresses
    assert address.display_name == 'ACME, "Support" \\ Team <x@y>'
    assert address.addr_spec == SUPPORT
    assert _display_name(data) == address.display_name


def test_text_that_looks_like_an_encoded_word_stays_literal() -> None:
    subject = "about =?utf-8?b?SGk=?= in my logs"
    assert _parse(message_bytes(_mail(subject=subject)))["Subject"] == subject


def test_attachments_keep_their_bytes_names_and_types() -> None:
    files = (
        FileData("invoice.pdf", "application/pdf", b"%PDF-1.4 " + bytes(range(256))),
        FileData("отчёт за ноябрь " * 8 + ".csv", "text/csv", b"a,b\r\n1,2\r\n"),
        FileData('evil".bin', "multipart/mixed", b"--boundary?"),
    )
    data = message_bytes(_mail(attachments=files))
    _check_lines(data)
    message = _parse(data)
    assert message.get_content_type() == "multipart/mixed"
    attached = list(message.iter_attachments())
    assert [part.get_filename() for part in attached] == [
        "invoice.pdf",
        header_text("отчёт за ноябрь " * 8 + ".csv", 200),
        'evil".bin',
    ]
    assert [part.get_content_type() for part in attached] == [
        "application/pdf",
        "text/csv",
        "application/octet-stream",
    ]
    assert [part.get_payload(decode=True) for part in attached] == [f.data for f in files]
    assert not message.defects


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=_text,
    subject=_text,
    text=_text,
    html=st.none() | _text,
    files=st.lists(_file, max_size=2),
)
def test_any_values_read_back_and_never_add_a_header(
    name: str, subject: str, text: str, html: str | None, files: list[FileData]
) -> None:
    mail = _mail(sender_name=name, subject=subject, text=text, html=html, attachments=tuple(files))
    data = message_bytes(mail)
    _check_lines(data)
    message = _parse(data)
    assert message["Subject"] == header_text(subject)
    assert _display_name(data) == header_text(name, 200)
    assert [a.addr_spec for a in message["From"].addresses] == [SUPPORT]
    plain = message.get_body(("plain",))
    assert _content(plain) == _body(text)
    if html is not None:
        assert _content(message.get_body(("html",))) == _body(html)
    attached = list(message.iter_attachments())
    assert [part.get_payload(decode=True) for part in attached] == [f.data for f in files]
    assert [part.get_filename() for part in attached] == [
        header_text(f.filename, 200) or "attachment" for f in files
    ]
    names = [key.lower() for key in message]
    assert len(names) == len(set(names)), "a value started a header of its own"
