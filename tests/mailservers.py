"""Real mail peers on loopback: a private Dovecot (IMAP) and a recording aiosmtpd (SMTP).

Dovecot runs as `dovecot -F -c CONF` from a directory under /tmp that the dovecot user can read
(pytest's tmp_path is private to root), with a passwd-file user and free loopback ports; it is
started once per session and stopped at the end. Without Dovecot the IMAP tests are skipped on a
developer's machine and fail under CI=true. TLS material for both servers comes from `openssl`.
Test modules import the fixtures they use (`dovecot_fixture` and so on, registered under their
short names: `dovecot`, `mailbox`, `tls_files`, `smtp_server`).
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import imaplib
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from mail.settings import ImapSettings, SmtpSettings, Tls
from tests.conftest import IN_CI

T = TypeVar("T")
USER = "support"
PASSWORD = "imap-secret"
SUPPORT = "support@example.com"


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


# Dovecot delays every login from an address that just failed one (seconds, doubling); tests of a
# wrong password connect from IPv6 loopback where there is one, so that nothing else waits.
OTHER_LOOPBACK = "::1" if _ipv6_loopback() else "127.0.0.1"


def need(condition: bool, reason: str) -> None:
    """Skip when a peer is missing, except under CI=true, where that is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required under CI=true: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    """A loopback port nobody listens on right now (aiosmtpd's Controller cannot take 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


async def eventually(check: Callable[[], Awaitable[T]], within: float = 5.0) -> T:
    """Poll `check` until it returns something truthy, or fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still {value!r} after {within}s")
        await asyncio.sleep(0.05)


# -- TLS -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    """A self-signed certificate for 127.0.0.1 and the client context that trusts it."""

    cert: Path
    key: Path

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.cert), str(self.key))
        return context


def make_tls_files(directory: Path) -> TlsFiles | None:
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    cert.chmod(0o644)
    key.chmod(0o600)
    return TlsFiles(cert, key)


# -- Dovecot -------------------------------------------------------------------------------------


class Dovecot:
    """A private Dovecot with one passwd-file user; mailboxes are made per test."""

    def __init__(self, binary: str, root: Path, tls: TlsFiles | None) -> None:
        self.binary = binary
        self.root = root
        self.tls = tls
        self.port = free_port()
        self.tls_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.config = root / "dovecot.conf"
        self._write_config()

    def _write_config(self) -> None:
        root = self.root
        home = root / "home" / USER
        home.mkdir(parents=True)
        if os.geteuid() == 0:
            owner = pwd.getpwnam("nobody")
            uid, gid = owner.pw_uid, owner.pw_gid
            users = ""
        else:
            uid, gid = os.getuid(), os.getgid()
            me = pwd.getpwuid(uid).pw_name
            users = f"default_internal_user = {me}\ndefault_login_user = {me}\n"
        os.chown(home, uid, gid)
        passwd = root / "passwd"
        passwd.write_text(f"{USER}:{{PLAIN}}{PASSWORD}:{uid}:{gid}::{home}::\n")
        passwd.chmod(0o644)
        ssl_lines = "ssl = no\n"
        if self.tls is not None:
            ssl_lines = f"ssl = yes\nssl_cert = <{self.tls.cert}\nssl_key = <{self.tls.key}\n"
        self.config.write_text(
            f"""base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
{users}{ssl_lines}disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
mail_location = maildir:~/Maildir
first_valid_uid = 1
first_valid_gid = 1
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {passwd}
}}
service imap-login {{
  inet_listener imap {{
    address = {", ".join(dict.fromkeys(["127.0.0.1", OTHER_LOOPBACK]))}
    port = {self.port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.tls_port if self.tls is not None else 0}
    ssl = yes
  }}
}}
"""
        )
        (root / "state").mkdir(exist_ok=True)

    def start(self) -> None:
        """Start the server and wait until it accepts connections (about 30 ms)."""
        log = (self.root / "stderr.log").open("ab")
        self.process = subprocess.Popen(
            [self.binary, "-F", "-c", str(self.config)],
            stdout=log,
            stderr=log,
            start_new_session=True,  # its own process group: stop() ends every child with it
        )
        log.close()
        deadline = time.monotonic() + 10
        while not port_open(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dovecot did not start:\n{self.logs()}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the server and all its processes, so its clients' connections drop with it."""
        process, self.process = self.process, None
        if process is None:
            return
        group = process.pid  # the group started by start_new_session has the master's pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)  # imap processes that outlived their master
        deadline = time.monotonic() + 5
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.02)

    def restart(self) -> None:
        self.stop()
        self.start()

    def logs(self) -> str:
        parts = []
        for name in ("stderr.log", "dovecot.log"):
            path = self.root / name
            if path.exists():
                parts.append(path.read_text(errors="replace")[-4000:])
        return "\n".join(parts)

    def settings(
        self, mailbox: str, tls: Tls = Tls.NONE, password: str = PASSWORD, host: str = "127.0.0.1"
    ) -> ImapSettings:
        """How the intake reaches this server (a wrong password: use OTHER_LOOPBACK, see there)."""
        port = self.tls_port if tls is Tls.TLS else self.port
        return ImapSettings(
            host=host, port=port, user=USER, password=password, tls=tls, mailbox=mailbox
        )

    @contextlib.contextmanager
    def client(self) -> Iterator[imaplib.IMAP4]:
        """A logged-in imaplib connection (the tests' own mail client)."""
        connection = imaplib.IMAP4("127.0.0.1", self.port)
        try:
            connection.login(USER, PASSWORD)
            yield connection
        finally:
            with contextlib.suppress(Exception):
                connection.logout()

    def create(self, mailbox: str) -> None:
        with self.client() as imap:
            _ok(imap.create(mailbox))

    def delete(self, mailbox: str) -> None:
        with self.client() as imap:
            _ok(imap.delete(mailbox))

    def append(
        self, mailbox: str, raw: bytes, *, seen: bool = False, when: datetime | None = None
    ) -> int:
        """APPEND one mail as delivery would; returns its UID."""
        return self.append_many(mailbox, [raw], seen=seen, when=when)[0]

    def append_many(
        self,
        mailbox: str,
        raws: Sequence[bytes],
        *,
        seen: bool = False,
        when: datetime | None = None,
    ) -> list[int]:
        uids = []
        with self.client() as imap:
            for raw in raws:
                flags = r"(\Seen)" if seen else None
                typ, data = imap.append(mailbox, flags, when, raw)
                _ok((typ, data))
                found = re.search(rb"APPENDUID \d+ (\d+)", data[0] or b"")
                uids.append(int(found.group(1)) if found else 0)
        return uids

    def flags(self, mailbox: str) -> dict[int, str]:
        """UID → the FLAGS list as text, for every mail in the mailbox."""
        with self.client() as imap:
            _ok(imap.select(mailbox, readonly=True))
            typ, data = imap.uid("FETCH", "1:*", "(UID FLAGS)")
            _ok((typ, data))
        found = {}
        for item in data:
            if isinstance(item, bytes):
                match = re.search(rb"UID (\d+) FLAGS \(([^)]*)\)", item)
                if match is None:
                    match = re.search(rb"FLAGS \(([^)]*)\) UID (\d+)", item)
                    if match is None:
                        continue
                    found[int(match.group(2))] = match.group(1).decode()
                    continue
                found[int(match.group(1))] = match.group(2).decode()
        return found

    def uidvalidity(self, mailbox: str) -> int:
        with self.client() as imap:
            typ, data = imap.status(mailbox, "(UIDVALIDITY)")
            _ok((typ, data))
        match = re.search(rb"UIDVALIDITY (\d+)", data[0] or b"")
        assert match is not None
        return int(match.group(1))


def _ok(result: tuple[str, Any]) -> None:
    typ, data = result
    if typ != "OK":
        raise RuntimeError(f"IMAP command failed: {typ} {data!r}")


def dovecot_binary() -> str | None:
    return shutil.which("dovecot") or (
        "/usr/sbin/dovecot" if os.access("/usr/sbin/dovecot", os.X_OK) else None
    )


@pytest.fixture(scope="session", name="tls_files")
def tls_files_fixture() -> Iterator[TlsFiles]:
    """A certificate for 127.0.0.1 (in a directory the dovecot user can read)."""
    directory = Path(tempfile.mkdtemp(prefix="supportbot-tls-", dir="/tmp"))
    directory.chmod(0o755)
    try:
        made = make_tls_files(directory)
        need(made is not None, "openssl is not installed")
        assert made is not None
        yield made
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session", name="dovecot")
def dovecot_fixture(tls_files: TlsFiles) -> Iterator[Dovecot]:
    """One private Dovecot for the whole session, with STARTTLS and an implicit-TLS port."""
    binary = dovecot_binary()
    need(binary is not None, "dovecot is not installed (apt-get install dovecot-imapd)")
    assert binary is not None
    root = Path(tempfile.mkdtemp(prefix="supportbot-dovecot-", dir="/tmp"))
    root.chmod(0o755)
    server = Dovecot(binary, root, tls_files)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(name="mailbox")
def mailbox_fixture(dovecot: Dovecot) -> Iterator[str]:
    """A fresh, empty mailbox of the test user, for one test."""
    name = f"T{uuid.uuid4().hex[:12]}"
    dovecot.create(name)
    yield name
    if dovecot.process is None:
        dovecot.start()
    with contextlib.suppress(Exception):
        dovecot.delete(name)


def customer_mail(
    sender: str = "Ann Example <ann@example.org>",
    subject: str = "Top-up missing",
    body: str = "My top-up is not on my balance.",
    *,
    message_id: str | None = None,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
    to: str = SUPPORT,
    date: datetime | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    """A plain customer mail as a mail client would send it."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = message_id or make_msgid(domain="example.org")
    if date is not None:
        msg["Date"] = format_datetime(date)
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = " ".join(references)
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    return msg.as_bytes()


# -- SMTP ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """One mail as the SMTP server got it."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    peer: Any

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class RecordingHandler:
    """Records envelopes; tests queue replies (e.g. "451 …", "550 …") for RCPT or DATA.

    `silent_after_data` mails are taken and recorded, then the connection is closed before the
    answer: the client cannot know the mail arrived.
    """

    received: list[Received] = field(default_factory=list)
    rcpt_replies: deque[str] = field(default_factory=deque)
    data_replies: deque[str] = field(default_factory=deque)
    silent_after_data: int = 0
    peers: list[Any] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        with self.lock:
            if session.peer not in self.peers:
                self.peers.append(session.peer)
        session.host_name = hostname
        return responses

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        with self.lock:
            reply = self.rcpt_replies.popleft() if self.rcpt_replies else None
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            reply = self.data_replies.popleft() if self.data_replies else None
            if reply is not None:
                return reply
            self.received.append(
                Received(
                    mail_from=envelope.mail_from,
                    rcpt_tos=tuple(envelope.rcpt_tos),
                    data=bytes(envelope.original_content or envelope.content),
                    peer=session.peer,
                )
            )
            silent = self.silent_after_data > 0
            self.silent_after_data -= silent
        if silent:
            server.transport.close()
        return "250 Message accepted for delivery"

    @property
    def connections(self) -> int:
        """How many client connections said EHLO (a STARTTLS re-EHLO is the same one)."""
        with self.lock:
            return len(self.peers)


class SmtpServer:
    """An aiosmtpd Controller on a port picked here, in its own thread."""

    def __init__(self, **options: Any) -> None:
        self.handler = RecordingHandler()
        self.options = options
        self.port = free_port()
        self.controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(
            self.handler, hostname="127.0.0.1", port=self.port, **self.options
        )
        self.controller.start()
        with self.handler.lock:
            self.handler.peers.clear()

    def stop(self) -> None:
        controller, self.controller = self.controller, None
        if controller is not None:
            controller.stop()

    def settings(self, tls: Tls = Tls.NONE, user: str = "", password: str = "") -> SmtpSettings:
        return SmtpSettings(host="127.0.0.1", port=self.port, user=user, password=password, tls=tls)

    @property
    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)


def password_check(user: str, password: str) -> Callable[..., AuthResult]:
    """An aiosmtpd authenticator accepting one user (a refusal must not be 'handled')."""

    def check(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        if isinstance(data, LoginPassword) and (data.login, data.password) == (
            user.encode(),
            password.encode(),
        ):
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    return check


@pytest.fixture(name="smtp_server")
def smtp_server_fixture() -> Iterator[SmtpServer]:
    """A plain recording SMTP server on loopback."""
    server = SmtpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def service_mail_settings(dovecot: Dovecot, mailbox: str, smtp: SmtpServer) -> dict[str, str]:
    """The settings that run the service's email channel against these two servers."""
    imap = dovecot.settings(mailbox)
    return {
        "IMAP_HOST": imap.host,
        "IMAP_PORT": str(imap.port),
        "IMAP_USER": USER,
        "IMAP_PASSWORD": imap.password,
        "IMAP_TLS": "none",
        "IMAP_MAILBOX": mailbox,
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp.port),
        "SMTP_TLS": "none",
        "SUPPORT_ADDRESS": SUPPORT,
    }
