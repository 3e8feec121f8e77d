"""Benchmark intake: `Desk.receive(IncomingMessage(...))`, the "customer message arrives" operation.

Run from the repository root:

    .venv/bin/python bench/intake.py [--db sqlite|postgresql|both] [--postgres-url URL]

Target: at least 500 messages/s on each database, both sequentially and with 16 concurrent
callers (16 asyncio tasks pulling the next message from a shared counter).

Workload, the same for every run: 5,000 messages in a fixed shuffled order. 90 % come from 1,000
Telegram customers, each with the dedup key ("telegram", "update:<n>") and a "chat:message"
external id; 10 % come from 100 email customers, each with an IMAP-style dedup key and a
Message-ID. Texts are 20-1,200 characters (some longer than the 500-character agent excerpt), 5 %
carry an attachment. A customer's first message opens a ticket and sends a receipt; the rest
join the open ticket. Each (database, mode) run starts from a freshly migrated, empty database and
a real `Templates()` and `SlaPolicy(calendar=BusinessCalendar())`, with the default engine and
pool of `supportbot.db.create_engine`. 20 warm-up messages from separate customers go first and
are not timed. Latency is per `receive` call; messages/s is the timed messages over the wall
time of the timed part.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py is named like the standard library's `queue`, which asyncio and aiosqlite
# import: run as a script from bench/, this directory would shadow it. Take it off sys.path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import asyncio  # noqa: E402
import itertools  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402

from sqlalchemy import func, select  # noqa: E402

from bench.common import (  # noqa: E402
    CpuMeter,
    CpuUse,
    Database,
    Stats,
    arguments,
    database,
    launch,
    machine,
    table,
    verdict,
)
from tickets.desk import Desk  # noqa: E402
from tickets.model import Attachment, Channel, CustomerRef, IncomingMessage, Intake  # noqa: E402
from tickets.policy import SlaPolicy  # noqa: E402
from tickets.rendering import Templates  # noqa: E402
from tickets.sla import BusinessCalendar  # noqa: E402
from tickets.tables import InboundKey, Message, OutboxRow, Ticket  # noqa: E402

MESSAGES = 5_000
TELEGRAM_CUSTOMERS = 1_000
EMAIL_CUSTOMERS = 100
EMAIL_SHARE = 0.10
ATTACHMENT_SHARE = 0.05
CONCURRENCY = 16
WARMUP = 20
TARGET_RATE = 500.0
VOCABULARY = (
    "hello my order invoice payment card refund login password account app error crash "
    "update please help thanks again yesterday today still not working screen button email "
    "subscription plan upgrade cancel charge twice receipt address delivery late tracking"
)
WORDS = VOCABULARY.split()


@dataclass(frozen=True)
class Run:
    kind: str
    mode: str
    seconds: float
    stats: Stats
    cpu: CpuUse
    opened: int
    joined: int
    tickets: int
    outbox: int

    @property
    def rate(self) -> float:
        return self.stats.count / self.seconds

    @property
    def cpu_ms(self) -> float:
        """This process's CPU time per message, in ms."""
        return self.cpu.process_seconds / self.stats.count * 1000

    @property
    def busy(self) -> str:
        return "n/a" if self.cpu.machine_busy is None else f"{self.cpu.machine_busy:.0%}"


def sentence(rng: random.Random) -> str:
    length = rng.choice([20, 40, 80, 150, 300, 600, 1_200])
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < length:
        words.append(rng.choice(WORDS))
    return " ".join(words)[:length]


def workload(rng: random.Random) -> list[IncomingMessage]:
    """The timed messages, in the order they arrive."""
    messages = []
    for n in range(MESSAGES):
        attachments = (
            (Attachment(kind="photo", ref=f"AgACAgQAAx-{n}", size=48_213),)
            if rng.random() < ATTACHMENT_SHARE
            else ()
        )
        if rng.random() < EMAIL_SHARE:
            who = rng.randrange(EMAIL_CUSTOMERS)
            messages.append(
                IncomingMessage(
                    customer=CustomerRef(name=f"Mail Customer {who}", email=f"c{who}@example.org"),
                    channel=Channel.EMAIL,
                    text=sentence(rng),
                    attachments=attachments,
                    external_id=f"<bench.{n}@mail.example.org>",
                    dedup_key=("imap", f"1700000000:{n}"),
                    subject=f"Order {who} question",
                )
            )
        else:
            who = rng.randrange(TELEGRAM_CUSTOMERS)
            user = 80_000_000 + who
            messages.append(
                IncomingMessage(
                    customer=CustomerRef(name=f"Telegram Customer {who}", telegram_id=user),
                    channel=Channel.TELEGRAM,
                    text=sentence(rng),
                    attachments=attachments,
                    external_id=f"{user}:{n}",
                    dedup_key=("telegram", f"update:{n}"),
                )
            )
    return messages


def warmup_messages() -> list[IncomingMessage]:
    return [
        IncomingMessage(
            customer=CustomerRef(name=f"Warm-up {n}", telegram_id=90_000_000 + n),
            channel=Channel.TELEGRAM,
            text="warming up",
            external_id=f"{90_000_000 + n}:1",
            dedup_key=("telegram", f"warmup:{n}"),
        )
        for n in range(WARMUP)
    ]


async def run(kind: str, mode: str, postgres_url: str, messages: Sequence[IncomingMessage]) -> Run:
    async with database(kind, postgres_url) as data:
        desk = Desk(data.sessions, SlaPolicy(calendar=BusinessCalendar()), Templates())
        for message in warmup_messages():
            await desk.receive(message)

        latencies = [0.0] * len(messages)
        intakes: list[Intake | None] = [None] * len(messages)
        counter = itertools.count()

        async def caller() -> None:
            while (index := next(counter)) < len(messages):
                began = time.perf_counter()
                intakes[index] = await desk.receive(messages[index])
                latencies[index] = time.perf_counter() - began

        meter = CpuMeter()
        meter.start()
        began = time.perf_counter()
        if mode == "sequential":
            await caller()
        else:
            await asyncio.gather(*(caller() for _ in range(CONCURRENCY)))
        seconds = time.perf_counter() - began
        cpu = meter.stop()

        done = [i for i in intakes if i is not None]
        await check(data, messages, done)
        async with data.sessions() as session:
            tickets = await session.scalar(select(func.count()).select_from(Ticket)) or 0
            outbox = await session.scalar(select(func.count()).select_from(OutboxRow)) or 0
        return Run(
            kind=kind,
            mode=mode,
            seconds=seconds,
            stats=Stats.of(latencies),
            cpu=cpu,
            opened=sum(1 for i in done if i.opened),
            joined=sum(1 for i in done if not (i.opened or i.reopened or i.duplicate)),
            tickets=tickets - WARMUP,
            outbox=outbox,
        )


async def check(data: Database, messages: Sequence[IncomingMessage], done: list[Intake]) -> None:
    """Every message stored once, none taken for a duplicate, one ticket per customer."""
    customers = {m.customer for m in messages}
    problems = []
    if len(done) != len(messages):
        problems.append(f"{len(messages) - len(done)} messages were not received")
    if any(i.duplicate for i in done):
        problems.append(f"{sum(1 for i in done if i.duplicate)} messages taken for duplicates")
    if sum(1 for i in done if i.opened) != len(customers):
        problems.append(
            f"{sum(1 for i in done if i.opened)} tickets for {len(customers)} customers"
        )
    async with data.sessions() as session:
        stored = await session.scalar(select(func.count()).select_from(Message))
        keys = await session.scalar(select(func.count()).select_from(InboundKey))
    if stored != len(messages) + WARMUP or keys != len(messages) + WARMUP:
        problems.append(f"{stored} messages and {keys} inbound keys stored")
    if problems:
        raise AssertionError(f"{data.kind}: " + "; ".join(problems))


def report(runs: Sequence[Run], messages: Sequence[IncomingMessage]) -> None:
    telegram = {m.customer for m in messages if m.channel is Channel.TELEGRAM}
    email = {m.customer for m in messages if m.channel is Channel.EMAIL}
    emails = sum(1 for m in messages if m.channel is Channel.EMAIL)
    print(
        f"\n{len(messages):,} messages: {len(messages) - emails:,} from {len(telegram):,} Telegram "
        f"customers, {emails:,} from {len(email):,} email customers; "
        f"{WARMUP} untimed warm-up messages first"
    )
    print(
        "CPU ms/msg: this process's CPU time per message (with aiosqlite's SQLite threads, "
        "without the PostgreSQL server); machine busy: all CPUs, whole machine\n"
    )
    print(
        table(
            [
                "database",
                "mode",
                "messages/s",
                "p50 ms",
                "p99 ms",
                "max ms",
                "CPU ms/msg",
                "machine busy",
                "opened",
                "joined",
                "outbox rows",
                "≥ 500/s",
            ],
            [
                [
                    r.kind,
                    r.mode,
                    f"{r.rate:,.0f}",
                    f"{r.stats.p50:.2f}",
                    f"{r.stats.p99:.2f}",
                    f"{r.stats.max:.1f}",
                    f"{r.cpu_ms:.2f}",
                    r.busy,
                    f"{r.opened:,}",
                    f"{r.joined:,}",
                    f"{r.outbox:,}",
                    verdict(r.rate >= TARGET_RATE),
                ]
                for r in runs
            ],
        )
    )


async def main() -> int:
    args = arguments("Benchmark Desk.receive, sequentially and with 16 concurrent callers.")
    for label, value in await machine(args.kinds, args.postgres_url):
        print(f"{label}: {value}")
    messages = workload(random.Random(5_000))
    runs = []
    for kind in args.kinds:
        for mode in ("sequential", f"{CONCURRENCY} concurrent"):
            print(f"running on {kind}, {mode} …", flush=True)
            runs.append(await run(kind, mode, args.postgres_url, messages))
    report(runs, messages)
    return 0


if __name__ == "__main__":
    sys.exit(launch(main))
