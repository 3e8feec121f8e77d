"""Benchmark: replicas of `supportbot run` on one PostgreSQL database (issue 14).

Run from the repository root, with the PostgreSQL test server running:

    .venv/bin/python bench/replicas.py [--kills 10] [--messages 300] [--mails 300]
                                       [--postgres-url URL]

Every replica is `python -m supportbot run` in a process of its own (as an operator starts
it), against the local Bot API server (Telegram's flood limits) and the sandbox mail servers
(IMAP and an SMTP sink) in this process, on a fresh schema.

1. **failover** (3 replicas). `--kills` times: find the replica that leads `telegram` (its log
   says so), SIGKILL it, and time until another replica's log says it leads `telegram`; start a
   new replica in its place and wait until it runs. Then the same with SIGTERM. Target: p50 and
   max ≤ 10 s after SIGKILL, ≤ 2 s after SIGTERM. The log is polled every 20 ms.
2. **Telegram intake**, with 1 and with 3 replicas: `--messages` customers write one message
   each, all queued at the server at once; time from the first until every message is stored
   and every customer has their receipt (the leader alone talks to Telegram, so this is bounded
   by Telegram's 30 messages/s as much as by the desk). 429 answers counted.
3. **mail intake**, with 1 and with 3 replicas: `--mails` mails from as many senders are put in
   the mailbox at once; time until every one is a stored ticket message.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This directory holds a `telegram.py` that would shadow python-telegram-bot (see telegram.py).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Awaitable, Callable  # noqa: E402
from email.message import EmailMessage  # noqa: E402

from sqlalchemy import func, select  # noqa: E402

from bench.common import (  # noqa: E402
    DEFAULT_POSTGRES_URL,
    Database,
    Stats,
    database,
    launch,
    machine,
    table,
    verdict,
)
from sandbox.mail import LocalMailServer  # noqa: E402
from sandbox.telegram import LocalBotApi  # noqa: E402
from tests.replicas import Replica, wait_for_leader  # noqa: E402
from tickets.agents import add_agent  # noqa: E402
from tickets.model import Channel, Direction, Role  # noqa: E402
from tickets.ports import utcnow  # noqa: E402
from tickets.tables import Message, Ticket  # noqa: E402

TOKEN = "123456:REPLICA-BENCH-TOKEN-0000000000"
SUPPORT = "support@example.com"
RECEIPT = "Your ticket number is"


class Desk:
    """The local servers, the agents' group, and replicas started and stopped on demand."""

    def __init__(self, base: Database, folder: Path) -> None:
        self.base = base
        self.folder = folder
        self.server = LocalBotApi(TOKEN, bot_username="supportbot_bench")
        self.mail = LocalMailServer()
        self.replicas: list[Replica] = []
        self.environ: dict[str, str] = {}
        self._count = 0

    async def start(self) -> None:
        await self.server.start()
        await self.mail.start()
        group = self.server.add_group("Support agents", forum=False)
        agent = self.server.add_user("Sam", username="sam")
        await self.server.add_member(group, agent)
        async with self.base.sessions.begin() as session:
            await add_agent(session, agent.id, Role.AGENT, "Sam", at=utcnow(), actor="bench")
        self.environ = {
            "DATABASE_URL": self.base.url,
            "TELEGRAM_TOKEN": TOKEN,
            "TELEGRAM_API_URL": self.server.url,
            "AGENT_CHAT_ID": str(group.id),
            "LOG_LEVEL": "INFO",
            **self.mail.environment(SUPPORT),
        }

    async def stop(self) -> None:
        await self.scale(0)
        await self.mail.stop()
        await self.server.stop()

    async def add(self) -> Replica:
        replica = Replica(
            f"r{self._count}", self.environ, self.folder / f"replica-{self._count}.log"
        )
        self._count += 1
        replica.start()
        self.replicas.append(replica)
        deadline = time.monotonic() + 60
        while "supportbot running" not in replica.logged(None):
            if not replica.alive or time.monotonic() > deadline:
                raise RuntimeError(f"{replica.name} did not start: {replica.logged()}")
            await asyncio.sleep(0.05)
        return replica

    async def scale(self, count: int) -> None:
        while len(self.replicas) > count:
            await asyncio.to_thread(self.replicas.pop().stop)
        while len(self.replicas) < count:
            await self.add()
        if count:
            await wait_for_leader(self.replicas, "telegram", 30)
            await wait_for_leader(self.replicas, "imap", 30)

    async def failover(self, kill: bool) -> float:
        """Stop the Telegram leader (SIGKILL or SIGTERM); seconds until another leads."""
        old, _ = await wait_for_leader(self.replicas, "telegram", 30)
        watch = asyncio.create_task(wait_for_leader(self.replicas, "telegram", 30, other_than=old))
        if kill:
            await asyncio.to_thread(old.kill)
        else:
            assert old.process is not None
            old.process.send_signal(signal.SIGTERM)
        _, took = await watch
        await asyncio.to_thread(old.stop)
        self.replicas.remove(old)
        await self.add()
        return took


async def count_in(base: Database, channel: Channel) -> int:
    async with base.sessions() as session:
        found = await session.scalar(
            select(func.count())
            .select_from(Message)
            .join(Ticket, Ticket.id == Message.ticket_id)
            .where(Message.direction == Direction.IN, Ticket.channel == channel)
        )
        return int(found or 0)


async def until(check: Callable[[], Awaitable[bool]], within: float) -> float:
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > within:
            raise TimeoutError(f"not done within {within:.0f} s")
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def telegram_intake(desk: Desk, messages: int, round_: int) -> tuple[float, int]:
    server = desk.server
    before = await count_in(desk.base, Channel.TELEGRAM)
    users = [server.add_user(f"R{round_}C{i:04d}") for i in range(messages)]
    too_many = server.stats.too_many_requests_total
    started = time.monotonic()
    for user in users:
        await server.user_sends(user, text=f"help me, round {round_}")

    async def done() -> bool:
        stored = await count_in(desk.base, Channel.TELEGRAM) - before
        answered = all(any(RECEIPT in (m.text or "") for m in server.sent_to(u)) for u in users)
        return stored >= messages and answered

    await until(done, 600)
    return time.monotonic() - started, server.stats.too_many_requests_total - too_many


async def mail_intake(desk: Desk, mails: int, round_: int) -> float:
    before = await count_in(desk.base, Channel.EMAIL)
    started = time.monotonic()
    for i in range(mails):
        mail = EmailMessage()
        mail["From"] = f"Customer {i} <r{round_}c{i}@customers.example>"
        mail["To"] = SUPPORT
        mail["Subject"] = f"Question {i}"
        mail["Message-ID"] = f"<r{round_}-{i}@customers.example>"
        mail.set_content(f"Hello, question {i} of round {round_}.")
        desk.mail.append(bytes(mail))

    async def done() -> bool:
        return await count_in(desk.base, Channel.EMAIL) - before >= mails

    await until(done, 600)
    return time.monotonic() - started


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--mails", type=int, default=300)
    parser.add_argument(
        "--postgres-url", default=os.environ.get("TEST_DATABASE_URL") or DEFAULT_POSTGRES_URL
    )
    args = parser.parse_args()
    for name, value in await machine(["postgresql"], args.postgres_url):
        print(f"{name}: {value}")
    with tempfile.TemporaryDirectory(prefix="supportbot-replicas-") as folder:
        async with database("postgresql", args.postgres_url) as base:
            desk = Desk(base, Path(folder))
            await desk.start()
            try:
                await desk.scale(3)
                kills = [await desk.failover(kill=True) for _ in range(args.kills)]
                terms = [await desk.failover(kill=False) for _ in range(args.kills)]
                intake: list[list[str]] = []
                for count in (1, 3):
                    await desk.scale(count)
                    seconds, too_many = await telegram_intake(desk, args.messages, count)
                    mail_seconds = await mail_intake(desk, args.mails, count)
                    intake.append(
                        [
                            str(count),
                            f"{args.messages / seconds:.1f} msg/s ({seconds:.1f} s)",
                            str(too_many),
                            f"{args.mails / mail_seconds:.1f} mails/s ({mail_seconds:.1f} s)",
                        ]
                    )
            finally:
                await desk.stop()
    killed, termed = Stats.of(kills), Stats.of(terms)  # in milliseconds
    print()
    print(
        table(
            ["failover", "runs", "p50", "max", "target", "verdict"],
            [
                [
                    "SIGKILL",
                    str(len(kills)),
                    f"{killed.p50 / 1000:.2f} s",
                    f"{killed.max / 1000:.2f} s",
                    "≤ 10 s",
                    verdict(killed.max <= 10_000),
                ],
                [
                    "SIGTERM",
                    str(len(terms)),
                    f"{termed.p50 / 1000:.2f} s",
                    f"{termed.max / 1000:.2f} s",
                    "≤ 2 s",
                    verdict(termed.max <= 2_000),
                ],
            ],
        )
    )
    print()
    print(table(["replicas", "Telegram intake", "429s", "mail intake"], intake))
    return 0


if __name__ == "__main__":
    sys.exit(launch(main))
