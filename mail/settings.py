"""The email channel's settings sections (IMAP in, SMTP out); `supportbot.settings` reads them
from the environment."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Tls(StrEnum):
    NONE = "none"
    STARTTLS = "starttls"
    TLS = "tls"


@dataclass(frozen=True)
class ImapSettings:
    host: str
    port: int
    user: str
    password: str = field(repr=False)
    tls: Tls
    mailbox: str


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    user: str
    password: str = field(repr=False)
    tls: Tls
    connections: int = 2  # at most this many open at once, each reused from mail to mail
