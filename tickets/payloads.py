"""What an outbox row's payload holds, one shape per kind, and the two ways a row is written.

The payload is stored as JSON; these TypedDicts describe that JSON exactly as every writer has
written it, so rows queued before they existed read the same. `enqueue` (ORM, in the caller's
transaction) and `outbox_row` (column values for a Core insert) pair each `OutboxKind` (a
`Literal`) with its payload type, so a row of one kind cannot be written with another's
payload. Senders still read a row through `OutboxItem.payload` (a mapping, since its kind is
only known at run time) and treat every key but `text` as optional.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Required, TypedDict, overload

from sqlalchemy.ext.asyncio import AsyncSession

from tickets.model import OutboxKind, OutboxStatus, Route
from tickets.tables import OutboxRow


class MailHeaders(TypedDict, total=False):
    """What a mail to a customer carries to thread into its ticket (`tickets.mail_threads`)."""

    message_id: str
    in_reply_to: str | None
    references: list[str]
    subject_line: str
    locale: str  # the customer's: the mail sender writes the footer in it (issue 16)


def add_mail_headers(payload: MailHeaders, headers: MailHeaders) -> None:
    """Put a mail's threading headers into the payload of a row that goes out by email."""
    payload.update(headers)


class ReplyPayload(MailHeaders, total=False):
    """An agent's answer to the customer (`OutboxKind.REPLY`)."""

    text: Required[str]
    attachments: list[dict[str, Any]]
    ticket: int
    subject: str
    agent: str | None


class ReceiptPayload(MailHeaders, total=False):
    """The automatic receipt of a new ticket or message (`OutboxKind.RECEIPT`)."""

    text: Required[str]
    ticket: int
    subject: str
    automatic: bool


class NoticePayload(MailHeaders, total=False):
    """An automatic factual notice to a customer: refund, payout, credit, slow down."""

    text: Required[str]
    event: str
    ticket: int
    subject: str
    automatic: bool


class LinkCodePayload(MailHeaders, total=False):
    """The mail with a one-time code that links a Telegram user to an account."""

    text: Required[str]
    automatic: bool


class AnswerPayload(TypedDict):
    """The bot's answer to a customer's command (/start, /status, …)."""

    text: str
    automatic: bool


class AgentNoticePayload(TypedDict, total=False):
    """A notice to the agents' group (`tickets.notices`).

    Beside these keys it holds the notice's own facts (the template's context), which differ
    from event to event.
    """

    text: Required[str]
    event: str
    ticket: int | None
    plan: str
    channel: str
    subject: str
    due_at: str | None


class PayoutJson(TypedDict):
    payment_id: int
    payment_ref: str
    purpose: str
    amount: str
    currency: str
    chain: str
    wallet: str


class BillingWritePayload(TypedDict):
    """A write back to the billing system (`accounts.billing.BillingWrite.to_json`)."""

    kind: str
    key: str
    account_id: int
    account_ref: str | None
    email: str
    at: str
    amount: str
    refund_id: int | None
    ticket_id: int | None
    payouts: list[PayoutJson]
    month: str | None
    net_spend: str | None
    uptime: str | None
    reason: str


BillingKind = Literal[
    OutboxKind.BILLING_REFUND, OutboxKind.BILLING_DOWNGRADE, OutboxKind.BILLING_CREDIT
]

OutboxPayload = (
    ReplyPayload
    | ReceiptPayload
    | NoticePayload
    | LinkCodePayload
    | AnswerPayload
    | AgentNoticePayload
    | BillingWritePayload
)


@overload
def enqueue(
    session: AsyncSession,
    *,
    route: Route,
    recipient: str,
    kind: Literal[OutboxKind.REPLY],
    payload: ReplyPayload,
    at: datetime,
    ticket_id: int | None = None,
    message_id: int | None = None,
) -> OutboxRow: ...


@overload
def enqueue(
    session: AsyncSession,
    *,
    route: Route,
    recipient: str,
    kind: Literal[OutboxKind.RECEIPT],
    payload: ReceiptPayload,
    at: datetime,
    ticket_id: int | None = None,
    message_id: int | None = None,
) -> OutboxRow: ...


@overload
def enqueue(
    session: AsyncSession,
    *,
    route: Route,
    recipient: str,
    kind: Literal[OutboxKind.NOTICE],
    payload: NoticePayload,
    at: datetime,
    ticket_id: int | None = None,
    message_id: int | None = None,
) -> OutboxRow: ...


@overload
def enqueue(
    session: AsyncSession,
    *,
    route: Route,
    recipient: str,
    kind: Literal[OutboxKind.LINK_CODE],
    payload: LinkCodePayload,
    at: datetime,
    ticket_id: int | None = None,
    message_id: int | None = None,
) -> OutboxRow: ...


@overload
def enqueue(
    session: AsyncSession,
    *,
    route: Route,
    recipient: str,
    kind: Literal[OutboxKind.ANSWER],
    payload: AnswerPayload,
    at: datetime,
    ticket_id: int | None = None,
    message_id: int | None = None,
) -> OutboxRow: ...


@overload
def enqueue(
    session: AsyncSession,
    *,
    route: Route,
    recipient: str,
    kind: Literal[OutboxKind.AGENT_NOTICE],
    payload: AgentNoticePayload,
    at: datetime,
    ticket_id: int | None = None,
    message_id: int | None = None,
) -> OutboxRow: ...


@overload
def enqueue(
    session: AsyncSession,
    *,
    route: Route,
    recipient: str,
    kind: BillingKind,
    payload: BillingWritePayload,
    at: datetime,
    ticket_id: int | None = None,
    message_id: int | None = None,
) -> OutboxRow: ...


def enqueue(
    session: AsyncSession,
    *,
    route: Route,
    recipient: str,
    kind: OutboxKind,
    payload: OutboxPayload,
    at: datetime,
    ticket_id: int | None = None,
    message_id: int | None = None,
) -> OutboxRow:
    """Write a row in the caller's transaction; it is sent only if that transaction commits."""
    row = OutboxRow(
        **_row(route, recipient, kind, payload, at, ticket_id=ticket_id, message_id=message_id)
    )
    session.add(row)
    return row


@overload
def outbox_row(
    route: Route,
    recipient: str,
    kind: Literal[OutboxKind.REPLY],
    payload: ReplyPayload,
    at: datetime,
    *,
    ticket_id: int | None = None,
    message_id: int | None = None,
) -> dict[str, Any]: ...


@overload
def outbox_row(
    route: Route,
    recipient: str,
    kind: Literal[OutboxKind.RECEIPT],
    payload: ReceiptPayload,
    at: datetime,
    *,
    ticket_id: int | None = None,
    message_id: int | None = None,
) -> dict[str, Any]: ...


@overload
def outbox_row(
    route: Route,
    recipient: str,
    kind: Literal[OutboxKind.NOTICE],
    payload: NoticePayload,
    at: datetime,
    *,
    ticket_id: int | None = None,
    message_id: int | None = None,
) -> dict[str, Any]: ...


@overload
def outbox_row(
    route: Route,
    recipient: str,
    kind: Literal[OutboxKind.LINK_CODE],
    payload: LinkCodePayload,
    at: datetime,
    *,
    ticket_id: int | None = None,
    message_id: int | None = None,
) -> dict[str, Any]: ...


@overload
def outbox_row(
    route: Route,
    recipient: str,
    kind: Literal[OutboxKind.ANSWER],
    payload: AnswerPayload,
    at: datetime,
    *,
    ticket_id: int | None = None,
    message_id: int | None = None,
) -> dict[str, Any]: ...


@overload
def outbox_row(
    route: Route,
    recipient: str,
    kind: Literal[OutboxKind.AGENT_NOTICE],
    payload: AgentNoticePayload,
    at: datetime,
    *,
    ticket_id: int | None = None,
    message_id: int | None = None,
) -> dict[str, Any]: ...


@overload
def outbox_row(
    route: Route,
    recipient: str,
    kind: BillingKind,
    payload: BillingWritePayload,
    at: datetime,
    *,
    ticket_id: int | None = None,
    message_id: int | None = None,
) -> dict[str, Any]: ...


def outbox_row(
    route: Route,
    recipient: str,
    kind: OutboxKind,
    payload: OutboxPayload,
    at: datetime,
    *,
    ticket_id: int | None = None,
    message_id: int | None = None,
) -> dict[str, Any]:
    """The column values of a new pending outbox row (for a Core insert)."""
    return _row(route, recipient, kind, payload, at, ticket_id=ticket_id, message_id=message_id)


def _row(
    route: Route,
    recipient: str,
    kind: OutboxKind,
    payload: OutboxPayload,
    at: datetime,
    *,
    ticket_id: int | None,
    message_id: int | None,
) -> dict[str, Any]:
    return {
        "route": route.value,
        "recipient": recipient,
        "kind": kind.value,
        "payload": payload,
        "ticket_id": ticket_id,
        "message_id": message_id,
        "status": OutboxStatus.PENDING.value,
        "attempts": 0,
        "available_at": at,
        "lease_owner": None,
        "lease_until": None,
        "last_error": None,
        "created_at": at,
        "delivered_at": None,
        "external_id": None,
    }
