"""The Telegram console's own tables: people seen in the agents' group (so `@name` can be
resolved to an id, which the Bot API cannot do) and reply drafts of `REPLY_MODE=confirm`.

Both share the desk's metadata (`tickets.tables.Base`); only the Telegram channel uses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String, Text, UniqueConstraint, select
from sqlalchemy import update as sql_update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from tickets.ports import Clock
from tickets.tables import Base

PENDING = "pending"


class GroupPerson(Base):
    """Someone who wrote in the agents' group, with the @username they had then."""

    __tablename__ = "group_people"
    __table_args__ = (Index("ix_group_people_username", "username"),)

    telegram_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    username: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200), default="")
    seen_at: Mapped[datetime]


class ReplyDraft(Base):
    """An agent's message in a ticket's topic held for [Send] [Note] [Discard] (confirm mode)."""

    __tablename__ = "reply_drafts"
    __table_args__ = (UniqueConstraint("chat_id", "message_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"))
    agent_telegram_id: Mapped[int] = mapped_column(BigInteger)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    message_id: Mapped[int] = mapped_column(BigInteger)  # the agent's own message
    text: Mapped[str] = mapped_column(Text, default="")
    attachments: Mapped[list[Any]] = mapped_column(JSON, default=list)
    state: Mapped[str] = mapped_column(String(16))  # pending | sent | noted | discarded
    created_at: Mapped[datetime]
    decided_at: Mapped[datetime | None]


@dataclass(frozen=True)
class Draft:
    id: int
    ticket: int
    agent: int
    key: str  # "chat:message" of the agent's message, the reply's dedup key
    text: str
    attachments: tuple[dict[str, Any], ...]
    state: str


class ConsoleBook:
    """Reads and writes the console's tables."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock) -> None:
        self._sessions = sessions
        self._clock = clock
        self._seen: dict[int, tuple[str | None, str]] = {}

    async def saw(self, telegram_id: int, username: str | None, name: str) -> None:
        """Remember who wrote in the group and their @username (written only when it changed)."""
        handle = username.lower() if username else None
        if self._seen.get(telegram_id) == (handle, name):
            return
        async with self._sessions.begin() as session:
            person = await session.get(GroupPerson, telegram_id)
            if person is None:
                session.add(
                    GroupPerson(
                        telegram_id=telegram_id,
                        username=handle,
                        name=name[:200],
                        seen_at=self._clock(),
                    )
                )
            else:
                person.username, person.name, person.seen_at = handle, name[:200], self._clock()
            if handle is not None:  # a username moves with its owner: nobody else keeps it
                await session.execute(
                    sql_update(GroupPerson)
                    .where(GroupPerson.username == handle, GroupPerson.telegram_id != telegram_id)
                    .values(username=None)
                )
        self._seen[telegram_id] = (handle, name)

    async def person_named(self, username: str) -> tuple[int, str] | None:
        """The id and name of whoever last wrote in the group as @username."""
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(GroupPerson.telegram_id, GroupPerson.name).where(
                        GroupPerson.username == username.lower()
                    )
                )
            ).first()
        return (int(row[0]), str(row[1])) if row is not None else None

    async def usernames(self, ids: list[int]) -> dict[int, str]:
        """The @usernames of these people, where known."""
        if not ids:
            return {}
        async with self._sessions() as session:
            rows = await session.execute(
                select(GroupPerson.telegram_id, GroupPerson.username).where(
                    GroupPerson.telegram_id.in_(ids), GroupPerson.username.is_not(None)
                )
            )
            return {int(i): str(u) for i, u in rows.all()}

    async def add_draft(
        self,
        ticket: int,
        agent: int,
        chat_id: int,
        message_id: int,
        text: str,
        attachments: list[dict[str, Any]],
    ) -> Draft:
        """Keep an agent's message as a draft; the same message taken in again is one draft."""
        try:
            async with self._sessions.begin() as session:
                row = ReplyDraft(
                    ticket_id=ticket,
                    agent_telegram_id=agent,
                    chat_id=chat_id,
                    message_id=message_id,
                    text=text,
                    attachments=attachments,
                    state=PENDING,
                    created_at=self._clock(),
                )
                session.add(row)
                await session.flush()
                return _draft(row)
        except IntegrityError:
            async with self._sessions() as session:
                found = await session.scalar(
                    select(ReplyDraft).where(
                        ReplyDraft.chat_id == chat_id, ReplyDraft.message_id == message_id
                    )
                )
                assert found is not None
                return _draft(found)

    async def draft(self, draft_id: int) -> Draft | None:
        async with self._sessions() as session:
            row = await session.get(ReplyDraft, draft_id)
            return _draft(row) if row is not None else None

    async def draft_of(self, chat_id: int, message_id: int) -> Draft | None:
        """The draft an agent's message became, if it did."""
        async with self._sessions() as session:
            row = await session.scalar(
                select(ReplyDraft).where(
                    ReplyDraft.chat_id == chat_id, ReplyDraft.message_id == message_id
                )
            )
            return _draft(row) if row is not None else None

    async def decide(self, draft_id: int, state: str) -> bool:
        """Move a pending draft to `state`; False when it was decided already (pressed once)."""
        async with self._sessions.begin() as session:
            done = await session.execute(
                sql_update(ReplyDraft)
                .where(ReplyDraft.id == draft_id, ReplyDraft.state == PENDING)
                .values(state=state, decided_at=self._clock())
            )
        return bool(getattr(done, "rowcount", 0))

    async def undecide(self, draft_id: int) -> None:
        """Put a draft back to pending: what its button asked for failed."""
        async with self._sessions.begin() as session:
            await session.execute(
                sql_update(ReplyDraft)
                .where(ReplyDraft.id == draft_id)
                .values(state=PENDING, decided_at=None)
            )


def _draft(row: ReplyDraft) -> Draft:
    return Draft(
        id=row.id,
        ticket=row.ticket_id,
        agent=row.agent_telegram_id,
        key=f"{row.chat_id}:{row.message_id}",
        text=row.text or "",
        attachments=tuple(a for a in row.attachments or [] if isinstance(a, dict)),
        state=row.state,
    )
