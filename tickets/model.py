"""Values and states of the support domain, shared by the core and the adapters."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Channel(StrEnum):
    """How a customer reached us; answers go back the same way."""

    TELEGRAM = "telegram"
    EMAIL = "email"


class Plan(StrEnum):
    BASIC = "basic"
    PRO = "pro"


class TicketStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class Direction(StrEnum):
    """`IN` from the customer, `OUT` an agent's answer, `NOTE` internal and never sent."""

    IN = "in"
    OUT = "out"
    NOTE = "note"


class DeliveryState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    BOUNCED = "bounced"


class Role(StrEnum):
    AGENT = "agent"
    ADMIN = "admin"


class Route(StrEnum):
    """Where an outbox row goes: a customer's channel, or the agents' group."""

    TELEGRAM = "telegram"
    EMAIL = "email"
    AGENTS = "agents"
    BILLING = "billing"  # a write back to the business's billing system (accounts.billing)


class OutboxKind(StrEnum):
    RECEIPT = "receipt"
    REPLY = "reply"
    AGENT_NOTICE = "agent_notice"
    LINK_CODE = "link_code"  # the one-time code that links a Telegram user to an account
    # An automatic factual notice to a customer (refund on its way, payout sent, …).
    NOTICE = "notice"
    # Writes back to the billing system (route BILLING), each with the desk's idempotency key.
    BILLING_REFUND = "billing_refund"
    BILLING_DOWNGRADE = "billing_downgrade"
    BILLING_CREDIT = "billing_credit"
    # The bot's answer to a customer's command (/start, /status, …).
    ANSWER = "answer"


class OutboxStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class Urgency(StrEnum):
    """Where a ticket stands against its SLA; the queue's first key."""

    BREACHED = "breached"
    AT_RISK = "at_risk"
    ON_TRACK = "on_track"
    NOT_WAITING = "not_waiting"


ID_LIMIT = 500
# Row ids (tickets, payouts, quarantined mail …) are INTEGER columns, 32 bits on PostgreSQL:
# nothing larger names a row on either database.
MAX_ROW_ID = 2**31 - 1


def bounded_id(value: str) -> str:
    """External ids fit their column; an absurdly long one is kept as its SHA-256, still unique."""
    if len(value) <= ID_LIMIT:
        return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def storable_text(text: str) -> str:
    """Text as every database can keep it: NUL, which PostgreSQL refuses, becomes U+FFFD."""
    return text.replace("\x00", "\ufffd")


@dataclass(frozen=True)
class Attachment:
    """A file that came with a message; `ref` is the channel's handle (Telegram file_id, …).

    `data` holds the bytes when the channel has them at hand (a mailed file under the intake's
    cap): they are kept in `message_files`, never in the message's JSON.
    """

    kind: str
    ref: str
    filename: str | None = None
    mime_type: str | None = None
    size: int | None = None
    data: bytes | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "ref": self.ref,
            "filename": self.filename,
            "mime_type": self.mime_type,
            "size": self.size,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Attachment:
        return cls(
            kind=str(data["kind"]),
            ref=str(data["ref"]),
            filename=data.get("filename"),
            mime_type=data.get("mime_type"),
            size=data.get("size"),
        )


@dataclass(frozen=True)
class CustomerRef:
    """Who wrote: a Telegram user, or an email address (exactly one of the two)."""

    name: str = ""
    telegram_id: int | None = None
    email: str | None = None
    # The shipped locale their client names (Telegram `language_code`, mail `Content-Language`),
    # None when it names none we ship; what they picked with /language wins over it.
    language: str | None = None

    def __post_init__(self) -> None:
        if (self.telegram_id is None) == (self.email is None):
            raise ValueError("a customer is named by exactly one of telegram_id or email")


@dataclass(frozen=True)
class IncomingMessage:
    """A customer message as an adapter hands it to the core.

    `dedup_key` (source, key) makes redelivery harmless: the same key is stored once. `ticket` names
    the ticket an email threads into; `new_ticket` asks for a separate ticket (`/new`, unthreaded
    mail). `automated` marks machine-generated mail: it is kept and shown, but gets no receipt and
    neither starts nor extends an SLA wait.
    """

    customer: CustomerRef
    channel: Channel
    text: str
    attachments: tuple[Attachment, ...] = ()
    external_id: str | None = None
    dedup_key: tuple[str, str] | None = None
    reply_address: str | None = None
    subject: str = ""
    ticket: int | None = None
    new_ticket: bool = False
    automated: bool = False
    received_at: datetime | None = None
    # Email only: Message-IDs from In-Reply-To/References, the subject's [#N] tag, the sender's
    # authentication verdict ("pass", "fail", "none"), and the Message-IDs a bounce reports.
    thread_refs: tuple[str, ...] = ()
    ticket_tag: int | None = None
    auth: str | None = None
    bounce_of: tuple[str, ...] = ()
    # Who wrote this very message (a colleague in a ticket is not its owner; a bounce is
    # filed under the address our mail went to but was written by a mail server).
    sender_address: str | None = None
    sender_name: str = ""
    # Email from the support address itself (an agent's answer from a mail client, or our own
    # receipt sent back by a forwarder): never a customer message (see docs/decisions.md).
    from_desk: bool = False
    # The raw source of a mail whose MIME structure was broken, kept for the agents as `.eml`.
    raw_source: bytes | None = None


@dataclass(frozen=True)
class Intake:
    """What became of an incoming message."""

    ticket: int
    message_id: int
    opened: bool = False
    reopened: bool = False
    duplicate: bool = False
    receipt: bool = False
    # The customer is banned: nothing was stored and nobody is told.
    ignored: bool = False


@dataclass(frozen=True)
class QueueEntry:
    """One line of the queue, as agents see it."""

    ticket: int
    customer: str
    plan: Plan
    channel: Channel
    subject: str
    assignee: str | None
    waiting_since: datetime | None
    due_at: datetime | None
    urgency: Urgency
    hours_left: float | None


@dataclass(frozen=True)
class MessageView:
    id: int
    direction: Direction
    channel: Channel | None
    author: str
    text: str
    attachments: tuple[Attachment, ...]
    created_at: datetime
    delivery: DeliveryState | None
    external_id: str | None
    # Email: the sender's address, its SPF/DKIM/DMARC verdict, and whether it was automated.
    sender_address: str | None = None
    auth: str | None = None
    automated: bool = False
    vouched: bool = False


@dataclass(frozen=True)
class TicketView:
    """A ticket with its history, for `tickets show` and the agents' views."""

    number: int
    status: TicketStatus
    channel: Channel
    plan: Plan
    subject: str
    customer: str
    customer_id: int
    assignee: str | None
    opened_at: datetime
    closed_at: datetime | None
    waiting_since: datetime | None
    due_at: datetime | None
    urgency: Urgency
    messages: tuple[MessageView, ...] = field(default=())
    # A customer message failed SPF/DKIM/DMARC and no agent has vouched for it yet.
    unverified: bool = False


@dataclass(frozen=True)
class AgentView:
    telegram_id: int
    name: str
    role: Role
    added_at: datetime


@dataclass(frozen=True)
class QueueStats:
    """The live state of the desk, for `/stats`."""

    open: int
    waiting: int
    at_risk: int
    breached: int
    oldest_wait: datetime | None
    # Responses answered since midnight (the SLA calendar's zone) and their median business hours.
    answered_today: int = 0
    median_today: float | None = None
