"""Benchmark: one user floods the bot with commands; everyone else must not notice.

Run from the repository root:

    .venv/bin/python bench/flood.py [--db sqlite|postgresql|both] [--commands 600]
                                    [--separate-process] [--postgres-url URL]

Each run starts a fresh database and the real service against a `LocalBotApi` with Telegram's
flood limits (as `bench/telegram.py` does: 30 messages/s overall, 1/s per private chat, 20/min
per group), with a forum group for the agents and one agent. Ten customers open a ticket each
and get their receipt. Then one user sends `--commands` commands (600 by default: `/start`,
`/status`, `/help` and an unknown `/refundme`, in turn) and one plain message at the end, all
queued at the server at once. Right after, once a second for ten seconds, a new customer writes
(a *probe*) and the agent answers one of the ten with `/reply N` (one answer per customer: a
private chat takes one message a second, so answering one customer ten times in ten seconds
would measure Telegram's pace, not the desk's).

Measured, from outside as users see it (send time `time.time()` before `user_sends`; arrival
the server's `SentMessage.time`):

* **receipt**: a probe customer's message → their receipt in their chat. Target ≤ 5 s, each.
* **reply**: the agent's `/reply N` → that customer's chat. Target ≤ 5 s, each.
* **flood drained**: the flooder's last (plain) message stored, from the first command: how
  long the flooder's own lane took.
* the flooder's answers (the command limit lets 20 through in 10 minutes, plus one notice),
  429 answers from the server (0 expected), and whether every message was stored.
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
import inspect  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402

from sqlalchemy import func, select  # noqa: E402

from bench.common import (  # noqa: E402
    DEFAULT_POSTGRES_URL,
    KINDS,
    Database,
    database,
    launch,
    machine,
    table,
    verdict,
)
from bench.service_process import LogTally  # noqa: E402
from bench.telegram import Bench, running_service  # noqa: E402
from tickets.tables import Customer, Message, OutboxRow, Ticket  # noqa: E402

COMMANDS = ("/start", "/status", "/help", "/refundme")
PROBES = 10
PROBE_EVERY = 1.0
TARGET = 5.0
DRAIN = 120.0  # waited after the last probe for everything to arrive
LAST_WORDS = "x9999 and this is what I actually wanted to ask"


@dataclass
class Result:
    kind: str
    commands: int
    receipts: list[float | None]
    replies: list[float | None]
    drained: float | None
    answers_received: int
    answer_rows: int
    too_many_requests: int
    load_before: float


async def stored_text(data: Database, telegram_id: int, text: str) -> bool:
    async with data.sessions() as session:
        found = await session.scalar(
            select(func.count())
            .select_from(Message)
            .join(Ticket, Ticket.id == Message.ticket_id)
            .join(Customer, Customer.id == Ticket.customer_id)
            .where(Customer.telegram_id == telegram_id, Message.text == text)
        )
    return bool(found)


async def ticket_of(data: Database, telegram_id: int) -> int:
    async with data.sessions() as session:
        found = await session.scalar(
            select(Ticket.id)
            .join(Customer, Customer.id == Ticket.customer_id)
            .where(Customer.telegram_id == telegram_id)
        )
    if found is None:
        raise RuntimeError(f"customer {telegram_id} has no ticket")
    return int(found)


async def poll(bench: Bench, check: Callable[[], object], within: float) -> float | None:
    """When (`time.time()`) `check()` (awaited if need be) turned true, if within `within` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        bench.check_alive()
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return time.time()
        await asyncio.sleep(0.05)
    return None


def arrival(bench: Bench, chat: int, needle: str) -> float | None:
    for message in bench.server.sent_to(chat):
        if needle in (message.text or ""):
            return message.time
    return None


async def run(kind: str, commands: int, postgres_url: str, *, separate: bool) -> Result:
    load_before = os.getloadavg()[0]
    tally = LogTally()
    async with (
        database(kind, postgres_url) as data,
        running_service(data, separate=separate, tally=tally) as bench,
    ):
        server = bench.server
        waiting = [server.add_user("Waiting", last_name=f"{k:02d}") for k in range(PROBES)]
        for person in waiting:
            await server.user_sends(person, text="my invoice is wrong")

        def receipts_in() -> bool:
            return all(arrival(bench, p.id, "ticket number") for p in waiting)

        if await poll(bench, receipts_in, 60) is None:
            raise RuntimeError("the waiting customers got no receipts")
        tickets = [await ticket_of(data, p.id) for p in waiting]

        flooder = server.add_user("Xavier")
        began = time.time()
        for n in range(commands):
            await server.user_sends(flooder, text=COMMANDS[n % len(COMMANDS)])
        await server.user_sends(flooder, text=LAST_WORDS)
        drained = asyncio.create_task(
            poll(bench, lambda: stored_text(data, flooder.id, LAST_WORDS), DRAIN + PROBES)
        )

        probes = [server.add_user("Probe", last_name=f"{k:02d}") for k in range(PROBES)]
        probe_sent: list[float] = []
        reply_sent: list[float] = []
        start = time.monotonic()
        for k, probe in enumerate(probes):
            await bench.sleep_until(start + k * PROBE_EVERY)
            probe_sent.append(time.time())
            await server.user_sends(probe, text=f"p{k:02d} where is my order?")
            reply_sent.append(time.time())
            await server.user_sends(
                bench.agent, chat=bench.group, text=f"/reply {tickets[k]} r{k:02d} we are on it"
            )

        def all_arrived() -> bool:
            return all(arrival(bench, p.id, "ticket number") for p in probes) and all(
                arrival(bench, p.id, f"r{k:02d}") for k, p in enumerate(waiting)
            )

        await poll(bench, all_arrived, DRAIN)
        drained_at = await drained
        async with data.sessions() as session:
            answer_rows = await session.scalar(
                select(func.count())
                .select_from(OutboxRow)
                .where(OutboxRow.recipient == str(flooder.id), OutboxRow.kind == "answer")
            )
        receipts = [
            (t - sent) if (t := arrival(bench, p.id, "ticket number")) else None
            for p, sent in zip(probes, probe_sent, strict=True)
        ]
        replies = [
            (t - sent) if (t := arrival(bench, p.id, f"r{k:02d}")) else None
            for k, (p, sent) in enumerate(zip(waiting, reply_sent, strict=True))
        ]
        return Result(
            kind=kind,
            commands=commands,
            receipts=receipts,
            replies=replies,
            drained=(drained_at - began) if drained_at is not None else None,
            answers_received=len(server.sent_to(flooder)),
            answer_rows=int(answer_rows or 0),
            too_many_requests=server.stats.too_many_requests_total,
            load_before=load_before,
        )


def summary(values: list[float | None]) -> tuple[str, bool]:
    got = [v for v in values if v is not None]
    if not got:
        return "none arrived", False
    ordered = sorted(got)
    text = f"p50 {ordered[len(ordered) // 2]:.2f} s, max {ordered[-1]:.2f} s"
    missing = len(values) - len(got)
    if missing:
        text += f", {missing} never"
    return text, not missing and ordered[-1] <= TARGET


def report(results: list[Result]) -> None:
    rows = []
    for r in results:
        receipts, receipts_met = summary(r.receipts)
        replies, replies_met = summary(r.replies)
        rows.append(
            [
                r.kind,
                f"{r.commands}",
                f"{receipts} ({verdict(receipts_met)})",
                f"{replies} ({verdict(replies_met)})",
                f"{r.drained:.1f} s" if r.drained is not None else "not within the drain time",
                f"{r.answer_rows} queued, {r.answers_received} delivered by the end",
                f"{r.too_many_requests}",
                f"{r.load_before:.2f}",
            ]
        )
    print(
        table(
            [
                "database",
                "commands",
                f"probe receipt (≤ {TARGET:g} s)",
                f"agent reply (≤ {TARGET:g} s)",
                "flood drained",
                "flooder's answers",
                "429s",
                "load before",
            ],
            rows,
        )
    )


async def main() -> int:
    parser = argparse.ArgumentParser(description="One user floods the bot with commands.")
    parser.add_argument("--db", choices=[*KINDS, "both"], default="both")
    parser.add_argument("--commands", type=int, default=600)
    parser.add_argument("--separate-process", action="store_true")
    parser.add_argument(
        "--postgres-url", default=os.environ.get("TEST_DATABASE_URL") or DEFAULT_POSTGRES_URL
    )
    args = parser.parse_args()
    kinds = list(KINDS) if args.db == "both" else [args.db]
    logging.getLogger("httpx").setLevel(logging.WARNING)
    for label, value in await machine(kinds, args.postgres_url):
        print(f"{label}: {value}")
    results = []
    for kind in kinds:
        print(f"running the flood on {kind} …", flush=True)
        results.append(
            await run(kind, args.commands, args.postgres_url, separate=args.separate_process)
        )
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(launch(main))
