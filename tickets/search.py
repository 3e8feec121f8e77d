"""Finding tickets (issue 15, point 1): a customer's earlier tickets, and full-text search over
subjects and messages.

The full-text index is the database's own: SQLite FTS5 tables `messages_fts` and `tickets_fts`
(external content, kept by triggers) and, on PostgreSQL, GIN indexes over
`to_tsvector('simple', …)`. Migration 0013 builds both and indexes the rows already there. They
are not in the models (`SEARCH_OBJECTS`), so the schema check leaves them out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Select, func, literal_column, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tickets.agents import active_agent
from tickets.errors import AgentNotFound, TicketNotFound
from tickets.tables import Customer, CustomerEmail, Message, Ticket

RESULTS = 10  # a search answers with at most this many tickets
HISTORY = 20  # `/history` lists at most this many earlier tickets
# Matching messages read (newest first) to find RESULTS distinct tickets.
MATCHES_READ = 200
# Names of the search structures migration 0013 makes; the schema check leaves them out.
SEARCH_OBJECTS = frozenset(
    {"messages_fts", "tickets_fts", "ix_messages_search", "ix_tickets_search"}
)
_FTS5_SHADOWS = ("_data", "_idx", "_docsize", "_config", "_content")

_TX = re.compile(r"(0x)?[0-9a-fA-F]{32,128}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_NUMBER = re.compile(r"#([0-9]{1,10})")
_WORD = re.compile(r"\w+", re.UNICODE)
MAX_WORDS = 8
# PostgreSQL indexes this much of a message's text (a tsvector must stay under 1 MB).
INDEXED_CHARS = 100_000


class QueryKind(StrEnum):
    NUMBER = "number"
    EMAIL = "email"
    TX = "tx"
    TEXT = "text"


@dataclass(frozen=True)
class SearchQuery:
    kind: QueryKind
    value: str  # the ticket number, the address (lower case), the hash, or the words


@dataclass(frozen=True)
class FoundTicket:
    number: int
    subject: str
    status: str
    channel: str
    customer: str
    opened_at: datetime


def is_search_object(name: str | None) -> bool:
    """Whether a table or index is one of the full-text structures (not in the models)."""
    if not name:
        return False
    if name in SEARCH_OBJECTS:
        return True
    return any(name == f"{base}{s}" for base in SEARCH_OBJECTS for s in _FTS5_SHADOWS)


def parse_query(raw: str) -> SearchQuery | None:
    """What `/search` was given: `#N`, an address, a transaction hash, or words; None if empty."""
    query = raw.strip()
    if not query or len(query) > 300:
        return None
    if number := _NUMBER.fullmatch(query):
        return SearchQuery(QueryKind.NUMBER, number.group(1))
    if _EMAIL.fullmatch(query):
        return SearchQuery(QueryKind.EMAIL, query.lower())
    if _TX.fullmatch(query):
        return SearchQuery(QueryKind.TX, query)
    words = search_words(query)
    if not words:
        return None
    return SearchQuery(QueryKind.TEXT, " ".join(words))


def search_words(query: str) -> list[str]:
    """The words of a text query, as both indexes split them (lower case, at most 8)."""
    return [w.lower() for w in _WORD.findall(query)][:MAX_WORDS]


def fts5_match(words: Iterable[str]) -> str:
    """An FTS5 MATCH expression: every word, each quoted (no operator can slip in)."""
    return " ".join('"' + w.replace('"', '""') + '"' for w in words)


class TicketSearch:
    """Read-only lookups for agents; every one checks the agent first."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def history(self, number: int, agent_id: int) -> tuple[FoundTicket, list[FoundTicket]]:
        """A ticket and its customer's other tickets, newest first."""
        async with self._sessions() as session:
            await _agent(session, agent_id)
            found = await _found(session, [number])
            if not found:
                raise TicketNotFound(number)
            ticket = await session.get(Ticket, number)
            assert ticket is not None
            others = await session.scalars(
                select(Ticket.id)
                .where(Ticket.customer_id == ticket.customer_id, Ticket.id != number)
                .order_by(Ticket.id.desc())
                .limit(HISTORY)
            )
            return found[0], await _found(session, list(others.all()))

    async def search(
        self, query: SearchQuery, agent_id: int, customers: Iterable[int] = ()
    ) -> list[FoundTicket]:
        """Tickets matching a query, newest first (at most RESULTS). For a hash the caller
        gives the customers whose payments carry it (`customers`)."""
        async with self._sessions() as session:
            await _agent(session, agent_id)
            if query.kind is QueryKind.NUMBER:
                numbers = [int(query.value)]
            elif query.kind is QueryKind.EMAIL:
                numbers = await _newest(
                    session,
                    select(Ticket.id)
                    .join(CustomerEmail, CustomerEmail.customer_id == Ticket.customer_id)
                    .where(CustomerEmail.address == query.value),
                )
            elif query.kind is QueryKind.TX:
                ids = list(customers)
                numbers = (
                    await _newest(session, select(Ticket.id).where(Ticket.customer_id.in_(ids)))
                    if ids
                    else []
                )
            else:
                numbers = await _text_matches(session, query.value.split())
            return await _found(session, numbers)


async def _newest(session: AsyncSession, statement: Select[int]) -> list[int]:
    found = await session.scalars(statement.order_by(Ticket.id.desc()).limit(RESULTS))
    return list(found.all())


async def _text_matches(session: AsyncSession, words: list[str]) -> list[int]:
    """Tickets whose subject or messages hold every word, newest first."""
    if session.get_bind().dialect.name == "postgresql":
        query = func.plainto_tsquery(literal_column("'simple'"), " ".join(words))
        in_messages = (
            select(Message.ticket_id)
            .where(
                func.to_tsvector(
                    literal_column("'simple'"), func.left(Message.text, INDEXED_CHARS)
                ).op("@@")(query)
            )
            .order_by(Message.id.desc())
            .limit(MATCHES_READ)
        )
        in_subjects = (
            select(Ticket.id)
            .where(func.to_tsvector(literal_column("'simple'"), Ticket.subject).op("@@")(query))
            .order_by(Ticket.id.desc())
            .limit(RESULTS)
        )
        from_messages = (await session.scalars(in_messages)).all()
        from_subjects = (await session.scalars(in_subjects)).all()
    else:
        match = fts5_match(words)
        from_messages = (
            await session.scalars(
                text(
                    "SELECT m.ticket_id FROM messages_fts JOIN messages m "
                    "ON m.id = messages_fts.rowid WHERE messages_fts MATCH :match "
                    "ORDER BY messages_fts.rowid DESC LIMIT :limit"
                ),
                {"match": match, "limit": MATCHES_READ},
            )
        ).all()
        from_subjects = (
            await session.scalars(
                text(
                    "SELECT rowid FROM tickets_fts WHERE tickets_fts MATCH :match "
                    "ORDER BY rowid DESC LIMIT :limit"
                ),
                {"match": match, "limit": RESULTS},
            )
        ).all()
    numbers = sorted({int(n) for n in (*from_messages, *from_subjects)}, reverse=True)
    return numbers[:RESULTS]


async def _found(session: AsyncSession, numbers: list[int]) -> list[FoundTicket]:
    if not numbers:
        return []
    rows = (
        await session.execute(
            select(Ticket, Customer.name)
            .join(Customer, Customer.id == Ticket.customer_id)
            .where(Ticket.id.in_(numbers))
        )
    ).all()
    by_number = {
        t.id: FoundTicket(t.id, t.subject or "", t.status, t.channel, name or "", t.opened_at)
        for t, name in rows
    }
    return [by_number[n] for n in numbers if n in by_number]


async def _agent(session: AsyncSession, telegram_id: int) -> None:
    if await active_agent(session, telegram_id) is None:
        raise AgentNotFound(telegram_id)
