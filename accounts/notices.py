"""Automatic notices of account actions to the customer, over their channel.

They are outbox rows written in the caller's transaction, so a refund and the notice about it
are committed together or not at all. The customer's channel and address are those of their
latest message on the ticket (as for an agent's answer); email notices thread into the ticket.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tickets.model import Channel, Direction, OutboxKind, Route
from tickets.outbox import enqueue
from tickets.ports import Renderer
from tickets.tables import MailId, Message, Ticket

REFERENCES_KEPT = 20


async def notify_customer(
    session: AsyncSession,
    templates: Renderer,
    ticket_id: int,
    template: str,
    *,
    at: datetime,
    mail_domain: str,
    **context: Any,
) -> str | None:
    """Queue a factual notice to the ticket's customer; returns where it goes (or None)."""
    ticket = await session.get(Ticket, ticket_id)
    if ticket is None:
        return None
    last_in = (
        await session.scalars(
            select(Message)
            .where(
                Message.ticket_id == ticket_id,
                Message.direction == Direction.IN.value,
                Message.counts_for_sla.is_(True),
            )
            .order_by(Message.id.desc())
            .limit(1)
        )
    ).first()
    if last_in is None or not last_in.reply_address or last_in.channel is None:
        return None
    text = templates.render(template, ticket=ticket_id, **context)
    payload: dict[str, Any] = {
        "text": text,
        "ticket": ticket_id,
        "subject": ticket.subject,
        "automatic": True,
    }
    if last_in.channel == Channel.EMAIL.value:
        payload.update(await _mail_headers(session, ticket, last_in, at, mail_domain))
    enqueue(
        session,
        route=Route(last_in.channel),
        recipient=last_in.reply_address,
        kind=OutboxKind.NOTICE,
        payload=payload,
        at=at,
        ticket_id=ticket_id,
    )
    where = "email" if last_in.channel == Channel.EMAIL.value else "Telegram"
    return f"{where} ({last_in.reply_address})" if where == "email" else where


async def _mail_headers(
    session: AsyncSession, ticket: Ticket, answering: Message, at: datetime, domain: str
) -> dict[str, Any]:
    message_id = f"<notice-{ticket.id}-{uuid.uuid4().hex[:16]}@{domain}>"
    earlier = (
        await session.scalars(
            select(MailId.message_id)
            .where(MailId.ticket_id == ticket.id)
            .order_by(MailId.id.desc())
            .limit(REFERENCES_KEPT)
        )
    ).all()
    session.add(MailId(message_id=message_id, ticket_id=ticket.id, created_at=at))
    return {
        "message_id": message_id,
        "in_reply_to": answering.external_id,
        "references": list(reversed(earlier)),
        "subject_line": f"[#{ticket.id}] {ticket.subject or 'Your support request'}",
    }
