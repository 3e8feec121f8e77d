"""mail.parse: a corpus of real-client-shaped mail, one test per rule, and robustness properties."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mail.html_text import html_to_text
from mail.parse import TEXT_LIMIT, AuthVerdict, MailParseError, ParsedMail, parse_mail
from mail.quotes import visible_text

DATA = Path(__file__).parents[1] / "data" / "mail"
OUR = "support@example.com"


def parse(
    raw: bytes, *, loop_header: str = "X-Supportbot-Loop", attachment_cap: int = 10 * 1024 * 1024
) -> ParsedMail:
    return parse_mail(raw, our_address=OUR, loop_header=loop_header, attachment_cap=attachment_cap)


def build(*headers: str, body: str = "Hello, my printer is broken.") -> bytes:
    """A minimal message; a From header is added unless one is given."""
    lines = list(headers)
    if not any(line.lower().startswith("from:") for line in lines):
        lines.insert(0, "From: Jane Doe <jane@example.org>")
    return ("\r\n".join(lines) + "\r\n\r\n" + body.replace("\n", "\r\n")).encode("utf-8")


# --------------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class Expect:
    """What an agent should see for one corpus file."""

    file: str
    subject: str
    from_address: str | None
    from_name: str = ""
    visible_has: tuple[str, ...] = ()
    visible_lacks: tuple[str, ...] = ()
    text_has: tuple[str, ...] = ()
    text_lacks: tuple[str, ...] = ()
    attachments: tuple[tuple[str, str, int], ...] = ()  # (filename, content type, size)
    automated: str | None = None  # None: a human wrote it; else a substring of the reason
    bounce_of: tuple[str, ...] = ()
    auth: AuthVerdict = AuthVerdict.NONE
    ticket_tag: int | None = None
    message_id: str | None = ""  # "" = don't check
    defects_mention: tuple[str, ...] = ()


CORPUS = [
    Expect(
        "gmail_reply.eml",
        subject="Re: [#1042] Printer keeps jamming on page 2",
        from_address="jane.doe@example.org",
        from_name="Jane Doe",
        visible_has=("still jams — every time", "PX-4471-B", "Thanks,\nJane"),
        visible_lacks=("2.4.1", "wrote:", "Hello Jane"),
        text_has=("please install firmware 2.4.1",),
        auth=AuthVerdict.PASS,
        ticket_tag=1042,
        message_id="<CAF3xK9a+7bQ2=Jx-example@mail.gmail.example.com>",
    ),
    Expect(
        "outlook_reply.eml",
        subject="RE: [#2001] Invoice INV-7781 missing VAT number",
        from_address="tom.baker@example.net",
        from_name="Tom Baker",
        visible_has=("DE123456789", "Accounts Payable"),
        visible_lacks=("could you send us", "Sent:", "From:"),
        auth=AuthVerdict.PASS,
        ticket_tag=2001,
    ),
    Expect(
        "outlook_html_reply.eml",
        subject="RE: [#2010] Delivery note SO-5531",
        from_address="priya.raman@example.net",
        from_name="Raman, Priya",
        visible_has=(
            "SO-5531 is still missing",
            "resend it – ideally as PDF",
            "Thanks & regards,\nPriya",
        ),
        visible_lacks=("Original Message", "shipped order", "font-family", "MsoNormal"),
        text_has=("-----Original Message-----", "Dear Priya"),
        ticket_tag=2010,
    ),
    Expect(
        "apple_mail_reply.eml",
        subject="Re: [#1077] Can't log in after password reset",
        from_address="lena@example.net",
        from_name="Lena Fischer",
        visible_has=("“token expired”", "Lena"),
        visible_lacks=("new password reset link", "wrote:"),
        ticket_tag=1077,
    ),
    Expect(
        "thunderbird_reply.eml",
        subject="Re: [#1090] Export to CSV drops the last column",
        from_address="bob@builders.example.org",
        from_name="Bob Builder",
        # format=flowed soft break joined; bottom-posted reply kept, quote and signature gone
        visible_has=("14 columns but the export only contains 13",),
        visible_lacks=("does this happen", "Builders Ltd.", "wrote:"),
        text_has=("-- \nBob Builder",),
        ticket_tag=1090,
    ),
    Expect(
        "newsletter_bulk.eml",
        subject="🚀 November product update: faster exports",
        from_address="news@mailer.example.net",
        from_name="Example Cloud News",
        visible_has=(
            "November product update\n\nHello there,",
            "what’s new this month – café owners",
            "- Exports are up to 3× faster",
            "- A new dashboard with usage charts",
            "Read the changelog (https://example.net/changelog?utm_source=newsletter&utm_medium=email)",
            "Write to hello@example.net.",
        ),
        visible_lacks=(
            "font-family",
            "trackPixel",
            "Faster exports, a new dashboard",
            "<",
            "&amp;",
        ),
        automated="Precedence: bulk",
    ),
    Expect(
        "iso8859_1_german.eml",
        subject="AW: [#1105] Rückerstattung für Bestellung 4711",
        from_address="juergen.mueller@example.net",
        from_name="Jürgen Müller",
        visible_has=("vielen Dank für die schnelle Rückmeldung", "Viele Grüße aus Köln"),
        visible_lacks=("Ursprüngliche Nachricht", "Sehr geehrter", "Gesendet:"),
        ticket_tag=1105,
    ),
    Expect(
        "koi8r_russian.eml",
        subject="Re: [#1200] Не приходит письмо с подтверждением",
        from_address="ivan.petrov@example.org",
        from_name="Иван Петров",
        visible_has=('проверил папку "Спам"', "С уважением,\nИван"),
        visible_lacks=("пишет:", "отправили письмо повторно"),
        ticket_tag=1200,
    ),
    Expect(
        "shift_jis_japanese.eml",
        subject="Re: [#1301] 請求書の再発行について",
        from_address="taro.yamada@example.net",
        from_name="山田 太郎",
        visible_has=("再発行をお願いできますでしょうか", "① 宛名の変更"),
        visible_lacks=("添付いたします", "support@example.com>:"),
        ticket_tag=1301,
    ),
    Expect(
        "gb2312_chinese.eml",
        subject="回复: [#1400] 无法导出报表",
        from_address="li.wei@example.org",
        from_name="李伟",
        visible_has=('"服务器错误"', "联系人：朱镕"),  # 镕 is GBK-only: superset fallback
        visible_lacks=("写道", "哪个报表"),
        ticket_tag=1400,
    ),
    Expect(
        "inline_image.eml",
        subject="[#1600] Error screen after checkout",
        from_address="carla.rossi@example.org",
        from_name="Carla Rossi",
        visible_has=("screenshot of the error after checkout",),
        attachments=(("screenshot.png", "image/png", 70),),
        ticket_tag=1600,
    ),
    Expect(
        "pdf_attachment.eml",
        subject="[#1500] Invoice attached",
        from_address="accounts@example.net",
        from_name="Accounts",
        visible_has=("corrected invoice attached",),
        attachments=(("Rechnung März 2026.pdf", "application/pdf", 335),),
        ticket_tag=1500,
    ),
    Expect(
        "malformed_headers.eml",
        subject="Hello world =?utf-8?Q?broken_word Urgent café",
        from_address="peter.pan@example.com",
        from_name="Peter Pan",
        visible_has=("blank screen",),
        attachments=(("invoice.pdf.exe", "application/octet-stream", 15),),
        message_id=None,
        defects_mention=("Message-ID missing", "Date", "encoded-word", "From: malformed", "base64"),
    ),
    Expect(
        "lying_charset.eml",
        subject="Livraison en retard",
        from_address="francoise.dupont@example.org",
        from_name="Françoise Dupont",
        visible_has=("n'est pas arrivée", "bloqué à l'entrepôt", "Françoise"),
        visible_lacks=("\ufffd",),
        defects_mention=("not valid 'utf-8'",),
    ),
    Expect(
        "bounce_dsn.eml",
        subject="Undelivered Mail Returned to Sender",
        from_address="mailer-daemon@mx.example.net",
        from_name="Mail Delivery System",
        visible_has=("could not\nbe delivered", "User unknown"),
        attachments=(
            ("attachment-1.txt", "message/delivery-status", 441),
            ("attachment-2.txt", "text/rfc822-headers", 531),
        ),
        automated="auto-replied",
        bounce_of=("<reply-42@support.example.com>",),
    ),
    Expect(
        "vacation_autoreply.eml",
        subject="Automatic reply: [#1042] Printer keeps jamming on page 2",
        from_address="maria.garcia@example.org",
        from_name="Maria Garcia",
        visible_has=("out of the office until 10 November",),
        automated="Auto-Submitted: auto-replied",
        ticket_tag=1042,
    ),
    Expect(
        "spf_dmarc_fail.eml",
        subject="Urgent: update your payment details",
        from_address="billing@example.com",
        from_name="Example Billing",
        visible_has=("Confirm your card details",),
        auth=AuthVerdict.FAIL,
    ),
]


@pytest.mark.parametrize("case", CORPUS, ids=lambda case: case.file.removesuffix(".eml"))
def test_corpus(case: Expect) -> None:
    mail = parse((DATA / case.file).read_bytes())
    assert mail.subject == case.subject
    assert mail.from_address == case.from_address
    assert mail.from_name == case.from_name
    for snippet in case.visible_has:
        assert snippet in mail.visible_text
    for snippet in case.visible_lacks:
        assert snippet not in mail.visible_text
    for snippet in case.text_has:
        assert snippet in mail.text
    for snippet in case.text_lacks:
        assert snippet not in mail.text
    got = tuple((a.filename, a.content_type, a.size) for a in mail.attachments)
    assert got == case.attachments
    assert all(a.data is not None and len(a.data) == a.size for a in mail.attachments)
    if case.automated is None:
        assert mail.automated is None
    else:
        assert mail.automated is not None
        assert case.automated in mail.automated
    assert mail.bounce_of == case.bounce_of
    assert mail.auth is case.auth
    assert mail.ticket_tag == case.ticket_tag
    if case.message_id != "":
        assert mail.message_id == case.message_id
    for word in case.defects_mention:
        assert any(word in defect for defect in mail.defects), (word, mail.defects)
    if not case.defects_mention:
        assert mail.defects == ()
    assert "\r" not in mail.text
    assert not any(ch in mail.subject + mail.from_name for ch in "\r\n")


def test_corpus_table_covers_every_file() -> None:
    assert {case.file for case in CORPUS} == {path.name for path in DATA.glob("*.eml")}


def test_gmail_reply_details() -> None:
    mail = parse((DATA / "gmail_reply.eml").read_bytes())
    assert mail.in_reply_to == ("<reply-41@support.example.com>",)
    assert mail.references == (
        "<ticket-1042-1@support.example.com>",
        "<reply-41@support.example.com>",
    )
    assert mail.to == ("support@example.com",)
    assert mail.reply_to == "jane.doe@example.org"
    assert mail.date == datetime(2026, 11, 3, 9, 15, 30, tzinfo=UTC)
    assert mail.auth_detail == "spf=pass dkim=pass dmarc=pass"
    assert mail.text.startswith("Hi,\n\nI tried the firmware update")


def test_inline_image_details() -> None:
    mail = parse((DATA / "inline_image.eml").read_bytes())
    (image,) = mail.attachments
    assert image.inline is True
    assert image.content_id == "screenshot-1600@example.org"
    assert image.data is not None
    assert image.data.startswith(b"\x89PNG\r\n\x1a\n")


def test_pdf_attachment_details() -> None:
    (pdf,) = parse((DATA / "pdf_attachment.eml").read_bytes()).attachments
    assert pdf.inline is False
    assert pdf.content_id is None
    assert pdf.data is not None
    assert pdf.data.startswith(b"%PDF-1.4")
    assert b"%%EOF" in pdf.data


def test_bounce_and_spf_details() -> None:
    bounce = parse((DATA / "bounce_dsn.eml").read_bytes())
    assert bounce.message_id == "<20261103091501.ABC1234@mx.example.net>"
    spoof = parse((DATA / "spf_dmarc_fail.eml").read_bytes())
    # the second, lower Authentication-Results (claiming pass) comes from elsewhere: ignored
    assert spoof.auth_detail == "spf=fail dkim=none dmarc=fail"
    assert spoof.reply_to == "payments-update@example.net"


# --------------------------------------------------------------------------- automated mail


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("Auto-Submitted: auto-replied", "Auto-Submitted: auto-replied"),
        ("Auto-Submitted: auto-generated (daily report)", "Auto-Submitted: auto-generated"),
        ("AUTO-SUBMITTED: Auto-Notified", "Auto-Submitted"),
        ("Precedence: bulk", "Precedence: bulk"),
        ("Precedence: junk", "Precedence: junk"),
        ("Precedence: list", "Precedence: list"),
        ("Precedence: auto_reply", "Precedence: auto_reply"),
        ("Precedence: BULK", "Precedence: BULK"),
        ("X-Precedence: bulk", "X-Precedence: bulk"),
        ("X-Autoreply: yes", "X-Autoreply: yes"),
        ("X-Autoreply:", "X-Autoreply present"),
        ("X-Autorespond: Vacation", "X-Autorespond"),
        ("X-Auto-Response-Suppress: All", "X-Auto-Response-Suppress"),
        ("Return-Path: <>", "Return-Path: <>"),
        ("Return-Path:   < >  ", "Return-Path: <>"),
        ("X-Supportbot-Loop: desk-7", "X-Supportbot-Loop"),
        ("x-supportbot-loop: 1", "X-Supportbot-Loop"),
    ],
)
def test_automated_header_rules(header: str, reason: str) -> None:
    mail = parse(build(header))
    assert mail.automated is not None
    assert reason in mail.automated


@pytest.mark.parametrize(
    "header",
    [
        "Auto-Submitted: no",
        "Auto-Submitted: No (a human)",
        "Precedence: first-class",
        "Precedence: normal",
        "Return-Path: <jane@example.org>",
        "X-Mailer: Autoreply Pro",  # a mailer name is not an auto-reply marker
        "Subject: Auto-reply: please read",
    ],
)
def test_human_mail_is_not_automated(header: str) -> None:
    assert parse(build(header)).automated is None


@pytest.mark.parametrize(
    "sender",
    [
        "MAILER-DAEMON@mx.example.net",
        "Mail Delivery Subsystem <mailer-daemon@example.net>",
        "postmaster@example.org",
        "PostMaster <POSTMASTER@example.org>",
        "MAILER-DAEMON (Mail Delivery System)",
    ],
)
def test_mailer_daemon_and_postmaster_senders(sender: str) -> None:
    mail = parse(build(f"From: {sender}"))
    assert mail.automated is not None
    assert "sender" in mail.automated


def test_postmaster_in_display_name_only_is_human() -> None:
    assert parse(build('From: "Postmaster Pete" <pete@example.org>')).automated is None


def test_sender_header_mailer_daemon_counts() -> None:
    mail = parse(build("Sender: MAILER-DAEMON@mx.example.net"))
    assert mail.automated is not None


@pytest.mark.parametrize(
    "sender", ["support@example.com", "Support <SUPPORT@Example.COM>", "<Support@example.com>"]
)
def test_mail_from_our_own_address_is_automated(sender: str) -> None:
    mail = parse(build(f"From: {sender}"))
    assert mail.automated == "From our own address support@example.com"


def test_our_address_is_normalised() -> None:
    mail = parse_mail(build("From: support@example.com"), our_address=" <Support@Example.com> ")
    assert mail.automated is not None


def test_custom_loop_header() -> None:
    raw = build("X-Desk-Loop: yes")
    assert parse(raw).automated is None
    mail = parse(raw, loop_header="X-Desk-Loop")
    assert mail.automated is not None
    assert "X-Desk-Loop" in mail.automated


def test_multipart_report_is_automated() -> None:
    raw = build(
        "Content-Type: multipart/report; report-type=disposition-notification; boundary=b",
        body="--b\nContent-Type: text/plain\n\nYour message was read.\n--b--\n",
    )
    mail = parse(raw)
    assert mail.automated == "Content-Type: multipart/report"
    assert mail.bounce_of == ()  # a read receipt is not a bounce
    assert "was read" in mail.text


# --------------------------------------------------------------------------- bounces


def test_bounce_with_attached_original_message() -> None:
    raw = build(
        "From: Mail Delivery Subsystem <mailer-daemon@example.net>",
        "Message-ID: <bounce-1@example.net>",
        "Content-Type: multipart/report; report-type=delivery-status; boundary=rep",
        body=(
            "--rep\nContent-Type: text/plain\n\nDelivery failed.\n"
            "--rep\nContent-Type: message/delivery-status\n\n"
            "Reporting-MTA: dns; example.net\n\nFinal-Recipient: rfc822; x@example.org\n"
            "Action: failed\nStatus: 5.0.0\n\n"
            "--rep\nContent-Type: message/rfc822\n\n"
            "From: support@example.com\nMessage-ID: <reply-7@support.example.com>\n"
            "Subject: [#7] Hello\n\nOriginal body\n"
            "--rep--\n"
        ),
    )
    mail = parse(raw)
    assert mail.bounce_of == ("<reply-7@support.example.com>",)
    assert "Delivery failed." in mail.text
    assert "Original body" not in mail.text  # the copy is an attachment, not body text
    names = [a.content_type for a in mail.attachments]
    assert names == ["message/delivery-status", "message/rfc822"]
    copy = mail.attachments[1]
    assert copy.filename == "attachment-2.eml"
    assert copy.data is not None
    assert b"Original body" in copy.data


def test_plain_text_bounce_from_mailer_daemon() -> None:
    raw = build(
        "From: MAILER-DAEMON@mx.example.net",
        "In-Reply-To: <reply-9@support.example.com>",
        body=(
            "Hi. This is the qmail-send program at mx.example.net.\n"
            "--- Below this line is a copy of the message.\n\n"
            "Message-ID: <reply-8@support.example.com>\nSubject: [#8] Hi\n"
        ),
    )
    mail = parse(raw)
    assert mail.bounce_of == ("<reply-8@support.example.com>", "<reply-9@support.example.com>")


def test_human_mail_has_no_bounce_of() -> None:
    mail = parse(build("In-Reply-To: <reply-9@support.example.com>"))
    assert mail.bounce_of == ()


# --------------------------------------------------------------------------- authentication


@pytest.mark.parametrize(
    ("headers", "verdict", "detail"),
    [
        (["mx.example.com; spf=pass smtp.mailfrom=a; dkim=pass header.d=a"], "PASS",
         "spf=pass dkim=pass dmarc=none"),
        (["mx.example.com; dmarc=pass header.from=example.org"], "PASS",
         "spf=none dkim=none dmarc=pass"),
        (["mx.example.com; spf=softfail; dkim=pass; dmarc=pass"], "FAIL",
         "spf=softfail dkim=pass dmarc=pass"),
        (["mx.example.com; spf=permerror"], "FAIL", "spf=permerror dkim=none dmarc=none"),
        (["mx.example.com; spf=pass; dkim=fail"], "FAIL", "spf=pass dkim=fail dmarc=none"),
        (["mx.example.com; dmarc=fail (p=reject)"], "FAIL", "spf=none dkim=none dmarc=fail"),
        (["mx.example.com; spf=pass"], "NONE", "spf=pass dkim=none dmarc=none"),
        (["mx.example.com; none"], "NONE", "spf=none dkim=none dmarc=none"),
        (["mx.example.com; spf=neutral; dkim=temperror"], "NONE",
         "spf=neutral dkim=temperror dmarc=none"),
        # results inside comments do not count
        (["mx.example.com; spf=pass (not dkim=fail here); dkim=pass"], "PASS",
         "spf=pass dkim=pass dmarc=none"),
        # several DKIM signatures: one passing signature is enough
        (["mx.example.com; dkim=fail header.d=esp.example; dkim=pass header.d=a; spf=pass"],
         "PASS", "spf=pass dkim=pass dmarc=none"),
        # receiving server split its results over two headers: both used
        (["mx.example.com; spf=pass", "mx.example.com; dkim=pass"], "PASS",
         "spf=pass dkim=pass dmarc=none"),
        # a lower header from another server (forged or upstream) is ignored
        (["mx.example.com; spf=fail", "evil.example.net; spf=pass; dkim=pass; dmarc=pass"],
         "FAIL", "spf=fail dkim=none dmarc=none"),
        (["mx.example.com 1; SPF=Pass; DKIM=Pass"], "PASS", "spf=pass dkim=pass dmarc=none"),
    ],
)  # fmt: skip
def test_authentication_results(headers: list[str], verdict: str, detail: str) -> None:
    mail = parse(build(*(f"Authentication-Results: {value}" for value in headers)))
    assert mail.auth is AuthVerdict[verdict]
    assert mail.auth_detail == detail


def test_no_authentication_results() -> None:
    mail = parse(build())
    assert mail.auth is AuthVerdict.NONE
    assert mail.auth_detail == ""


# --------------------------------------------------------------------------- ticket tag


@pytest.mark.parametrize(
    ("subject", "tag"),
    [
        ("[#12] Re: [#345] Printer", 12),  # FIRST tag wins: the desk prefixes its newest tag
        ("Re: [#345] Printer", 345),
        ("AW: WG: [#7]", 7),
        ("=?utf-8?q?Re:_[#88]_R=C3=BCckfrage?=", 88),
        ("[#0] zero is not a ticket", None),
        ("[# 12] [#abc] #12 [12]", None),
        ("Printer broken", None),
        ("[#007] leading zeros", 7),
    ],
)
def test_ticket_tag(subject: str, tag: int | None) -> None:
    assert parse(build(f"Subject: {subject}")).ticket_tag == tag


# --------------------------------------------------------------------------- headers


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Message-ID: <abc.123@example.org>", "<abc.123@example.org>"),
        ("Message-ID:   <abc.123@example.org>  (comment)", "<abc.123@example.org>"),
        ("Message-ID: abc.123@example.org", "<abc.123@example.org>"),
        ("Message-ID: garbage", None),
        ("Message-ID: <no-at-sign>", None),
        ("Message-ID:", None),
        ("X-Other: 1", None),
    ],
)
def test_message_id_normalisation(header: str, expected: str | None) -> None:
    assert parse(build(header)).message_id == expected


def test_references_in_order_without_duplicates() -> None:
    mail = parse(
        build(
            "References: <a@x.example> (comment) <b@x.example>\r\n"
            " <a@x.example> junk <c@x.example>",
            "In-Reply-To: <c@x.example> (Jane's message of Tuesday)",
        )
    )
    assert mail.references == ("<a@x.example>", "<b@x.example>", "<c@x.example>")
    assert mail.in_reply_to == ("<c@x.example>",)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Date: Tue, 3 Nov 2026 10:12:00 +0100", datetime(2026, 11, 3, 9, 12, tzinfo=UTC)),
        ("Date: 3 Nov 2026 10:12:00 -0000", datetime(2026, 11, 3, 10, 12, tzinfo=UTC)),
        ("Date: Tue, 03 Nov 2026 10:12:00 GMT", datetime(2026, 11, 3, 10, 12, tzinfo=UTC)),
        ("Date: Tue,  3 Nov 2026 10:12:00 +0100 (CET)", datetime(2026, 11, 3, 9, 12, tzinfo=UTC)),
        ("Date: next Tuesday", None),
        ("Date: Tue, 31 Feb 2026 10:12:00 +0100", None),
    ],
)
def test_dates_are_aware_utc_or_none(header: str, expected: datetime | None) -> None:
    mail = parse(build(header))
    assert mail.date == expected
    if mail.date is not None:
        assert mail.date.tzinfo is UTC


@pytest.mark.parametrize(
    ("header", "address", "name"),
    [
        ('From: "Doe, Jane" <Jane.Doe@Example.ORG>', "jane.doe@example.org", "Doe, Jane"),
        ("From: jane@example.org (Jane Doe)", "jane@example.org", "Jane Doe"),
        ("From: jane@example.org", "jane@example.org", ""),
        ("From: =?utf-8?q?J=C3=B6rg?= <j@example.de>", "j@example.de", "Jörg"),
        ('From: "=?utf-8?b?SsO2cmc=?=" <j@example.de>', "j@example.de", "Jörg"),
        ("From: Jane Roe jane.roe@example.org (via form) ;;", "jane.roe@example.org", "Jane Roe"),
        ("From: nobody at all", None, "nobody at all"),
        ("From: <>", None, ""),
    ],
)
def test_from_parsing(header: str, address: str | None, name: str) -> None:
    mail = parse(build(header))
    assert mail.from_address == address
    assert mail.from_name == name


def test_reply_to_rules() -> None:
    assert parse(build("Reply-To: Team <Team@Example.org>, x@example.org")).reply_to == (
        "team@example.org"
    )
    assert parse(build("Reply-To: not an address")).reply_to == "jane@example.org"
    assert parse(build()).reply_to == "jane@example.org"
    looped = parse(build("Reply-To: support@example.com"))
    assert looped.reply_to == "jane@example.org"
    assert any("Reply-To" in defect for defect in looped.defects)


def test_to_addresses() -> None:
    mail = parse(build('To: "Support" <Support@example.com>, b@example.org', "To: undisclosed:;"))
    assert mail.to == ("support@example.com", "b@example.org")


@pytest.mark.parametrize(
    "header",
    [
        "Subject: =?utf-8?q?Hello=0D=0ABcc:_victim@example.org?=",
        "Subject: =?utf-8?b?SGVsbG8NCkJjYzogdmljdGltQGV4YW1wbGUub3Jn?=",
        "Subject: line one\r\n\tline two\r\n  line three",
        "Subject: =?utf-8?q?a=E2=80=A8b=C2=85c=0Bd?=",
    ],
)
def test_subject_never_contains_line_breaks(header: str) -> None:
    subject = parse(build(header)).subject
    assert not any(ch in subject for ch in "\r\n\x0b\x0c\x85\u2028\u2029")
    assert "  " not in subject


def test_display_name_never_contains_line_breaks() -> None:
    mail = parse(build("From: =?utf-8?q?Evil=0D=0ABcc:_x@example.org?= <a@example.org>"))
    assert mail.from_address == "a@example.org"
    assert "\n" not in mail.from_name
    assert "\r" not in mail.from_name


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Subject: =?iso-8859-1?q?Gr=FC=DFe?=", "Grüße"),
        ("Subject: =?utf-8?B?w6TDtsO8?= =?utf-8?B?w58=?=", "äöüß"),  # joined words
        ("Subject: =?utf-8?B?5pel?= =?utf-8?B?5pys?=", "日本"),
        ("Subject: =?utf-8?B?5pc=?= =?utf-8?B?peacrA==?=", "日本"),  # split inside a character
        ("Subject: =?UTF-8*en?Q?Hello?=", "Hello"),  # RFC 2231 language tag
        ("Subject: =?utf-8?B?SGVsbG8?=", "Hello"),  # missing padding
        ("Subject: =?x-unknown?Q?caf=C3=A9?=", "café"),  # unknown charset: UTF-8 fallback
        ("Subject: =?utf-8?Q?caf=E9?=", "café"),  # lying charset in a header
        ("Subject: plain =?utf-8?q?mixed?= text", "plain mixed text"),
        ("Subject: =?utf-8?q?unterminated_word", "unterminated word"),
        ("Subject: =?utf-8?X?bogus?=", "=?utf-8?X?bogus?="),
    ],
)
def test_rfc2047_subjects(header: str, expected: str) -> None:
    assert parse(build(header)).subject == expected


def test_raw_8bit_subject() -> None:
    raw = build("Subject: x").replace(b"Subject: x", "Subject: Grüße".encode())
    assert parse(raw).subject == "Grüße"
    raw = build("Subject: x").replace(b"Subject: x", "Subject: Grüße".encode("latin-1"))
    assert parse(raw).subject == "Grüße"


# --------------------------------------------------------------------------- bodies


@pytest.mark.parametrize(
    ("charset", "payload", "expected"),
    [
        ("utf-8", "Grüße".encode(), "Grüße"),
        ("iso-8859-1", "Grüße".encode("latin-1"), "Grüße"),
        ("iso-8859-1", b"\x93quoted\x94", "“quoted”"),  # C1 bytes read as cp1252
        ("utf-8", "Grüße".encode("latin-1"), "Grüße"),  # lying: latin-1 bytes
        ("iso-8859-1", "Grüße".encode(), "Grüße"),  # lying the other way: UTF-8 bytes
        ("us-ascii", "naïve".encode(), "naïve"),
        ("x-made-up", "naïve".encode(), "naïve"),
        (None, "naïve".encode("cp1252"), "naïve"),
        ("koi8-r", "привет".encode("koi8-r"), "привет"),
        ("windows-1251", "привет".encode("cp1251"), "привет"),
        ("euc-kr", "안녕하세요".encode("euc-kr"), "안녕하세요"),
        ("big5", "你好".encode("big5"), "你好"),
        ("iso-2022-jp", "こんにちは".encode("iso-2022-jp"), "こんにちは"),
        ("utf-16", "hi there".encode("utf-16"), "hi there"),
        ("zlib", b"plain bytes", "plain bytes"),  # not a text codec: ignored
        ("punycode", b"plain bytes", "plain bytes"),
    ],
)
def test_body_charsets(charset: str | None, payload: bytes, expected: str) -> None:
    content_type = "text/plain" + (f'; charset="{charset}"' if charset else "")
    raw = build(f"Content-Type: {content_type}", "Content-Transfer-Encoding: base64", body="")
    raw += base64.b64encode(payload)
    assert parse(raw).text == expected


def test_invalid_bytes_in_declared_multibyte_charset_are_replaced() -> None:
    payload = "请查收附件".encode("gb18030") + b"\xff" + "谢谢".encode("gb18030")
    raw = build('Content-Type: text/plain; charset="gb2312"', "Content-Transfer-Encoding: 8bit")
    mail = parse(raw.replace(b"Hello, my printer is broken.", payload))
    assert mail.text.startswith("请查收附件")
    assert mail.text.endswith("谢谢")
    assert any("replaced" in defect for defect in mail.defects)


@pytest.mark.parametrize(
    "encoded",
    [
        "SGVsbG8sIHdvcmxkIQ",  # padding missing
        "SGVsbG8s\nIHdvcmxk\nIQ==",  # wrapped
        "SGVsbG8s IHdvcmxk IQ==",  # spaces
        "SGVsbG8s*IHdvcmxkIQ==",  # a stray junk character
        "SGVsbG8sIA==d29ybGQh",  # padded chunks concatenated
        "SGVsbG8sIHdvcmxkIQ=",  # wrong padding
    ],
)
def test_broken_base64_bodies(encoded: str) -> None:
    raw = build("Content-Transfer-Encoding: base64", body=encoded)
    assert parse(raw).text == "Hello, world!"


def test_quoted_printable_body() -> None:
    raw = build(
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: quoted-printable",
        body="Gr=C3=BC=C3=9Fe, this is a soft=\n break and =3D sign, bad =ZZ escape",
    )
    assert parse(raw).text == "Grüße, this is a soft break and = sign, bad =ZZ escape"


def test_format_flowed_with_delsp() -> None:
    raw = build(
        "Content-Type: text/plain; charset=utf-8; format=flowed; delsp=yes",
        body="This is a long line that was  \nwrapped by the client.\n\n> quoted  \n> more\n -- \n",
    )
    mail = parse(raw)
    assert "This is a long line that was wrapped by the client." in mail.text
    assert "> quoted more" in mail.text


def test_html_only_body_is_converted() -> None:
    html = (
        "<html><head><title>T</title><style>p{color:red}</style></head><body>"
        "<h2>Order&nbsp;#55</h2><p>Line one<br>Line two</p>"
        "<ol><li>first</li><li>second<ul><li>nested</li></ul></li></ol>"
        "<p>See <a href='https://example.org/x?a=1&amp;b=2'>the docs</a> or "
        "<a href='https://example.org/'>https://example.org/</a>.</p>"
        "<script>alert('x')</script><pre>  keep   spacing\n  here</pre>"
        "<p>&lt;tag&gt; &eacute;&#233;&#xE9; &unknown;</p></body></html>"
    )
    raw = build("Content-Type: text/html; charset=utf-8", body=html)
    text = parse(raw).text
    assert text == (
        "Order #55\n\nLine one\nLine two\n\n1. first\n2. second\n  - nested\n\n"
        "See the docs (https://example.org/x?a=1&b=2) or https://example.org/.\n\n"
        "  keep   spacing\n  here\n\n<tag> ééé &unknown;"
    )


def test_multipart_alternative_prefers_plain_text() -> None:
    raw = build(
        "Content-Type: multipart/alternative; boundary=alt",
        body=(
            "--alt\nContent-Type: text/plain\n\nPLAIN version\n"
            "--alt\nContent-Type: text/html\n\n<p>HTML version</p>\n--alt--\n"
        ),
    )
    assert parse(raw).text == "PLAIN version"


def test_multipart_alternative_with_empty_plain_uses_html() -> None:
    raw = build(
        "Content-Type: multipart/alternative; boundary=alt",
        body=(
            "--alt\nContent-Type: text/plain\n\n   \n"
            "--alt\nContent-Type: text/html\n\n<p>HTML version</p>\n--alt--\n"
        ),
    )
    assert parse(raw).text == "HTML version"


def test_text_is_capped() -> None:
    raw = build(body="word " * (TEXT_LIMIT // 2))
    mail = parse(raw)
    assert len(mail.text) <= TEXT_LIMIT
    assert any("cut" in defect for defect in mail.defects)


def test_huge_html_body_is_fast_and_capped() -> None:
    html = "<div><p>Hello <b>world</b> &amp; <a href='https://example.org'>friends</a></p></div>\n"
    raw = build("Content-Type: text/html", body=html * 250_000)  # ~20 MB
    started = time.perf_counter()
    mail = parse(raw)
    assert time.perf_counter() - started < 5
    assert 0 < len(mail.text) <= TEXT_LIMIT
    assert mail.text.startswith("Hello world & friends (https://example.org)")
    assert any("not converted" in defect or "cut" in defect for defect in mail.defects)


# --------------------------------------------------------------------------- attachments


def test_attachment_over_cap_keeps_size_but_drops_data() -> None:
    payload = bytes(range(256)) * 4
    raw = build(
        "Content-Type: multipart/mixed; boundary=mix",
        body=(
            "--mix\nContent-Type: text/plain\n\nsee attached\n"
            "--mix\nContent-Type: application/octet-stream\n"
            'Content-Disposition: attachment; filename="big.bin"\n'
            f"Content-Transfer-Encoding: base64\n\n{base64.encodebytes(payload).decode()}\n"
            "--mix\nContent-Type: text/plain\n"
            'Content-Disposition: attachment; filename="small.txt"\n\nok\n'
            "--mix--\n"
        ),
    )
    mail = parse(raw, attachment_cap=100)
    big, small = mail.attachments
    assert (big.filename, big.size, big.data) == ("big.bin", 1024, None)
    assert (small.filename, small.size, small.data) == ("small.txt", 2, b"ok")
    assert any("big.bin" in defect and "cap" in defect for defect in mail.defects)
    assert mail.text == "see attached"


@pytest.mark.parametrize(
    ("disposition", "content_type", "expected"),
    [
        ('attachment; filename="../../etc/passwd"', "text/plain", "passwd"),
        ('attachment; filename="C:\\\\Users\\\\x\\\\report.pdf"', "application/pdf", "report.pdf"),
        ('attachment; filename="in\x07voice\u202epdf.exe"', "application/pdf", "invoicepdf.exe"),
        (
            'attachment; filename="=?utf-8?q?R=C3=A9sum=C3=A9.pdf?="',
            "application/pdf",
            "Résumé.pdf",
        ),
        ("attachment; filename*=utf-8''%E6%97%A5%E6%9C%AC.txt", "text/plain", "日本.txt"),
        ('attachment; filename="..."', "application/pdf", "attachment-1.pdf"),
        ("attachment", "application/octet-stream", "attachment-1.bin"),
        ("attachment", "image/png", "attachment-1.png"),
        ('attachment; filename="   "', "text/plain", "attachment-1.txt"),
    ],
)
def test_attachment_filenames_are_sanitised(
    disposition: str, content_type: str, expected: str
) -> None:
    raw = build(
        "Content-Type: multipart/mixed; boundary=mix",
        body=(
            f"--mix\nContent-Type: {content_type}\nContent-Disposition: {disposition}\n\ndata\n"
            "--mix--\n"
        ),
    )
    (attachment,) = parse(raw).attachments
    assert attachment.filename == expected


def test_inline_text_with_filename_is_an_attachment() -> None:
    raw = build(
        "Content-Type: multipart/mixed; boundary=mix",
        body=(
            "--mix\nContent-Type: text/plain\n\nBody text\n"
            '--mix\nContent-Type: text/plain; name="log.txt"\nContent-Disposition: inline\n\nLOG\n'
            "--mix\nContent-Type: text/plain\n\nMore body\n"
            "--mix--\n"
        ),
    )
    mail = parse(raw)
    assert mail.text == "Body text\n\nMore body"
    assert [(a.filename, a.inline, a.data) for a in mail.attachments] == [("log.txt", True, b"LOG")]


# --------------------------------------------------------------------------- visible text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Thanks!\n\nOn Tue, Nov 3, 2026 at 10:12 AM Bob <b@example.com> wrote:\n> old", "Thanks!"),
        # the attribution wrapped over two lines, as Gmail does
        ("Thanks!\n\nOn Tue, Nov 3, 2026 at 10:12 AM Bob <\nb@example.com> wrote:\n\n> old",
         "Thanks!"),
        ("Fine.\n\n> On 3 Nov 2026, at 10:12, Bob <b@example.com> wrote:\n>\n> old", "Fine."),
        ("Fine.\n\nOn 3 Nov 2026, at 10:12, Bob <b@example.com> wrote:\n\nold unquoted", "Fine."),
        ("Top\n\n-----Original Message-----\nFrom: Bob\nSent: Monday\nTo: x\nSubject: y\n\nold",
         "Top"),
        ("Top\n________________________________\nFrom: Bob <b@example.com>\n"
         "Sent: Monday, November 2, 2026 4:03 PM\nTo: x\nSubject: y\n\nold", "Top"),
        ("Danke\n\nAm 02.11.2026 um 16:03 schrieb Bob <b@example.com>:\n> alt", "Danke"),
        ("Danke\n\nVon: Bob <b@example.com>\nGesendet: Montag, 2. November 2026 16:03\n"
         "An: x\nBetreff: y\n\nalt", "Danke"),
        ("Merci\n\nLe lun. 2 nov. 2026 à 16:03, Bob <b@example.com> a écrit :\n> vieux", "Merci"),
        ("Спасибо\n\n02.11.2026 16:03, Bob пишет:\n> старое", "Спасибо"),
        ("Спасибо\n\nпн, 2 нояб. 2026 г. в 16:03, Bob <b@example.com>:\n> старое", "Спасибо"),
        ("Merci\n\nDe : Bob <b@example.com>\nEnvoyé : lundi 2 novembre 2026 16:03\n"
         "À : x\nObjet : y\n\nvieux", "Merci"),
        ("Grazie\n\nIl giorno lun 2 nov 2026 alle ore 16:03 Bob <b@example.com> ha scritto:\n"
         "> vecchio", "Grazie"),
        ("Спасибо\n\nОт: Bob\nОтправлено: 2 ноября 2026 г. 16:03\nКому: x\nТема: y\n\nстарое",
         "Спасибо"),
        # inline answers keep the customer's lines, drop the quoted ones
        ("> question one?\nanswer one\n> question two?\nanswer two", "answer one\nanswer two"),
        # bottom posting
        ("On 11/2/26 16:03, Bob wrote:\n> question\n\nmy answer", "my answer"),
        ("Regards\n-- \nBob\nCEO", "Regards"),
        ("Regards\n--\nBob", "Regards"),
        # a forwarded message is what the customer wants us to read: kept
        ("FYI\n\n---------- Forwarded message ---------\nFrom: Shop <s@example.com>\n"
         "Date: Mon, Nov 2, 2026\nSubject: Order\nTo: me\n\nYour order shipped",
         "FYI\n\n---------- Forwarded message ---------\nFrom: Shop <s@example.com>\n"
         "Date: Mon, Nov 2, 2026\nSubject: Order\nTo: me\n\nYour order shipped"),
        # a sentence that merely mentions writing is not an attribution
        ("On Monday I wrote:\nthe printer is broken", "On Monday I wrote:\nthe printer is broken"),
        # nothing but a quote: fall back to the full text
        ("> only a quote", "> only a quote"),
        ("-- \nonly a signature", "-- \nonly a signature"),
    ],
)  # fmt: skip
def test_visible_text_rules(text: str, expected: str) -> None:
    assert visible_text(text) == expected


def test_html_reply_quote_is_trimmed() -> None:
    html = (
        "<div>Works now, thanks!</div><br><div class='gmail_quote'>"
        "<div class='gmail_attr'>On Mon, Nov 2, 2026 at 4:03 PM Bob &lt;b@example.com&gt;"
        " wrote:</div><blockquote type='cite'>Try <b>restarting</b> it."
        "<blockquote>nested</blockquote></blockquote></div>"
    )
    mail = parse(build("Content-Type: text/html; charset=utf-8", body=html))
    assert "> Try restarting it." in mail.text
    assert "> > nested" in mail.text
    assert mail.visible_text == "Works now, thanks!"


def test_html_converter_drops_hidden_preheader_but_survives_unclosed_hidden() -> None:
    text, cut = html_to_text("<div style='display: none'>preheader</div><p>Body</p>")
    assert (text, cut) == ("Body", False)
    text, _ = html_to_text("<div style='display:none'>unclosed<p>Body</p>")
    assert "Body" in text


# --------------------------------------------------------------------------- errors and robustness


@pytest.mark.parametrize("raw", [b"", b"   \r\n\r\n  ", b"\xef\xbb\xbf", b"just some words"])
def test_no_header_block_raises(raw: bytes) -> None:
    with pytest.raises(MailParseError):
        parse(raw)


def test_oddities_are_tolerated_and_recorded() -> None:
    raw = (
        b"\r\n\r\nFrom: a@example.org\r\nSubject: =?utf-8?q?ok?=\r\n"
        b"Content-Type: multipart/mixed\r\n\r\nno boundary here\r\n"
    )
    mail = parse(raw)
    assert mail.from_address == "a@example.org"
    assert "no boundary here" in mail.text
    assert any("skipped" in defect for defect in mail.defects)
    assert any("boundary" in defect for defect in mail.defects)


def test_deep_nesting_and_many_parts_are_bounded() -> None:
    body = "".join(
        f"--b{i}\nContent-Type: multipart/mixed; boundary=b{i + 1}\n\n" for i in range(400)
    )
    nested = build("Content-Type: multipart/mixed; boundary=b0", body=body + "--b400\n\ndeep\n")
    mail = parse(nested)
    assert any("deep" in defect or "unreadable" in defect for defect in mail.defects)
    many = build(
        "Content-Type: multipart/mixed; boundary=z",
        body="--z\nContent-Type: text/plain\n\npart\n" * 2000 + "--z--\n",
    )
    mail = parse(many)
    assert any("MIME parts" in defect for defect in mail.defects)


HEADER_NAMES = st.sampled_from(
    [
        "From", "To", "Reply-To", "Sender", "Subject", "Date", "Message-ID", "In-Reply-To",
        "References", "Content-Type", "Content-Transfer-Encoding", "Content-Disposition",
        "Auto-Submitted", "Precedence", "Return-Path", "Authentication-Results", "X-Junk",
    ]
)  # fmt: skip
HEADER_VALUES = st.one_of(
    st.text(max_size=80),
    st.sampled_from(
        [
            "=?utf-8?B?", "=?utf-8?q?a=0D=0Ab?=", "=?bogus?Q?x?=", "<a@b>", "<<>>", "<>",
            'multipart/mixed; boundary="b"', "multipart/alternative; boundary=b",
            "multipart/report; report-type=delivery-status; boundary=b", "message/rfc822",
            "text/html; charset=utf-7", "text/plain; charset=punycode", "base64",
            "quoted-printable", 'attachment; filename="../x\x01.exe"', "mx; spf=fail; dkim=pass",
            "(((((", '"unterminated', "Tue, 99 Foo 2026 99:99:99 +9999",
        ]
    ),
)  # fmt: skip
BODY_PIECES = st.lists(
    st.one_of(
        st.text(max_size=60),
        st.sampled_from(
            [
                "--b\n", "--b--\n", "Content-Type: text/html\n\n", "<p>", "<a href='x'>",
                "<!--", "<script>", "<blockquote>", "> quoted\n", "-- \n",
                "On Mon, Nov 2, 2026 Bob <b@x.example> wrote:\n", "=E9=\n", "SGVsbG8\n",
                "Content-Type: message/rfc822\n\n", "Content-Transfer-Encoding: base64\n\n",
            ]
        ),
    ),
    max_size=25,
)  # fmt: skip


def _check(mail: ParsedMail) -> None:
    assert not any(ch in mail.subject + mail.from_name for ch in "\r\n")
    assert mail.date is None or mail.date.tzinfo is UTC
    assert isinstance(mail.auth, AuthVerdict)
    if mail.text.strip():
        assert mail.visible_text.strip()
    for attachment in mail.attachments:
        assert attachment.filename
        assert "/" not in attachment.filename
        assert "\\" not in attachment.filename


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000))
def test_arbitrary_bytes_never_raise_anything_else(raw: bytes) -> None:
    try:
        mail = parse(raw)
    except MailParseError:
        return
    _check(mail)


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(
    headers=st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=12),
    body=BODY_PIECES,
    encoding=st.sampled_from(["utf-8", "latin-1"]),
)
def test_header_ish_text_and_body_never_raise(
    headers: list[tuple[str, str]], body: list[str], encoding: str
) -> None:
    block = "".join(f"{name}: {value}\r\n" for name, value in headers)
    raw = (block + "\r\n" + "".join(body)).encode(encoding, "replace")
    try:
        mail = parse(raw)
    except MailParseError:
        assert not headers
        return
    _check(mail)


_SAID = "Hello, my deposit of 30 USDT is missing."
_B64 = base64.b64encode(_SAID.encode()).decode()
_BROKEN = {
    "header line without a colon": (
        "From: ann@example.org\r\nSubject: Help\r\nThis header has no colon\r\n"
        "Message-ID: <b1@example.org>\r\nContent-Type: text/plain\r\n"
        f"Content-Transfer-Encoding: base64\r\n\r\n{_B64}\r\n",
        "header line without a colon dropped: 'This header has no colon'",
    ),
    "multipart without a boundary": (
        "From: ann@example.org\r\nSubject: Help\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed\r\n\r\n--XYZ\r\nContent-Type: text/plain\r\n"
        f"Content-Transfer-Encoding: base64\r\n\r\n{_B64}\r\n--XYZ--\r\n",
        "multipart without a boundary: took 'XYZ' from its body",
    ),
    "boundary never closed": (
        "From: ann@example.org\r\nSubject: Help\r\n"
        'Content-Type: multipart/alternative; boundary="A"\r\n\r\n--A\r\n'
        "Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        f"{_B64}\r\n--A\r\nContent-Type: text/html\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\nPGh0",
        "MIME: A start boundary was found, but not the corresponding close boundary.",
    ),
}


@pytest.mark.parametrize("kind", list(_BROKEN))
def test_broken_mime_is_mended_to_its_decoded_text_and_flagged(kind: str) -> None:
    raw, defect = _BROKEN[kind]
    parsed = parse_mail(raw.encode(), our_address="support@example.com")
    assert parsed.text == _SAID
    assert parsed.broken and defect in parsed.defects
    assert parsed.subject == "Help" and parsed.from_address == "ann@example.org"


def test_well_formed_mail_is_not_broken() -> None:
    raw = (DATA / "gmail_reply.eml").read_bytes()
    assert not parse_mail(raw, our_address="support@example.com").broken
