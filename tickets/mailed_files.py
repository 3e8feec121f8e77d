"""The files a customer mailed, with their bytes when the intake kept them (issue 15, point 2)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tickets.tables import Message, MessageFile


@dataclass(frozen=True)
class MailedFile:
    """One file of a customer's mail; `data` is None when it was over the intake's cap."""

    position: int
    filename: str
    mime_type: str
    size: int
    data: bytes | None


async def mailed_files(
    sessions: async_sessionmaker[AsyncSession], message_id: int
) -> list[MailedFile]:
    """A message's files in their order, for the agents' feed to post or list."""
    async with sessions() as session:
        message = await session.get(Message, message_id)
        if message is None:
            return []
        found = await session.execute(
            select(MessageFile.position, MessageFile.data).where(
                MessageFile.message_id == message_id
            )
        )
        kept = {int(position): bytes(data) for position, data in found.all()}
    files = []
    for position, item in enumerate(message.attachments or []):
        if not isinstance(item, dict):
            continue
        size = item.get("size")
        files.append(
            MailedFile(
                position=position,
                filename=str(item.get("filename") or f"attachment-{position + 1}"),
                mime_type=str(item.get("mime_type") or "application/octet-stream"),
                size=size if isinstance(size, int) else len(kept.get(position, b"")),
                data=kept.get(position),
            )
        )
    return files
