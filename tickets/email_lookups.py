"""What the email intake asks of the core's tables, as named queries: whether a mail is already
stored, where a bounced mail of ours had gone, whether a broken mail was already set aside."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tickets.model import Channel, Direction
from tickets.tables import MailId, Message, Quarantined


async def bounced_address(
    sessions: async_sessionmaker[AsyncSession], keys: Sequence[str]
) -> str | None:
    """The address our bounced mail (one of these Message-IDs) went to: a reply's, or for a
    receipt its ticket's latest customer address."""
    async with sessions() as session:
        address = await session.scalar(
            select(Message.reply_address)
            .where(
                Message.channel == Channel.EMAIL.value,
                Message.direction == Direction.OUT.value,
                Message.external_id.in_(keys),
            )
            .limit(1)
        )
        if address:
            return str(address)
        ticket = await session.scalar(
            select(MailId.ticket_id).where(MailId.message_id.in_(keys)).limit(1)
        )
        if ticket is None:
            return None
        address = await session.scalar(
            select(Message.reply_address)
            .where(
                Message.ticket_id == ticket,
                Message.channel == Channel.EMAIL.value,
                Message.direction == Direction.IN.value,
                Message.counts_for_sla.is_(True),
            )
            .order_by(Message.id.desc())
            .limit(1)
        )
    return str(address) if address else None


async def mail_stored(sessions: async_sessionmaker[AsyncSession], external_id: str) -> bool:
    """Whether a mail with this (bounded) Message-ID is already a message of some ticket."""
    async with sessions() as session:
        found = await session.scalar(
            select(Message.id)
            .where(Message.channel == Channel.EMAIL.value, Message.external_id == external_id)
            .limit(1)
        )
    return found is not None


async def already_set_aside(
    sessions: async_sessionmaker[AsyncSession], source: str, reference: str, raw: bytes
) -> bool:
    """Whether this broken input (same reference or same bytes) is already in quarantine."""
    async with sessions() as session:
        earlier = await session.scalar(
            select(Quarantined.id)
            .where(
                Quarantined.source == source,
                or_(Quarantined.reference == reference, Quarantined.raw == raw),
            )
            .limit(1)
        )
    return earlier is not None
