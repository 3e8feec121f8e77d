"""Messages sent twice after faults: duplicates per 1,000 sends, on SQLite and PostgreSQL.

Run from the repository root:

    .venv/bin/python bench/duplicates.py [--db sqlite|postgresql|both]
                                         [--fault sigkill|drop|held|502|all]
                                         [--customers N] [--rate R] [--postgres-url URL]

Each (database, fault) run starts a fresh, migrated database, a `LocalBotApi` with Telegram's
flood limits and an agents' group, and the real service in a child process of its own
(`bench/service_process.py`), as in production. N customers (default 500) each write one message,
R a second (default 5; 12 brings the bot to Telegram's limit), and the service answers with a
receipt; the agent answers every ticket with `/reply N …`
(the service sends the reply to the customer): 2 × N messages to customers, each with a token
of its own. While they go out, one kind of fault is injected:

* sigkill: the service process is killed with SIGKILL every 3-6 s and started again at once.
  For every kill the outbox rows leased at that moment are noted, and how long after the kill
  each went out ("taken back after").
* drop (PostgreSQL only): every connection of the service is terminated
  (`pg_terminate_backend`) every 0.5-1.5 s, as a failover or a proxy restart would.
* held: every 1-2 s the next `sendMessage` to a customer who is about to get one is carried out
  but answered only after the service's read timeout (`TELEGRAM_TIMEOUT_SECONDS`, 2 s here).
* 502: every 1-2 s the next `sendMessage` to such a customer is carried out and answered
  `502 Bad Gateway`.

At the end (once the outbox holds nothing pending) every customer's chat is read: it should
hold exactly one receipt and one reply. A duplicate is every extra copy; a loss is a missing
one. Reported: duplicates per 1,000 sends, losses, and the faults injected.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/telegram.py is named like python-telegram-bot's `telegram` package: keep this directory
# off sys.path (as that script does), so the service's `import telegram` finds the library.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
from collections.abc import AsyncIterator  # noqa: E402
from contextlib import asynccontextmanager  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from urllib.parse import quote  # noqa: E402

from sqlalchemy import select, text  # noqa: E402

from bench.common import (  # noqa: E402
    DEFAULT_POSTGRES_URL,
    KINDS,
    Database,
    database,
    launch,
    machine,
    percentile,
    table,
)
from bench.service_process import ServiceProcess  # noqa: E402
from sandbox.service import local_environ  # noqa: E402
from sandbox.telegram import LocalBotApi, RateLimits, SimChat, SimUser  # noqa: E402
from tickets.agents import add_agent  # noqa: E402
from tickets.model import Role  # noqa: E402
from tickets.ports import utcnow  # noqa: E402
from tickets.tables import Customer, OutboxRow, Ticket  # noqa: E402

TOKEN = "123456:LOCAL-BENCH-TOKEN-abcdefghijkl"
FAULTS = ("sigkill", "drop", "held", "502")
APPLICATION = "supportbot-dupbench"
WRITE_RATE = 5.0  # customers writing per second: 10 sends a second, below the bot's 27
READ_TIMEOUT = 2  # TELEGRAM_TIMEOUT_SECONDS of the service
STARTUP = 60.0
DRAIN = 300.0  # after the last fault, everything must have arrived within this
QUIET = 5.0  # and nothing more may arrive in the last few seconds
RECEIPT = "Your ticket number is #"


@dataclass
class Outcome:
    kind: str
    fault: str
    customers: int
    receipts: list[int] = field(default_factory=list)  # copies per customer
    replies: list[int] = field(default_factory=list)
    faults: int = 0
    taken_back: list[float] = field(default_factory=list)  # seconds, sigkill only
    kills: list[float] = field(default_factory=list)  # time.time() of each SIGKILL
    # Of a duplicate's two copies, whether the first reached Telegram after the kill before it:
    # its request was under way when the process died, so nothing could have saved its outcome.
    after_kill: int = 0
    gaps: list[float] = field(default_factory=list)  # between a message's copies, seconds
    seconds: float = 0.0
    note: str = ""

    @property
    def sends(self) -> int:
        return 2 * self.customers

    @property
    def duplicates(self) -> int:
        return sum(max(n - 1, 0) for n in self.receipts + self.replies)

    @property
    def lost(self) -> int:
        return sum(1 for n in self.receipts + self.replies if n == 0)


class Service:
    """The service in a child process, started again after every kill."""

    def __init__(self, environ: dict[str, str], server: LocalBotApi) -> None:
        self._environ = environ
        self._server = server
        self.process: ServiceProcess | None = None

    async def start(self) -> None:
        polls = self._server.stats.requests.get("getUpdates", 0)
        process = ServiceProcess(self._environ)
        process.start()
        self.process = process
        await self._server.wait_for(
            lambda: self._server.stats.requests.get("getUpdates", 0) > polls or process.done(),
            STARTUP,
        )
        if process.done():
            raise RuntimeError(f"the service did not start: {await process.stop(10)}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()

    async def stop(self) -> None:
        if self.process is not None and not self.process.done():
            problem = await self.process.stop(30)
            if problem:
                print(f"  {problem}", flush=True)


@asynccontextmanager
async def desk(data: Database) -> AsyncIterator[tuple[LocalBotApi, SimChat, SimUser, Service]]:
    server = LocalBotApi(TOKEN, bot_username="supportbot_bench", limits=RateLimits.telegram())
    await server.start()
    try:
        group = server.add_group("Support agents", forum=False)
        agent = server.add_user("Sam", username="sam_agent")
        await server.add_member(group, agent)
        async with data.sessions.begin() as session:
            await add_agent(session, agent.id, Role.AGENT, "Sam", at=utcnow(), actor="bench")
        url = data.url
        if data.kind == "postgresql":  # named, so that `drop` hits the service's connections only
            url += quote(f" -capplication_name={APPLICATION}", safe="-")
        environ = local_environ(server, group, url, {"TELEGRAM_TIMEOUT_SECONDS": str(READ_TIMEOUT)})
        service = Service(environ, server)
        await service.start()
        try:
            yield server, group, agent, service
        finally:
            await service.stop()
    finally:
        await server.stop()


async def tickets_of(data: Database) -> dict[int, int]:
    """Telegram user id → ticket number, for every ticket so far."""
    async with data.sessions() as session:
        rows = await session.execute(
            select(Customer.telegram_id, Ticket.id).join(Ticket, Ticket.customer_id == Customer.id)
        )
    return {int(user): int(number) for user, number in rows if user is not None}


async def pending(data: Database) -> int:
    async with data.sessions() as session:
        rows = await session.scalars(select(OutboxRow.id).where(OutboxRow.status == "pending"))
        return len(rows.all())


async def run(
    kind: str, fault: str, customers: int, postgres_url: str, rate: float = WRITE_RATE
) -> Outcome:
    outcome = Outcome(kind, fault, customers)
    if fault == "drop" and kind != "postgresql":
        outcome.note = "n/a: SQLite has no connection to drop"
        return outcome
    began = time.monotonic()
    async with (
        database(kind, postgres_url) as data,
        desk(data) as (server, group, agent, service),
    ):
        workload = Workload(data, server, group, agent, service, outcome, rate)
        await asyncio.gather(workload.write(), workload.reply(), workload.inject())
        for _ in range(int(DRAIN / 0.5)):
            if not await pending(data):
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(QUIET)
        await asyncio.gather(*workload.watching)
        workload.count()
    outcome.seconds = time.monotonic() - began
    return outcome


@dataclass
class Workload:
    """Customers who write, an agent who answers each, and the fault injected meanwhile."""

    data: Database
    server: LocalBotApi
    group: SimChat
    agent: SimUser
    service: Service
    outcome: Outcome
    rate: float
    people: list[SimUser] = field(default_factory=list)
    replied: set[int] = field(default_factory=set)
    watching: set[asyncio.Task[None]] = field(default_factory=set)
    written: asyncio.Event = field(default_factory=asyncio.Event)
    answered: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.people = [
            self.server.add_user("Customer", last_name=f"{n:04d}")
            for n in range(self.outcome.customers)
        ]
        self.rng = random.Random(f"{self.outcome.kind}-{self.outcome.fault}")

    async def write(self) -> None:
        for n, person in enumerate(self.people):
            await self.server.user_sends(person, text=f"w{n:04d} my order has not arrived")
            await asyncio.sleep(1 / self.rate)
        self.written.set()

    async def reply(self) -> None:
        number_of = {p.id: n for n, p in enumerate(self.people)}
        while len(self.replied) < len(self.people):
            for user, ticket in (await tickets_of(self.data)).items():
                if user in number_of and user not in self.replied:
                    self.replied.add(user)
                    text = f"/reply {ticket} r{number_of[user]:04d} it is on its way"
                    await self.server.user_sends(self.agent, chat=self.group, text=text)
            await asyncio.sleep(0.3)
        self.answered.set()

    async def inject(self) -> None:
        fault = self.outcome.fault
        while not (self.written.is_set() and self.answered.is_set()):
            if fault == "sigkill":
                await asyncio.sleep(self.rng.uniform(3, 6))
                self.watching.add(await kill_and_restart(self.data, self.service, self.outcome))
            elif fault == "drop":
                await asyncio.sleep(self.rng.uniform(0.5, 1.5))
                self.outcome.faults += await drop_connections(self.data)
            else:
                await asyncio.sleep(self.rng.uniform(1, 2))
                soon = self.people[max(0, len(self.replied) - 20) : len(self.replied) + 5]
                target = self.rng.choice(soon)  # a customer about to get a receipt or reply
                if fault == "held":
                    self.server.hold_answer_next(
                        "sendMessage", seconds=READ_TIMEOUT + 1.5, chat_id=target.id
                    )
                else:
                    self.server.fail_next(
                        "sendMessage", status=502, executed=True, chat_id=target.id
                    )

    def count(self) -> None:
        """Copies of each customer's receipt and reply, as the Telegram server has them."""
        outcome, stats = self.outcome, self.server.stats
        if outcome.fault == "held":
            outcome.faults = stats.late_answers
        elif outcome.fault == "502":
            outcome.faults = stats.injected_failures
        for n, person in enumerate(self.people):
            sent = self.server.sent_to(person)
            receipts = [m for m in sent if RECEIPT in (m.text or "")]
            replies = [m for m in sent if f"r{n:04d} it is on its way" in (m.text or "")]
            outcome.receipts.append(len(receipts))
            outcome.replies.append(len(replies))
            for copies in (receipts, replies):
                if len(copies) > 1:
                    outcome.gaps.append(copies[-1].time - copies[0].time)
                    last_kill = max((k for k in outcome.kills if k < copies[1].time), default=0)
                    outcome.after_kill += copies[0].time >= last_kill


async def kill_and_restart(
    data: Database, service: Service, outcome: Outcome
) -> asyncio.Task[None]:
    """SIGKILL the service, note what it had leased, start it again; watch those rows go out."""
    service.kill()
    killed = datetime.now(UTC)
    outcome.kills.append(killed.timestamp())
    async with data.sessions() as session:
        leased = (
            await session.scalars(
                select(OutboxRow.id).where(
                    OutboxRow.status == "pending", OutboxRow.lease_owner.is_not(None)
                )
            )
        ).all()
    outcome.faults += 1
    await service.start()

    async def taken_back() -> None:
        waiting = set(leased)
        deadline = time.monotonic() + DRAIN
        while waiting and time.monotonic() < deadline:
            async with data.sessions() as session:
                rows = (
                    await session.execute(
                        select(OutboxRow.id, OutboxRow.delivered_at, OutboxRow.status).where(
                            OutboxRow.id.in_(waiting)
                        )
                    )
                ).all()
            for row_id, delivered_at, status in rows:
                if status != "pending":
                    waiting.discard(row_id)
                    if delivered_at is not None:
                        at = (
                            delivered_at
                            if delivered_at.tzinfo
                            else delivered_at.replace(tzinfo=UTC)
                        )
                        outcome.taken_back.append((at - killed).total_seconds())
            await asyncio.sleep(0.2)

    return asyncio.create_task(taken_back())


async def drop_connections(data: Database) -> int:
    """Terminate every connection of the service; how many there were."""
    async with data.engine.connect() as connection:
        dropped = await connection.scalar(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = :name"
            ),
            {"name": APPLICATION},
        )
        await connection.commit()
    return int(dropped or 0)


def report(outcomes: list[Outcome]) -> None:
    rows = []
    for o in outcomes:
        if o.note:
            rows.append([o.kind, o.fault, "", "", "", "", "", "", o.note])
            continue
        per_thousand = 1000 * o.duplicates / o.sends
        back = (
            f"p50 {percentile(o.taken_back, 50):.1f} s, max {max(o.taken_back):.1f} s"
            if o.taken_back
            else ""
        )
        gaps = f"{percentile(o.gaps, 50):.1f} s" if o.gaps else ""
        if o.fault == "sigkill" and o.duplicates:
            gaps += (
                f"; {o.after_kill} of {o.duplicates} first copies reached Telegram after the kill"
            )
        rows.append(
            [
                o.kind,
                o.fault,
                f"{o.sends:,}",
                f"{o.faults}",
                f"{o.duplicates} ({sum(max(n - 1, 0) for n in o.receipts)}+"
                f"{sum(max(n - 1, 0) for n in o.replies)})",
                f"{per_thousand:.1f}",
                f"{o.lost}",
                gaps,
                back,
            ]
        )
    print(
        table(
            [
                "database",
                "fault",
                "sends",
                "faults",
                "duplicates (receipts+replies)",
                "per 1,000",
                "lost",
                "gap p50",
                "leases taken back after",
            ],
            rows,
        )
    )


def load_average() -> str:
    return Path("/proc/loadavg").read_text().strip()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--db", choices=[*KINDS, "both"], default="both")
    parser.add_argument("--fault", choices=[*FAULTS, "all"], default="all")
    parser.add_argument("--customers", type=int, default=500)
    parser.add_argument("--rate", type=float, default=WRITE_RATE, help="customers writing a second")
    parser.add_argument(
        "--postgres-url", default=os.environ.get("TEST_DATABASE_URL") or DEFAULT_POSTGRES_URL
    )
    args = parser.parse_args()
    kinds = list(KINDS) if args.db == "both" else [args.db]
    faults = list(FAULTS) if args.fault == "all" else [args.fault]
    logging.getLogger("httpx").setLevel(logging.WARNING)
    for label, value in await machine(kinds, args.postgres_url):
        print(f"{label}: {value}")
    print(f"load average before: {load_average()}")
    outcomes = []
    for kind in kinds:
        for fault in faults:
            print(f"running {fault} on {kind} …", flush=True)
            outcome = await run(kind, fault, args.customers, args.postgres_url, args.rate)
            print(f"  done in {outcome.seconds:.0f} s", flush=True)
            outcomes.append(outcome)
    report(outcomes)
    return 0


if __name__ == "__main__":
    sys.exit(launch(main))
