"""Runs one ImapIntake as a process of its own, for the crash test (which SIGKILLs it).

    python -m tests.imap_process DATABASE_URL IMAP_PORT MAILBOX

It reads the test Dovecot's user on 127.0.0.1 and stops cleanly on SIGTERM. Each stored mail is
followed by a short pause, as on a busy database: it widens the window between a commit and the
\\Seen flag and cursor, the window a crash must not turn into a duplicate, and keeps the test's
kills ahead of the last mail.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from mail.imap import ImapIntake
from mail.settings import ImapSettings, Tls
from supportbot import db
from tests.mailservers import PASSWORD, SUPPORT, USER
from tickets.desk import Desk
from tickets.model import IncomingMessage, Intake
from tickets.policy import SlaPolicy
from tickets.rendering import Templates
from tickets.sla import BusinessCalendar


class BusyDesk(Desk):
    """A desk that takes a little longer after each stored message."""

    async def receive(self, incoming: IncomingMessage) -> Intake:
        """Store as usual, then pause."""
        intake = await super().receive(incoming)
        await asyncio.sleep(0.004)
        return intake


async def main(database_url: str, port: int, mailbox: str) -> None:
    """Take in mail until SIGTERM."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    settings = ImapSettings(
        host="127.0.0.1", port=port, user=USER, password=PASSWORD, tls=Tls.NONE, mailbox=mailbox
    )
    async with db.open_engine(database_url) as engine:
        sessions = db.session_factory(engine)
        desk = BusyDesk(sessions, SlaPolicy(calendar=BusinessCalendar()), Templates())
        intake = ImapIntake(
            settings,
            desk,
            sessions,
            SUPPORT,
            batch_size=10,
            reconnect_min=0.1,
            reconnect_max=1.0,
            timeout=5,
        )
        await intake.run(stop)


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
