"""Small readers of what the database holds, for assertions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from tests.conftest import Database
from tickets.model import Channel, CustomerRef, IncomingMessage
from tickets.outbox import OutboxItem, Outcome, Sender
from tickets.tables import AuditEntry, Message, OutboxRow, Response, Ticket


async def rows(database: Database, model: type[Any], *where: Any) -> Sequence[Any]:
    async with database.sessions() as session:
        return (await session.scalars(select(model).where(*where).order_by(model.id))).all()


async def outbox(database: Database, *where: Any) -> Sequence[OutboxRow]:
    return await rows(database, OutboxRow, *where)


async def tickets(database: Database) -> Sequence[Ticket]:
    return await rows(database, Ticket)


async def ticket(database: Database, number: int) -> Ticket:
    async with database.sessions() as session:
        found = await session.get(Ticket, number)
        assert found is not None
        return found


async def messages(database: Database, number: int) -> Sequence[Message]:
    return await rows(database, Message, Message.ticket_id == number)


async def audit(database: Database) -> Sequence[AuditEntry]:
    return await rows(database, AuditEntry)


async def responses(database: Database) -> Sequence[Response]:
    return await rows(database, Response)


def telegram(user: int, text: str = "hello", *, name: str = "Ann", **extra: Any) -> IncomingMessage:
    return IncomingMessage(
        customer=CustomerRef(name=name, telegram_id=user),
        channel=Channel.TELEGRAM,
        text=text,
        **extra,
    )


def email(address: str, text: str = "hello", *, name: str = "Bob", **extra: Any) -> IncomingMessage:
    return IncomingMessage(
        customer=CustomerRef(name=name, email=address), channel=Channel.EMAIL, text=text, **extra
    )


@dataclass
class Collected:
    """A `tickets.outbox.Report` that keeps what a sender tells it."""

    outcomes: list[Outcome] = field(default_factory=list)
    saved: list[tuple[int, dict[str, Any]]] = field(default_factory=list)

    def outcome(self, item: OutboxItem, outcome: Outcome) -> None:
        self.outcomes.append(outcome)

    async def progress(self, item: OutboxItem, state: Mapping[str, Any]) -> None:
        self.saved.append((item.id, dict(state)))


async def deliver(sender: Sender, items: Sequence[OutboxItem]) -> list[Outcome]:
    """What a sender reports for `items`, delivered outside the worker."""
    report = Collected()
    await sender.deliver(items, report)
    return report.outcomes
