"""The email channel's own table and its queries: how far the IMAP intake has read each mailbox.

`mail_cursors` shares the desk's metadata (`tickets.tables.Base`), so Alembic sees it with the
others; only the email channel reads or writes it. What the intake asks of the core's tables
(is a mail stored, where did a bounced mail go) is in `tickets/email_lookups.py`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, String
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from tickets.tables import Base


class MailCursor(Base):
    """How far the IMAP poller has read a mailbox: UIDVALIDITY and the last UID committed."""

    __tablename__ = "mail_cursors"

    mailbox: Mapped[str] = mapped_column(String(200), primary_key=True)
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime]


async def load_cursor(
    sessions: async_sessionmaker[AsyncSession], mailbox: str
) -> tuple[int, int] | None:
    """The mailbox's UIDVALIDITY and last committed UID (None: never read)."""
    async with sessions() as session:
        row = await session.get(MailCursor, mailbox)
        return (row.uidvalidity, row.last_uid) if row is not None else None


async def save_cursor(
    sessions: async_sessionmaker[AsyncSession],
    mailbox: str,
    uidvalidity: int,
    last_uid: int,
    now: datetime,
) -> None:
    """Move the cursor on; within one UIDVALIDITY it never goes back."""
    async with sessions.begin() as session:
        row = await session.get(MailCursor, mailbox, with_for_update=True)
        if row is None:
            session.add(
                MailCursor(
                    mailbox=mailbox, uidvalidity=uidvalidity, last_uid=last_uid, updated_at=now
                )
            )
            return
        if row.uidvalidity == uidvalidity:
            last_uid = max(last_uid, row.last_uid)
        row.uidvalidity = uidvalidity
        row.last_uid = last_uid
        row.updated_at = now
