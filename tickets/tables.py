"""Storage schema (SQLAlchemy 2, typed). The same tables serve SQLite and PostgreSQL.

Every timestamp is an aware UTC datetime in Python. SQLite keeps it as naive UTC text of fixed
width, so comparisons and indexes still order correctly there.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every dialect."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads it as a class attribute
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        list[Any]: JSON(),
    }


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    telegram_id: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    plan: Mapped[str] = mapped_column(String(16), default="basic")
    created_at: Mapped[datetime]
    # An admin banned the customer: their messages are dropped and they get no answer.
    banned_at: Mapped[datetime | None]
    # Telegram refused delivery (the customer blocked the bot); cleared when they write again.
    unreachable_at: Mapped[datetime | None]
    # The customer sent /new: their next message opens a separate ticket.
    wants_new_ticket: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    # The language the customer picked with /language (a shipped locale, e.g. "ru"); it wins
    # over the one their Telegram or mail client says. None: not picked.
    language: Mapped[str | None] = mapped_column(String(16))
    # The locale their client named last (Telegram `language_code`, mail `Content-Language`),
    # kept for notices sent later (refunds, payouts, credits). None: none we ship.
    client_language: Mapped[str | None] = mapped_column(String(16))


class CustomerEmail(Base):
    __tablename__ = "customer_emails"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)


class Agent(Base):
    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(primary_key=True)
    telegram_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(16))
    added_at: Mapped[datetime]
    removed_at: Mapped[datetime | None]


class Ticket(Base):
    __tablename__ = "tickets"
    __table_args__ = (
        Index("ix_tickets_customer_status", "customer_id", "status", "id"),
        Index("ix_tickets_status_id", "status", "id"),
        # The queue: waiting tickets by due time, overall and per plan (see tickets/queue.py).
        Index(
            "ix_tickets_waiting_due",
            "due_at",
            "id",
            sqlite_where=text("due_at IS NOT NULL"),
            postgresql_where=text("due_at IS NOT NULL"),
        ),
        Index(
            "ix_tickets_waiting_plan_due",
            "plan",
            "due_at",
            "id",
            sqlite_where=text("due_at IS NOT NULL"),
            postgresql_where=text("due_at IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    channel: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(300), default="")
    status: Mapped[str] = mapped_column(String(16))
    # The customer's plan when the ticket was written to; kept in step by set_plan.
    plan: Mapped[str] = mapped_column(String(16))
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    # When the current assignee claimed it; a claim with no reply for long is released.
    claimed_at: Mapped[datetime | None]
    waiting_since: Mapped[datetime | None]
    # The customer message that started the running wait (no foreign key: messages refer to
    # tickets already). A reply answers the wait only if it was written after this message.
    waiting_message_id: Mapped[int | None] = mapped_column(Integer)
    due_at: Mapped[datetime | None]
    opened_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]
    # `/merge`: the ticket this one was merged into (closed since). A customer message or mail
    # that would join this ticket joins that one (tickets/customer_messages.py).
    merged_into_id: Mapped[int | None] = mapped_column(Integer)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("channel", "external_id"),
        Index("ix_messages_ticket_id", "ticket_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"))
    direction: Mapped[str] = mapped_column(String(8))
    channel: Mapped[str | None] = mapped_column(String(16))
    author_agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    text: Mapped[str] = mapped_column(Text, default="")
    attachments: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # Telegram "chat:message" or an email Message-ID; unique per channel (dedup, threading).
    external_id: Mapped[str | None] = mapped_column(String(512))
    # Where an answer to this message goes: a Telegram chat id or an email address.
    reply_address: Mapped[str | None] = mapped_column(String(320))
    counts_for_sla: Mapped[bool] = mapped_column(Boolean, default=True)
    # Email: the sender's SPF/DKIM/DMARC verdict ("pass", "fail", "none").
    auth: Mapped[str | None] = mapped_column(String(8))
    # Who wrote this message (email: the From address and name; a colleague writing into a
    # ticket is not its owner). Empty on messages stored before revision 0011.
    sender_address: Mapped[str | None] = mapped_column(String(320))
    sender_name: Mapped[str | None] = mapped_column(String(200))
    # An agent vouched (`/vouch N`) for this message's sender after it failed SPF/DKIM/DMARC.
    vouched_at: Mapped[datetime | None]
    # The raw source of a mail whose MIME structure was broken; the agents get it as `.eml`.
    raw_source: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    created_at: Mapped[datetime]
    delivery: Mapped[str | None] = mapped_column(String(16))
    delivered_at: Mapped[datetime | None]


class Response(Base):
    """One measured wait: from the first unanswered customer message to the delivered answer."""

    __tablename__ = "responses"
    __table_args__ = (
        # A month's figures are read from this index alone (tickets/reports/query.py).
        Index(
            "ix_responses_month_figures",
            "answered_at",
            "plan",
            "channel",
            "agent_id",
            "business_hours",
            "id",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), unique=True)
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    plan: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(16))
    waiting_since: Mapped[datetime]
    answered_at: Mapped[datetime]
    business_hours: Mapped[float] = mapped_column(Float)


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_ticket_id", "ticket_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(64))
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    action: Mapped[str] = mapped_column(String(64))
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class OutboxRow(Base):
    __tablename__ = "outbox"
    __table_args__ = (
        Index(
            "ix_outbox_pending",
            "available_at",
            "id",
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
        Index(
            "ix_outbox_pending_recipient",
            "route",
            "recipient",
            "id",
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    route: Mapped[str] = mapped_column(String(16))
    recipient: Mapped[str] = mapped_column(String(320))
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    available_at: Mapped[datetime]
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]
    external_id: Mapped[str | None] = mapped_column(String(512))
    # How far a row that takes several messages got (its sender's own record), so that a retry
    # after a crash sends only the rest.
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class InboundKey(Base):
    """Seen inbound events (Telegram update_id, IMAP UIDVALIDITY+UID, Message-ID): each once."""

    __tablename__ = "inbound_keys"
    __table_args__ = (UniqueConstraint("source", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(512))
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    received_at: Mapped[datetime]


class MessageEdit(Base):
    """An earlier or later text of a customer message that was edited after it was sent."""

    __tablename__ = "message_edits"

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    text: Mapped[str] = mapped_column(Text)
    edited_at: Mapped[datetime]


class RateWindow(Base):
    """The latest uses of one "N per window" rule by one holder (a user, an address, …).

    Counting a use locks this row first, so concurrent requests queue on it instead of each
    counting the same earlier uses (`tickets/rate_limits.py`).
    """

    __tablename__ = "rate_windows"

    rule: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str] = mapped_column(String(320), primary_key=True)
    # Epoch seconds of the holder's latest allowed uses (at most the rule's N), oldest first.
    uses: Mapped[list[Any]] = mapped_column(JSON)
    # When the holder was last told they are over the limit (told once per spell).
    told_at: Mapped[datetime | None]


class InboxEvent(Base):
    """An inbound event kept from when it was fetched, before its source is told so, until it
    has been handled (Telegram updates: `bot/polling.py`)."""

    __tablename__ = "inbox"

    source: Mapped[str] = mapped_column(String(16), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    received_at: Mapped[datetime]


class Quarantined(Base):
    """An inbound event that could not be processed, kept raw and reported, never dropped."""

    __tablename__ = "quarantine"
    __table_args__ = (Index("ix_quarantine_source_resolved", "source", "resolved_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(16))
    reference: Mapped[str] = mapped_column(String(200))
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    error: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]
    retries: Mapped[int] = mapped_column(Integer, default=0)


class MailId(Base):
    """Every Message-ID of a ticket's mail, sent or received: what email threading matches."""

    __tablename__ = "mail_ids"

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[str] = mapped_column(String(512), unique=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    created_at: Mapped[datetime]


class SlaAlert(Base):
    """A warning the SLA watch gave about one wait of a ticket: given once per wait, ever."""

    __tablename__ = "sla_alerts"
    __table_args__ = (UniqueConstraint("ticket_id", "wait_started_at", "kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"))
    # The ticket's waiting_since when the alert was given: a new wait gets new alerts.
    wait_started_at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(16))  # target | risk | breach | escalation
    created_at: Mapped[datetime]


class TicketTag(Base):
    """A word an agent put on a ticket (`/tag`): shown on its card and topic, counted in reports."""

    __tablename__ = "ticket_tags"
    __table_args__ = (Index("ix_ticket_tags_tag", "tag", "ticket_id"),)

    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime]


class PendingTicket(Base):
    """A ticket parked by `/pending` while the desk waits on its customer (issue 15, point 5).

    It is out of the SLA queue; the customer is reminded at `remind_at` and the ticket closes at
    `close_at`. A customer message after `after_message_id` ends it (the sweep drops the row);
    so does a close.
    """

    __tablename__ = "pending_tickets"
    __table_args__ = (Index("ix_pending_tickets_remind_at", "remind_at"),)

    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), primary_key=True)
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    since: Mapped[datetime]
    days: Mapped[int] = mapped_column(Integer)
    # The customer's latest message when it was parked: a newer one ends the wait on them.
    after_message_id: Mapped[int | None] = mapped_column(Integer)
    remind_at: Mapped[datetime]
    close_at: Mapped[datetime]
    reminded_at: Mapped[datetime | None]


class MessageFile(Base):
    """The bytes of a file a customer mailed (issue 15, point 2), kept so that the agents' feed
    can post it into the ticket's place. `position` is the file's index in the message's
    `attachments`; files over the mail intake's cap have no row (they are listed by size)."""

    __tablename__ = "message_files"

    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class SatisfactionAsk(Base):
    """The one satisfaction ask of a ticket (issue 15, point 7) and its score, once given.

    One row per ticket, ever: a ticket closed twice is asked once. `agent_id` is the agent whose
    delivered answer was the ticket's last when it was asked: the score counts for them.
    """

    __tablename__ = "satisfaction"
    __table_args__ = (Index("ix_satisfaction_answered_at", "answered_at"),)

    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), primary_key=True)
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    channel: Mapped[str] = mapped_column(String(16))
    asked_at: Mapped[datetime]
    score: Mapped[int | None] = mapped_column(Integer)
    answered_at: Mapped[datetime | None]


# The tables as SQLAlchemy Core sees them, for the batched statements of intake and delivery.
customers = cast(Table, Customer.__table__)
customer_emails = cast(Table, CustomerEmail.__table__)
tickets = cast(Table, Ticket.__table__)
messages = cast(Table, Message.__table__)
inbound_keys = cast(Table, InboundKey.__table__)
mail_ids = cast(Table, MailId.__table__)
outbox = cast(Table, OutboxRow.__table__)
audit_log = cast(Table, AuditEntry.__table__)
message_files = cast(Table, MessageFile.__table__)
