"""Automatic factual notices to a ticket's customer, over their channel.

They are outbox rows written in the caller's transaction, so a change and the notice about it
are committed together or not at all. The customer's channel and address are those of their
latest message on the ticket (as for an agent's answer); email notices thread into the ticket.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from tickets.customer_lookup import locale_of
from tickets.customer_messages import answering
from tickets.mail_threads import thread_headers
from tickets.model import Channel, OutboxKind, Route
from tickets.payloads import NoticePayload, add_mail_headers, enqueue
from tickets.ports import Renderer
from tickets.tables import Ticket


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
    return await queue_notice(
        session,
        templates,
        ticket_id,
        {"": template},
        at=at,
        mail_domain=mail_domain,
        context=context,
    )


async def queue_notice(
    session: AsyncSession,
    templates: Renderer,
    ticket_id: int,
    template_by_channel: dict[str, str],
    *,
    at: datetime,
    mail_domain: str,
    context: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> str | None:
    """`notify_customer` with a template per channel (`""`: any other) and `extra` payload keys
    that the channel's sender reads (e.g. the satisfaction buttons on Telegram)."""
    ticket = await session.get(Ticket, ticket_id)
    if ticket is None:
        return None
    last_in = await answering(session, ticket_id)
    if last_in is None or not last_in.reply_address or last_in.channel is None:
        return None
    chosen = template_by_channel.get(last_in.channel) or template_by_channel[""]
    locale = await locale_of(await session.connection(), ticket.customer_id)
    text = templates.render(chosen, locale=locale, ticket=ticket_id, **context)
    payload: NoticePayload = {
        "text": text,
        "ticket": ticket_id,
        "subject": ticket.subject,
        "automatic": True,
        "locale": locale,
    }
    payload.update(extra or {})  # type: ignore[typeddict-item]
    if last_in.channel == Channel.EMAIL.value:
        headers = await thread_headers(
            await session.connection(),
            ticket_id=ticket.id,
            subject=ticket.subject or templates.render("mail/subject", locale=locale),
            in_reply_to=last_in.external_id,
            kind="notice",
            at=at,
            domain=mail_domain,
        )
        add_mail_headers(payload, headers)
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
