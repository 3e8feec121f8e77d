"""Benchmark the email channel: IMAP intake into tickets, and agent replies out over SMTP.

Run from the repository root, with the PostgreSQL test server running and Dovecot installed:

    .venv/bin/python bench/mail.py [--db sqlite|postgresql|both] [--postgres-url URL]
                                   [--phase intake|replies|both] [--profile] [--steps]

Targets, on each database: intake ≥ 200 mails/s, replies ≥ 200 mails/s.

1. intake. 5,000 mails from 1,000 senders (see `workload`; every sender writes at least once):
   plain text and multipart/alternative (text + HTML) bodies, a few with an image attachment,
   some non-ASCII, with the Received, DKIM-Signature and Authentication-Results headers a
   receiving MTA leaves; about 20 % are a sender's follow-up to one of their own earlier mails
   (In-Reply-To, References, "Re:", quoted text) and about 2 % are out-of-office auto-replies
   (Auto-Submitted) whose References name a customer's mail. Before the clock starts they are
   APPENDed to a fresh mailbox of a private Dovecot (`tests/mailservers.py`'s `Dovecot`, plain
   IMAP on a loopback port) over one connection with MULTIAPPEND, 250 mails per command, so UIDs
   follow the workload's order and a follow-up always comes after the mail it answers. Then the
   clock starts, `ImapIntake.run(stop)` is started with the service's defaults (batches of 25,
   IDLE), and the clock stops at the first poll of the database (every 100 ms) that finds 5,000
   inbound ticket messages (or quarantined mails making up the rest). mails/s = 5,000 / that.
2. replies. A fresh database holds 1,000 email tickets from 1,000 customers (`Desk.receive`,
   as the intake would call it) and one agent (`tickets.agents.add_agent`). Their 1,000 receipts
   are delivered first, untimed, to warm up. Then 1,000 replies are queued with `Desk.reply`
   (untimed; the rate is shown for information), and the clock starts when a fresh `SmtpSender`
   and `OutboxWorker` (`{Route.EMAIL: sender}`, the service's defaults: batches of 100, 8
   concurrent groups, `run(stop, poll=0.5)`) start; it stops at the first poll (every 100 ms) that
   finds no reply row pending. The SMTP server is aiosmtpd in a separate process (so its work
   does not share this process's interpreter lock with the code measured); it counts
   connections (distinct peers that said EHLO) and the Message-IDs it accepted.

Each (database, phase) run starts from a freshly migrated empty database (`bench/common.py`).
Where the time goes: `--profile` runs the timed part under cProfile (the event loop's thread) and
prints the top entries; `--steps` times the product's main steps (see `INTAKE_STEPS`,
`REPLY_STEPS`) with wrappers put on for the timed part only, and counts the SQL statements.
Figures taken with either option are not the benchmark's: both slow the code down.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py is named like the standard library's `queue`, which asyncio and aiosqlite
# import: run as a script from bench/, this directory would shadow it. Take it off sys.path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import base64  # noqa: E402
import contextlib  # noqa: E402
import cProfile  # noqa: E402
import email.policy  # noqa: E402
import inspect  # noqa: E402
import io  # noqa: E402
import logging  # noqa: E402
import multiprocessing  # noqa: E402
import os  # noqa: E402
import pstats  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402
from collections.abc import Awaitable, Callable, Iterator, Sequence  # noqa: E402
from dataclasses import dataclass, field, replace  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from email.message import EmailMessage  # noqa: E402
from email.utils import format_datetime  # noqa: E402
from multiprocessing.connection import Connection  # noqa: E402
from typing import Any  # noqa: E402

import aiosmtplib  # noqa: E402
from aiosmtpd.controller import Controller  # noqa: E402
from sqlalchemy import event, func, select  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker  # noqa: E402

import mail.imap  # noqa: E402
import mail.smtp  # noqa: E402
import tickets.customer_messages  # noqa: E402
from bench.common import (  # noqa: E402
    DEFAULT_POSTGRES_URL,
    KINDS,
    CpuMeter,
    CpuUse,
    database,
    launch,
    machine,
    table,
    verdict,
)
from mail.imap import ImapIntake  # noqa: E402
from mail.imap_client import ImapSession  # noqa: E402
from mail.settings import SmtpSettings, Tls  # noqa: E402
from mail.smtp import SmtpSender  # noqa: E402
from tests.mailservers import PASSWORD, SUPPORT, USER, Dovecot, dovecot_binary  # noqa: E402
from tickets.agents import add_agent  # noqa: E402
from tickets.customer_messages import Receiver  # noqa: E402
from tickets.desk import Desk  # noqa: E402
from tickets.model import (  # noqa: E402
    Channel,
    CustomerRef,
    Direction,
    IncomingMessage,
    OutboxKind,
    OutboxStatus,
    Role,
    Route,
)
from tickets.outbox import Wakeups  # noqa: E402
from tickets.outbox_worker import OutboxWorker  # noqa: E402
from tickets.policy import SlaPolicy  # noqa: E402
from tickets.ports import utcnow  # noqa: E402
from tickets.rendering import Templates  # noqa: E402
from tickets.sla import BusinessCalendar  # noqa: E402
from tickets.tables import Customer, InboundKey, Message, OutboxRow, Quarantined, Ticket  # noqa: E402

MAILS = 5_000
SENDERS = 1_000
APPEND_CHUNK = 250
FOLLOW_UP_SHARE = 0.25  # of mails from a sender who wrote before, so about 20 % overall
AUTO_REPLY_SHARE = 0.025  # likewise about 2 % overall
MULTIPART_SHARE = 0.45
ATTACHMENT_SHARE = 0.03
FOREIGN_SHARE = 0.10
REPLIES = 1_000
TARGET_RATE = 200.0
POLL = 0.1
INTAKE_DEADLINE = 900.0
REPLIES_DEADLINE = 600.0
AGENT = 7_000_001
MAIL_DOMAIN = SUPPORT.rpartition("@")[2]
BASE_TIME = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


FIRST = words(
    "Anna Ben Carla David Emma Felix Grace Hugo Ines Jonas Kira Lukas Maya Noah Olga Paul "
    "Quinn Rosa Sam Tara Umar Vera Wim Xenia Yusuf Zoe Aiko Bruno Chen Dora Erik Fatima "
    "Goran Hanna Igor Julia Kofi Lena Marco Nadia"
)
LAST = words(
    "Smith Müller Garcia Rossi Novak Kim Dubois Jensen Silva Ivanova Tanaka Okafor Kowalski "
    "Brown Schmidt Martin Costa Nguyen Larsen Haddad Fischer Moreau Petrov Santos Wong"
)
DOMAINS = words(
    "gmail.com outlook.com yahoo.com gmx.de web.de mail.ru proton.me icloud.com "
    "acme-corp.example fastmail.com example.org company.example"
)
SUBJECTS = (
    "Order {n} has not arrived",
    "Refund for invoice INV-{n}",
    "Cannot log in to my account",
    "Charged twice this month",
    "Question about my subscription",
    "App crashes when I open the settings screen",
    "Change of delivery address for order {n}",
    "Password reset email never arrives",
    "Wrong item in package {n}",
    "How do I cancel my plan?",
    "Invoice {n}: VAT number missing",
    "URGENT: account locked after update",
    "Feature request: export to CSV",
    "Tracking number for order {n} does not work",
    "Rückerstattung für Bestellung {n}",
    "Problème de paiement avec ma carte",
    "Не приходит письмо с подтверждением",
    "Pedido {n} llegó dañado",
    "",
)
WORDS = words(
    "order invoice payment card refund login password account app error crash update please "
    "help thanks yesterday today still not working screen button email subscription plan "
    "upgrade cancel charge twice receipt address delivery late tracking number support team "
    "could you check what happened again tried everything restart phone browser cache cookies "
    "message says something went wrong balance credited bank statement shows pending weeks"
)
FOREIGN = (
    "Ich habe die Rückerstattung noch nicht erhalten, obwohl sie vor zwei Wochen bestätigt wurde.",
    "Bonjour, je n'arrive pas à me connecter depuis la dernière mise à jour de l'application.",
    "Здравствуйте! Деньги списаны дважды, прошу вернуть лишний платёж как можно скорее.",
    "Hola, el paquete llegó abierto y falta uno de los artículos del pedido.",
    "ご注文の商品がまだ届いていません。確認していただけますか。",
)


# -- the mails ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    name: str
    address: str
    domain: str


@dataclass(frozen=True)
class Sent:
    """A mail of the workload as it will sit in the mailbox."""

    raw: bytes
    kind: str  # "new", "follow-up" or "auto-reply"
    sender: int
    multipart: bool
    attachment: bool


@dataclass
class Earlier:
    """What a follow-up needs to know about a sender's earlier mail."""

    message_id: str
    subject: str
    references: list[str]
    body: str
    when: datetime


def people(rng: random.Random) -> list[Person]:
    found = []
    for n in range(SENDERS):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        domain = rng.choice(DOMAINS)
        local = f"{first}.{last}{n}".lower().replace("ü", "ue")
        found.append(Person(f"{first} {last}", f"{local}@{domain}", domain))
    return found


def sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(6, 22))]
    return " ".join(words).capitalize() + rng.choice([".", ".", ".", "?", "!"])


def body_text(rng: random.Random, person: Person) -> str:
    greeting = rng.choice(["Hello,", "Hi team,", "Dear support,", "Hi,", "Good morning,"])
    paragraphs = []
    for _ in range(rng.choice([1, 1, 2, 2, 3, 4])):
        if rng.random() < FOREIGN_SHARE:
            paragraphs.append(rng.choice(FOREIGN))
        else:
            paragraphs.append(" ".join(sentence(rng) for _ in range(rng.randint(1, 5))))
    first = person.name.split()[0]
    closing = f"{rng.choice(['Thanks,', 'Best regards,', 'Cheers,', 'Kind regards,'])}\n{first}"
    text = "\n\n".join([greeting, *paragraphs, closing])
    roll = rng.random()
    if roll < 0.3:
        text += f"\n\n-- \n{person.name}\n{person.domain}\nTel. +1 555 {rng.randint(1000, 9999)}"
    elif roll < 0.4:
        text += "\n\nSent from my iPhone"
    return text


def html_of(text: str, quoted: str = "") -> str:
    paragraphs = "".join(
        f"<p>{part.replace('&', '&amp;').replace('<', '&lt;').replace(chr(10), '<br>')}</p>"
        for part in text.split("\n\n")
    )
    quote = ""
    if quoted:
        inner = quoted.replace("&", "&amp;").replace("<", "&lt;").replace("\n", "<br>")
        quote = f'<blockquote type="cite" style="margin:0 0 0 .8ex">{inner}</blockquote>'
    return (
        '<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8">'
        "<style>body{font-family:Calibri,Arial,sans-serif;font-size:11pt}"
        "p{margin:0 0 1em 0}</style></head>"
        f'<body><div dir="ltr">{paragraphs}</div>{quote}</body></html>'
    )


def trace_headers(msg: EmailMessage, rng: random.Random, person: Person, when: datetime) -> None:
    """The headers a receiving MTA leaves on a mail from the Internet."""
    host = f"mail-{rng.randint(1, 99)}.{person.domain}"
    ip = f"203.0.113.{rng.randint(1, 254)}"
    queue_id = f"{rng.getrandbits(40):010X}"
    stamp = format_datetime(when)
    msg["Received"] = (
        f"from {host} ({host} [{ip}]) by mx.{MAIL_DOMAIN} (Postfix) with ESMTPS id {queue_id} "
        f"for <{SUPPORT}>; {stamp}"
    )
    msg["Received"] = f"by {host} with SMTP id {rng.getrandbits(64):x}; {stamp}"
    roll = rng.random()
    if roll < 0.85:
        msg["Authentication-Results"] = (
            f"mx.{MAIL_DOMAIN}; dkim=pass header.d={person.domain}; "
            f"spf=pass smtp.mailfrom={person.domain}; dmarc=pass header.from={person.domain}"
        )
    elif roll < 0.95:
        msg["Authentication-Results"] = (
            f"mx.{MAIL_DOMAIN}; spf=softfail smtp.mailfrom={person.domain}"
        )
    encoded = base64.b64encode(rng.randbytes(256)).decode()
    signature = " ".join(encoded[i : i + 70] for i in range(0, len(encoded), 70))
    body_hash = base64.b64encode(rng.randbytes(32)).decode()
    msg["DKIM-Signature"] = (
        f"v=1; a=rsa-sha256; c=relaxed/relaxed; d={person.domain}; s=s1; "
        f"h=from:to:subject:date:message-id:mime-version; bh={body_hash}; b={signature}"
    )


def one_mail(
    rng: random.Random,
    n: int,
    person: Person,
    kind: str,
    parent: Earlier | None,
) -> tuple[bytes, Earlier, bool, bool]:
    when = BASE_TIME + timedelta(seconds=30 * n + rng.randint(0, 29))
    message_id = f"<{rng.getrandbits(64):016x}.{n}@{person.domain}>"
    msg = EmailMessage(policy=email.policy.SMTP)
    trace_headers(msg, rng, person, when)
    msg["From"] = f"{person.name} <{person.address}>"
    msg["To"] = f"Support <{SUPPORT}>"
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = message_id
    references: list[str] = []
    quoted = ""
    if kind == "new":
        subject = rng.choice(SUBJECTS).format(n=rng.randint(10_000, 99_999))
        text = body_text(rng, person)
    elif kind == "follow-up":
        assert parent is not None
        subject = parent.subject if parent.subject.startswith("Re:") else f"Re: {parent.subject}"
        references = [*parent.references, parent.message_id][-10:]
        msg["In-Reply-To"] = parent.message_id
        msg["References"] = " ".join(references)
        text = body_text(rng, person)
        quoted = "\n".join(f"> {line}" if line else ">" for line in parent.body.splitlines())
        intro = f"On {format_datetime(parent.when)}, {person.name} <{person.address}> wrote:"
        text = f"{text}\n\n{intro}\n{quoted}"
    else:
        assert parent is not None
        subject = f"Automatic reply: {parent.subject}"
        receipt = f"<receipt-{rng.getrandbits(48):012x}@{MAIL_DOMAIN}>"
        references = [parent.message_id, receipt]
        msg["In-Reply-To"] = receipt
        msg["References"] = " ".join(references)
        msg["Auto-Submitted"] = "auto-replied"
        msg["X-Autoreply"] = "yes"
        back = (when + timedelta(days=rng.randint(2, 14))).strftime("%d %B")
        text = (
            "Thank you for your message. I am out of the office until "
            f"{back} with limited access to email.\n\n{person.name}"
        )
    msg["Subject"] = subject
    msg["MIME-Version"] = "1.0"
    if rng.random() < 0.3:
        msg["User-Agent"] = rng.choice(["Thunderbird/128.4", "Apple Mail (2.3774)", "K-9 Mail"])
    multipart = kind != "auto-reply" and rng.random() < MULTIPART_SHARE
    msg.set_content(text)
    if multipart:
        own = text.split(f"\n\nOn {format_datetime(parent.when)}")[0] if parent else text
        msg.add_alternative(html_of(own, quoted), subtype="html")
    attachment = kind == "new" and rng.random() < ATTACHMENT_SHARE
    if attachment:
        image = rng.randbytes(rng.randint(20_000, 60_000))
        msg.add_attachment(image, maintype="image", subtype="png", filename=f"screenshot-{n}.png")
    earlier = Earlier(message_id, subject, references, text, when)
    return msg.as_bytes(), earlier, multipart, attachment


def workload(rng: random.Random) -> list[Sent]:
    """The mails in the order they are appended; a follow-up's parent always comes before it.

    Every sender writes at least once; a sender's first mail opens a conversation, later ones
    are follow-ups, auto-replies or new conversations.
    """
    senders = people(rng)
    order = list(range(SENDERS)) + [rng.randrange(SENDERS) for _ in range(MAILS - SENDERS)]
    rng.shuffle(order)
    threads: dict[int, list[Earlier]] = {}  # mails so far, by sender
    mails: list[Sent] = []
    for n, who in enumerate(order):
        history = threads.get(who, [])
        roll = rng.random()
        kind, parent = "new", None
        if history and roll < AUTO_REPLY_SHARE:
            kind, parent = "auto-reply", rng.choice(history)
        elif history and roll < AUTO_REPLY_SHARE + FOLLOW_UP_SHARE:
            parent = history[-1] if rng.random() < 0.7 else rng.choice(history)
            kind = "follow-up"
        raw, earlier, multipart, attachment = one_mail(rng, n, senders[who], kind, parent)
        if kind != "auto-reply":
            threads.setdefault(who, []).append(earlier)
        mails.append(Sent(raw, kind, who, multipart, attachment))
    return mails


def append_all(port: int, mailbox: str, mails: Sequence[Sent]) -> None:
    """APPEND every mail in order over one connection: MULTIAPPEND (RFC 3502) with LITERAL+
    (RFC 7888), APPEND_CHUNK mails per command, so UIDs follow the workload's order."""
    with socket.create_connection(("127.0.0.1", port), 60) as sock, sock.makefile("rb") as replies:

        def command(tag: bytes, payload: bytes) -> list[bytes]:
            sock.sendall(tag + b" " + payload + b"\r\n")
            lines = []
            while True:
                line = replies.readline()
                if not line:
                    raise RuntimeError("Dovecot closed the connection")
                lines.append(line)
                if line.startswith(tag + b" "):
                    if not line.startswith(tag + b" OK"):
                        raise RuntimeError(f"IMAP {payload[:40]!r} failed: {line!r}")
                    return lines

        replies.readline()  # the greeting
        command(b"L", f'LOGIN "{USER}" "{PASSWORD}"'.encode())
        capabilities = b" ".join(command(b"C", b"CAPABILITY")).upper()
        if b"MULTIAPPEND" not in capabilities or b"LITERAL+" not in capabilities:
            raise RuntimeError("the IMAP server lacks MULTIAPPEND or LITERAL+")
        for start in range(0, len(mails), APPEND_CHUNK):
            chunk = mails[start : start + APPEND_CHUNK]
            literals = b" ".join(b"{%d+}\r\n%b" % (len(m.raw), m.raw) for m in chunk)
            command(b"A", f'APPEND "{mailbox}" '.encode() + literals)
        command(b"Q", b"LOGOUT")


@contextlib.contextmanager
def private_dovecot() -> Iterator[Dovecot]:
    binary = dovecot_binary()
    if binary is None:
        raise SystemExit("dovecot is not installed (apt-get install dovecot-imapd)")
    root = Path(tempfile.mkdtemp(prefix="supportbot-bench-dovecot-", dir="/tmp"))
    root.chmod(0o755)
    server = Dovecot(binary, root, None)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


# -- measuring ---------------------------------------------------------------------------------


class WarningTally(logging.Handler):
    """Counts the warnings and errors the product logs during a run; keeps the first few."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.first: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if len(self.first) < 5:
            self.first.append(f"{record.name}: {record.getMessage()}"[:300])


@contextlib.contextmanager
def tallied() -> Iterator[WarningTally]:
    tally = WarningTally()
    root = logging.getLogger()
    root.addHandler(tally)
    try:
        yield tally
    finally:
        root.removeHandler(tally)


Step = tuple[Any, str, str]  # (module or class, attribute, label)

INTAKE_STEPS: tuple[Step, ...] = (
    (ImapSession, "fetch", "IMAP UID FETCH (25 mails)"),
    (ImapSession, "mark_seen", "IMAP UID STORE +FLAGS \\Seen"),
    (mail.imap, "parse_mail", "parse_mail"),
    (Desk, "receive_many", "Desk.receive_many, one transaction per batch"),
    (Receiver, "receive", "  in it: Receiver.receive, per mail"),
    (Receiver, "customer", "    in it: customer"),
    (Receiver, "_thread", "    in it: _thread"),
    (Receiver, "_ticket_for", "    in it: _ticket_for"),
    (Receiver, "_receipt", "    in it: _receipt (flood check, headers, row)"),
    (tickets.customer_messages, "agents_notice", "    in it: agents_notice (render)"),
)
REPLY_STEPS: tuple[Step, ...] = (
    (OutboxWorker, "_claim", "OutboxWorker._claim (100 rows)"),
    (SmtpSender, "_compose", "SmtpSender._compose"),
    (mail.smtp, "message_bytes", "message_bytes"),
    (aiosmtplib.SMTP, "sendmail", "aiosmtplib sendmail (MAIL, RCPT, DATA)"),
    (OutboxWorker, "_record_many", "OutboxWorker._record_many, one transaction per batch *"),
    (OutboxWorker, "_record", "  in it: OutboxWorker._record, per row"),
    (Desk, "delivered", "    in it: Desk.delivered"),
)


class Probe:
    """Optional looks inside the timed part.

    `--profile`: cProfile (the event loop's thread only); prints the top entries at the end.
    `--steps`: wall time from entry to exit (awaits included) of the product functions in `steps`,
    patched on the class or module for the timed part only, and the SQL statements sent.
    """

    def __init__(
        self, label: str, engine: AsyncEngine, steps: Sequence[Step], *, profile: bool, timed: bool
    ) -> None:
        self.label = label
        self.engine = engine
        self.steps = steps if timed else ()
        self.profile = cProfile.Profile() if profile else None
        self.spent: defaultdict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()
        self.statements: Counter[str] = Counter()
        self._undo: list[Callable[[], None]] = []

    def start(self) -> None:
        for owner, name, label in self.steps:
            self._patch(owner, name, label)
        if self.steps:
            event.listen(self.engine.sync_engine, "before_cursor_execute", self._statement)
        if self.profile is not None:
            self.profile.enable()

    def stop(self) -> None:
        if self.profile is not None:
            self.profile.disable()
        if self.steps:
            event.remove(self.engine.sync_engine, "before_cursor_execute", self._statement)
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()

    def lines(self, count: int) -> list[str]:
        """The step timings, per mail."""
        if not self.steps:
            return []
        found = [f"steps (--steps; wall ms per mail, awaits included; calls) on {self.label}:"]
        for _owner, _name, label in self.steps:
            found.append(
                f"  {label:<52} {self.spent[label] * 1000 / count:8.3f} ms {self.calls[label]:7,}"
            )
        total = sum(self.statements.values())
        kinds = ", ".join(f"{k} {v:,}" for k, v in self.statements.most_common())
        found.append(f"  SQL statements: {total / count:.1f} per mail ({kinds})")
        return found

    def print_profile(self) -> None:
        if self.profile is None:
            return
        for order in ("tottime", "cumulative"):
            out = io.StringIO()
            pstats.Stats(self.profile, stream=out).sort_stats(order).print_stats(30)
            print(f"\n--- cProfile, {self.label}, by {order} (event loop thread only) ---")
            print(out.getvalue())

    def _statement(self, *args: Any) -> None:
        statement = str(args[2])
        self.statements[statement.split(None, 1)[0].upper() if statement.strip() else "?"] += 1

    def _patch(self, owner: Any, name: str, label: str) -> None:
        original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
        spent, calls = self.spent, self.calls
        if inspect.iscoroutinefunction(original):

            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                began = time.perf_counter()
                try:
                    return await original(*args, **kwargs)
                finally:
                    spent[label] += time.perf_counter() - began
                    calls[label] += 1

            replacement: Any = timed_async
        else:

            def timed_sync(*args: Any, **kwargs: Any) -> Any:
                began = time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    spent[label] += time.perf_counter() - began
                    calls[label] += 1

            replacement = timed_sync
        setattr(owner, name, replacement)
        self._undo.append(lambda: setattr(owner, name, original))


async def count(sessions: async_sessionmaker[AsyncSession], model: Any, *where: Any) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def until(check: Callable[[], Awaitable[bool]], began: float, deadline: float) -> float:
    """Poll `check` every POLL seconds; the seconds since `began` when it first held, or -1."""
    while True:
        if await check():
            return time.perf_counter() - began
        if time.perf_counter() - began > deadline:
            return -1.0
        await asyncio.sleep(POLL)


def new_desk(sessions: async_sessionmaker[AsyncSession], wakeups: Wakeups) -> Desk:
    policy = SlaPolicy(calendar=BusinessCalendar())
    return Desk(sessions, policy, Templates(), wakeup=wakeups, mail_domain=MAIL_DOMAIN)


@dataclass
class Result:
    kind: str
    phase: str
    count: int
    seconds: float  # -1 when the deadline passed first
    cpu: CpuUse
    setup: str
    details: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    connections: int | None = None  # SMTP connections SmtpSender opened (replies only)

    @property
    def finished(self) -> bool:
        return self.seconds > 0

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.finished else 0.0

    @property
    def cpu_ms(self) -> float:
        return self.cpu.process_seconds / self.count * 1000

    @property
    def busy(self) -> str:
        return "n/a" if self.cpu.machine_busy is None else f"{self.cpu.machine_busy:.0%}"


# -- 1. intake ---------------------------------------------------------------------------------


async def run_intake(
    kind: str, postgres_url: str, dovecot: Dovecot, mails: Sequence[Sent], args: argparse.Namespace
) -> Result:
    mailbox = f"Bench{kind.capitalize()}{uuid.uuid4().hex[:8]}"
    dovecot.create(mailbox)
    try:
        began = time.perf_counter()
        await asyncio.to_thread(append_all, dovecot.port, mailbox, mails)
        appended = time.perf_counter() - began
        async with database(kind, postgres_url) as data:
            sessions = data.sessions
            wakeups = Wakeups()
            desk = new_desk(sessions, wakeups)
            reader = ImapIntake(dovecot.settings(mailbox), desk, sessions, SUPPORT)
            inbound = Message.direction == Direction.IN.value

            progress: list[tuple[float, int]] = []

            async def done() -> bool:
                handled = await count(sessions, Message, inbound)
                if handled < len(mails):
                    handled += await count(sessions, Quarantined)
                progress.append((time.perf_counter() - began, handled))
                return handled >= len(mails)

            stop = asyncio.Event()
            probe = Probe(
                f"intake on {kind}",
                data.engine,
                INTAKE_STEPS,
                profile=args.profile,
                timed=args.steps,
            )
            with tallied() as tally:
                meter = CpuMeter()
                meter.start()
                probe.start()
                began = time.perf_counter()
                task = asyncio.create_task(reader.run(stop))
                seconds = await until(done, began, INTAKE_DEADLINE)
                probe.stop()
                cpu = meter.stop()
                stop.set()
                await asyncio.wait_for(task, 60)
            probe.print_profile()
            result = await check_intake(kind, sessions, mails, seconds, cpu, appended, tally)
            result.details.insert(1, pace(progress, len(mails)))
            result.details.extend(probe.lines(len(mails)))
            return result
    finally:
        with contextlib.suppress(Exception):
            dovecot.delete(mailbox)


def pace(progress: Sequence[tuple[float, int]], total: int) -> str:
    """The rate over the first and the last fifth of the mails (to the poll's resolution)."""
    fifth = total // 5

    def reached(n: int) -> float | None:
        return next((at for at, handled in progress if handled >= n), None)

    first, fourth, last = reached(fifth), reached(total - fifth), reached(total)
    if first is None or fourth is None or last is None or last <= fourth:
        return "pace: the run did not finish"
    return (
        f"pace: {fifth / first:.0f} mails/s over the first {fifth:,}, "
        f"{fifth / (last - fourth):.0f} mails/s over the last {fifth:,}"
    )


async def check_intake(
    kind: str,
    sessions: async_sessionmaker[AsyncSession],
    mails: Sequence[Sent],
    seconds: float,
    cpu: CpuUse,
    appended: float,
    tally: WarningTally,
) -> Result:
    """Every mail one message, follow-ups and auto-replies on their thread's ticket."""
    new = sum(1 for m in mails if m.kind == "new")
    autos = sum(1 for m in mails if m.kind == "auto-reply")
    inbound = Message.direction == Direction.IN.value
    stored = await count(sessions, Message, inbound)
    keys = await count(sessions, InboundKey)
    quarantined = await count(sessions, Quarantined)
    tickets = await count(sessions, Ticket)
    customers = await count(sessions, Customer)
    automated = await count(sessions, Message, inbound, Message.counts_for_sla.is_(False))
    receipts = await count(sessions, OutboxRow, OutboxRow.kind == OutboxKind.RECEIPT.value)
    senders = len({m.sender for m in mails})
    problems = []
    if stored != len(mails) or keys != len(mails):
        problems.append(f"{stored} messages and {keys} inbound keys for {len(mails)} mails")
    if quarantined:
        problems.append(f"{quarantined} mails quarantined")
    if tickets != new:
        problems.append(f"{tickets} tickets for {new} new conversations (threading)")
    if customers != senders:
        problems.append(f"{customers} customers for {senders} senders")
    if automated != autos:
        problems.append(f"{automated} messages taken as automated, {autos} auto-replies sent")
    details = [
        f"{stored:,} messages, {tickets:,} tickets, {customers:,} customers, "
        f"{automated} automated, {quarantined} quarantined, {receipts:,} receipts queued",
        f"product warnings/errors logged: {tally.count}",
        *(f"  {line}" for line in tally.first),
    ]
    return Result(
        kind, "intake", len(mails), seconds, cpu, f"APPEND {appended:.1f} s", details, problems
    )


# -- 2. replies --------------------------------------------------------------------------------


@dataclass
class SinkState:
    """What the SMTP sink saw since the last reset."""

    peers: set[Any] = field(default_factory=set)
    message_ids: list[str] = field(default_factory=list)
    recipients: int = 0
    size: int = 0


_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)


class SinkHandler:
    """An aiosmtpd handler that accepts everything and counts connections and Message-IDs."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.state = SinkState()

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        with self.lock:
            self.state.peers.add(session.peer)
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data = bytes(envelope.original_content or envelope.content)
        head = data.split(b"\r\n\r\n", 1)[0]
        found = _MESSAGE_ID.search(head)
        with self.lock:
            self.state.message_ids.append(found.group(1).decode() if found else "")
            self.state.recipients += len(envelope.rcpt_tos)
            self.state.size += len(data)
        return "250 OK"


def sink_main(port: int, pipe: Connection) -> None:
    """The SMTP server process: serves until told to stop; answers "stats" and "reset"."""
    handler = SinkHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    pipe.send("ready")
    try:
        while True:
            command = pipe.recv()
            if command == "stop":
                break
            with handler.lock:
                state = handler.state
                if command == "reset":
                    handler.state = SinkState()
            pipe.send(
                (len(state.peers), list(state.message_ids), state.recipients, state.size)
                if command == "stats"
                else "ok"
            )
    finally:
        controller.stop()


class Sink:
    """The parent's handle on the SMTP server process."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.port = _free_port()
        self.pipe, child = context.Pipe()
        self.process = context.Process(target=sink_main, args=(self.port, child), daemon=True)

    async def start(self) -> None:
        self.process.start()
        ready = await self._ask(None, wait=60)
        if ready != "ready":
            raise RuntimeError(f"the SMTP sink did not start: {ready!r}")

    async def reset(self) -> None:
        await self._ask("reset")

    async def stats(self) -> tuple[int, list[str], int, int]:
        answer = await self._ask("stats")
        assert isinstance(answer, tuple)
        return answer

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.pipe.send("stop")
        self.process.join(10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)

    def settings(self) -> SmtpSettings:
        return SmtpSettings(host="127.0.0.1", port=self.port, user="", password="", tls=Tls.NONE)

    async def _ask(self, command: str | None, wait: float = 30) -> Any:
        def exchange() -> Any:
            if command is not None:
                self.pipe.send(command)
            if not self.pipe.poll(wait):
                raise RuntimeError(f"the SMTP sink did not answer {command!r}")
            return self.pipe.recv()

        return await asyncio.to_thread(exchange)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def seed_message(n: int, person: Person, rng: random.Random) -> IncomingMessage:
    """A customer's first mail, as the IMAP intake hands it to the desk."""
    message_id = f"<seed.{n}.{rng.getrandbits(32):08x}@{person.domain}>"
    return IncomingMessage(
        customer=CustomerRef(name=person.name, email=person.address),
        channel=Channel.EMAIL,
        text=body_text(rng, person),
        external_id=message_id,
        dedup_key=("imap", f"1:{n + 1}"),
        reply_address=person.address,
        subject=rng.choice(SUBJECTS).format(n=rng.randint(10_000, 99_999)),
        new_ticket=True,
        auth="pass",
    )


def reply_text(rng: random.Random) -> str:
    opening = rng.choice(
        ["Hello,", "Hi,", "Thank you for writing to us.", "Sorry for the trouble."]
    )
    paragraphs = [" ".join(sentence(rng) for _ in range(rng.randint(1, 4)))]
    for _ in range(rng.choice([0, 1, 1, 2])):
        paragraphs.append(" ".join(sentence(rng) for _ in range(rng.randint(1, 3))))
    return "\n\n".join([opening, *paragraphs])


async def drain_email(
    sessions: async_sessionmaker[AsyncSession], desk: Desk, sink: Sink, wakeups: Wakeups
) -> None:
    """Deliver every pending email row (the receipts), untimed."""
    sender = SmtpSender(sink.settings(), SUPPORT)
    worker = OutboxWorker(sessions, {Route.EMAIL: sender}, desk, clock=utcnow, wakeup=wakeups.new())
    pending = (
        OutboxRow.route == Route.EMAIL.value,
        OutboxRow.status == OutboxStatus.PENDING.value,
    )
    try:
        while await worker.run_once():
            pass
    finally:
        await sender.close()
    left = await count(sessions, OutboxRow, *pending)
    if left:
        raise RuntimeError(f"{left} receipts were not delivered during the warm-up")


async def prepare_replies(
    sessions: async_sessionmaker[AsyncSession], desk: Desk, sink: Sink, wakeups: Wakeups
) -> float:
    """1,000 email tickets, their receipts delivered, one reply queued on each; the seconds
    the replies took to queue."""
    rng = random.Random(1_000)
    async with sessions.begin() as session:
        await add_agent(session, AGENT, Role.AGENT, "Sam Agent", at=utcnow(), actor="bench")
    tickets = [
        (await desk.receive(seed_message(n, person, rng))).ticket
        for n, person in enumerate(people(rng)[:REPLIES])
    ]
    await drain_email(sessions, desk, sink, wakeups)
    await sink.reset()
    began = time.perf_counter()
    for ticket in tickets:
        await desk.reply(ticket, AGENT, reply_text(rng))
    return time.perf_counter() - began


async def run_replies(kind: str, postgres_url: str, sink: Sink, args: argparse.Namespace) -> Result:
    async with database(kind, postgres_url) as data:
        sessions = data.sessions
        wakeups = Wakeups()
        desk = new_desk(sessions, wakeups)
        queued = await prepare_replies(sessions, desk, sink, wakeups)
        is_reply = OutboxRow.kind == OutboxKind.REPLY.value
        pending = OutboxRow.status == OutboxStatus.PENDING.value

        async def done() -> bool:
            return await count(sessions, OutboxRow, is_reply, pending) == 0

        settings = replace(sink.settings(), connections=args.smtp_connections)
        sender = SmtpSender(settings, SUPPORT)
        worker = OutboxWorker(
            sessions, {Route.EMAIL: sender}, desk, clock=utcnow, wakeup=wakeups.new()
        )
        stop = asyncio.Event()
        probe = Probe(
            f"replies on {kind}", data.engine, REPLY_STEPS, profile=args.profile, timed=args.steps
        )
        try:
            with tallied() as tally:
                meter = CpuMeter()
                meter.start()
                probe.start()
                began = time.perf_counter()
                task = asyncio.create_task(worker.run(stop, poll=0.5))
                seconds = await until(done, began, REPLIES_DEADLINE)
                probe.stop()
                cpu = meter.stop()
                stop.set()
                await asyncio.wait_for(task, 60)
        finally:
            await sender.close()
        probe.print_profile()
        result = await check_replies(kind, sessions, sink, seconds, cpu, tally)
        result.setup = f"queue {REPLIES / queued:,.0f}/s"
        result.connections = sender.connections_opened
        result.details[0] = (
            f"SMTP connections: {sender.connections_opened} opened by SmtpSender, "
            + result.details[0]
        )
        result.details.extend(probe.lines(REPLIES))
        if probe.steps:
            result.details.append(
                "  * every recipient's group waits for its batch: wall times overlap"
            )
        return result


async def check_replies(
    kind: str,
    sessions: async_sessionmaker[AsyncSession],
    sink: Sink,
    seconds: float,
    cpu: CpuUse,
    tally: WarningTally,
) -> Result:
    """Every reply row delivered, and the SMTP server got each reply's Message-ID once."""
    seen, message_ids, recipients, size = await sink.stats()
    async with sessions() as session:
        rows = (
            await session.execute(
                select(OutboxRow.status, OutboxRow.external_id).where(
                    OutboxRow.kind == OutboxKind.REPLY.value
                )
            )
        ).all()
    delivered = [row.external_id for row in rows if row.status == OutboxStatus.DELIVERED.value]
    failed = sum(1 for row in rows if row.status == OutboxStatus.FAILED.value)
    problems = []
    if len(delivered) != REPLIES:
        problems.append(f"{len(delivered)} of {REPLIES} replies delivered, {failed} failed")
    if sorted(message_ids) != sorted(i or "" for i in delivered):
        problems.append(
            f"the SMTP server accepted {len(message_ids)} mails "
            f"({len(set(message_ids))} distinct Message-IDs) for {len(delivered)} delivered rows"
        )
    average = size / len(message_ids) / 1024 if message_ids else 0.0
    details = [
        f"{seen} seen by the server",
        f"{len(message_ids):,} mails accepted, {recipients:,} recipients, "
        f"{average:.1f} KiB per mail on average",
        f"product warnings/errors logged: {tally.count}",
        *(f"  {line}" for line in tally.first),
    ]
    return Result(kind, "replies", REPLIES, seconds, cpu, "", details, problems)


# -- report ------------------------------------------------------------------------------------


def report(results: Sequence[Result], mails: Sequence[Sent]) -> None:
    kinds = {k: sum(1 for m in mails if m.kind == k) for k in ("new", "follow-up", "auto-reply")}
    multipart = sum(1 for m in mails if m.multipart)
    attached = sum(1 for m in mails if m.attachment)
    size = sum(len(m.raw) for m in mails) / len(mails) / 1024 if mails else 0
    if mails:
        print(
            f"\nintake workload: {len(mails):,} mails from {len({m.sender for m in mails}):,} "
            f"senders: {kinds['new']:,} new, {kinds['follow-up']:,} follow-ups, "
            f"{kinds['auto-reply']} auto-replies; {multipart:,} multipart/alternative, "
            f"{attached} with an attachment; {size:.1f} KiB per mail on average"
        )
    print(
        "CPU ms/mail: this process's CPU time per mail (with aiosqlite's threads; without "
        "Dovecot, the SMTP server or PostgreSQL); machine busy: all CPUs, whole machine\n"
    )
    rows = []
    for r in results:
        rows.append(
            [
                r.phase,
                r.kind,
                f"{r.count:,}",
                f"{r.seconds:.2f}" if r.finished else "timeout",
                f"{r.rate:,.0f}",
                f"{r.cpu_ms:.2f}",
                r.busy,
                "-" if r.connections is None else str(r.connections),
                r.setup,
                verdict(r.finished and r.rate >= TARGET_RATE and not r.problems),
            ]
        )
    header = ["phase", "database", "mails", "seconds", "mails/s", "CPU ms/mail", "machine busy"]
    header += ["SMTP conns", "untimed setup", "≥ 200/s"]
    print(table(header, rows))
    for r in results:
        print(f"\n{r.phase} on {r.kind}:")
        for line in r.details:
            print(f"  {line}")
        for problem in r.problems:
            print(f"  PROBLEM: {problem}")


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark IMAP intake and SMTP replies.")
    parser.add_argument("--db", choices=[*KINDS, "both"], default="both")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("TEST_DATABASE_URL") or DEFAULT_POSTGRES_URL,
        help="PostgreSQL server; a private schema is created and dropped "
        "(default: $TEST_DATABASE_URL or %(default)s)",
    )
    parser.add_argument("--phase", choices=["intake", "replies", "both"], default="both")
    parser.add_argument("--profile", action="store_true", help="run the timed parts under cProfile")
    parser.add_argument(
        "--smtp-connections",
        type=int,
        default=SmtpSettings.connections,
        help="SMTP connections the replies may use (default: the service's, %(default)s)",
    )
    parser.add_argument(
        "--steps", action="store_true", help="time the product's main steps inside the timed parts"
    )
    args = parser.parse_args()
    args.kinds = list(KINDS) if args.db == "both" else [args.db]
    args.phases = ["intake", "replies"] if args.phase == "both" else [args.phase]
    return args


async def main() -> int:
    args = parse_arguments()
    for label, value in await machine(args.kinds, args.postgres_url):
        print(f"{label}: {value}")
    mails: list[Sent] = []
    results: list[Result] = []
    with contextlib.ExitStack() as stack:
        dovecot = None
        if "intake" in args.phases:
            print("building the mails …", flush=True)
            mails = workload(random.Random(5_000))
            dovecot = stack.enter_context(private_dovecot())
        sink = None
        if "replies" in args.phases:
            sink = Sink()
            await sink.start()
            stack.callback(sink.stop)
        for kind in args.kinds:
            if dovecot is not None:
                print(f"intake on {kind} …", flush=True)
                results.append(await run_intake(kind, args.postgres_url, dovecot, mails, args))
            if sink is not None:
                print(f"replies on {kind} …", flush=True)
                results.append(await run_replies(kind, args.postgres_url, sink, args))
    report(results, mails)
    return 1 if any(r.problems for r in results) else 0


if __name__ == "__main__":
    sys.exit(launch(main))
