"""The writes of a batch of customer messages that nothing in the batch reads back.

They are kept in an `Unwritten` while the batch is handled and sent together, one statement each,
before the batch commits: round trips to the database, not the statements' own work, are most of
what a message costs. The Core tables and the outbox row builder shared by the core's hot paths
live here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, insert, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tickets.dialect_sql import insert_ignoring
from tickets.model import Intake
from tickets.rate_limits import RateKey, Window, lock_windows, save_windows
from tickets.tables import (
    inbound_keys,
    mail_ids,
    message_files,
    outbox,
    tickets,
)

if TYPE_CHECKING:
    from tickets.customer_lookup import Found, SenderKey


KEY_MESSAGE = (
    update(inbound_keys)
    .where(inbound_keys.c.id == bindparam("key_id"))
    .values(message_id=bindparam("message_id"))
)
NEW_OUTBOX_ROWS = insert(outbox)
NEW_MESSAGE_FILES = insert(message_files)
SAVED_TICKET = ("status", "plan", "closed_at", "waiting_since", "waiting_message_id", "due_at")
SAVE_TICKET = (
    update(tickets)
    .where(tickets.c.id == bindparam("ticket_id"))
    .values(
        {name: bindparam(f"new_{name}") for name in (*SAVED_TICKET, "updated_at")},
    )
)


@dataclass
class TicketState:
    """A ticket as a batch has left it (saved before the batch commits)."""

    id: int
    customer_id: int
    channel: str
    subject: str
    status: str
    plan: str
    waiting_since: datetime | None
    waiting_message_id: int | None
    due_at: datetime | None
    closed_at: datetime | None
    updated_at: datetime | None = None


class Unwritten:
    """Writes of a batch that nothing in the batch reads back, sent together before COMMIT.

    The tickets a batch touched are kept here as the batch left them (later messages of the
    batch see these, not the rows as read), and saved once each; the outbox rows and the links
    from dedup keys to messages go in one statement each. What the batch read ahead for all its
    messages is kept here too.
    """

    def __init__(self) -> None:
        self.tickets: dict[int, TicketState] = {}
        self.key_links: list[dict[str, Any]] = []
        self.outbox_rows: list[dict[str, Any]] = []
        self.keyed: dict[tuple[str, str], Intake] = {}
        self.mail_ids: list[dict[str, Any]] = []
        self.files: list[dict[str, Any]] = []  # bytes of mailed files (message_files rows)
        self.threads: dict[str, int] = {}  # the batch's Message-IDs → ticket, oldest first
        self.opened: set[int] = set()  # tickets the batch opened: all their mail is in it
        # What the batch read ahead: its senders (None: not a customer when the batch began)
        # and the rate windows (locked) of their receipts and new tickets, as the batch leaves
        # them; windows the batch needed later are added as it locks them.
        self.senders: dict[SenderKey, Found | None] = {}
        self.windows: dict[RateKey, Window] = {}

    def add_mail_id(self, message_id: str, ticket_id: int, at: datetime) -> None:
        """Keep a Message-ID for threading; later mails of the batch thread by it at once."""
        self.mail_ids.append({"message_id": message_id, "ticket_id": ticket_id, "created_at": at})
        self.threads.setdefault(message_id, ticket_id)

    def thread(self, references: Sequence[str]) -> int | None:
        """The ticket of the newest of these Message-IDs the batch stored, if any."""
        order = {message_id: index for index, message_id in enumerate(self.threads)}
        found = [r for r in references if r in order]
        return self.threads[max(found, key=order.__getitem__)] if found else None

    async def window(self, connection: AsyncConnection, key: RateKey) -> Window:
        """A rate window of the batch, locked the first time the batch needs it."""
        if key not in self.windows:
            self.windows.update(await lock_windows(connection, [key]))
        return self.windows[key]

    async def write(self, connection: AsyncConnection) -> None:
        """Send what the batch left unwritten (in the order it was added); use it once."""
        if self.key_links:
            await connection.execute(KEY_MESSAGE, self.key_links)
        changed = [t for t in self.tickets.values() if t.updated_at is not None]
        if changed:
            await connection.execute(
                SAVE_TICKET,
                [
                    {
                        "ticket_id": t.id,
                        "new_updated_at": t.updated_at,
                        **{f"new_{name}": getattr(t, name) for name in SAVED_TICKET},
                    }
                    for t in changed
                ],
            )
        if self.files:
            await connection.execute(NEW_MESSAGE_FILES, self.files)
        if self.outbox_rows:
            await connection.execute(NEW_OUTBOX_ROWS, self.outbox_rows)
        if self.mail_ids:
            keep = insert_ignoring(connection.dialect.name, mail_ids)
            await connection.execute(keep, self.mail_ids)
        await save_windows(connection, self.windows.items())
