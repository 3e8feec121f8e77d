"""Benchmark the Telegram channel end to end, measured from outside as customers and agents see it.

Run from the repository root:

    .venv/bin/python bench/telegram.py [--db sqlite|postgresql|both]
                                       [--scenario light|heavy|burst|all] [--timeline]
                                       [--separate-process] [--postgres-url URL]

Each (database, scenario) run starts a fresh, migrated database (`bench/common.py`: a temporary
SQLite file, or a private PostgreSQL schema), a fresh `LocalBotApi` that enforces Telegram's real
flood limits (`RateLimits.telegram()`: 30 messages/s overall, 1/s per private chat, 20/min per
group), a forum supergroup for the agents with the bot as administrator, one agent on the
allowlist (`tickets.agents.add_agent`), and the real service (`supportbot.app.run`) with the
Telegram channel, as `tests/telegram_harness.py` does. Scripted customers write through
`server.user_sends`, paced with asyncio on an absolute schedule so the rates are real; the send
time of each message is `time.time()` just before `user_sends`, and the time a message became
visible is the server's `SentMessage.time` (also `time.time()`) of the first group message that
shows it.

A customer message is *visible to agents* once a message the bot sent to the agents' group
(a ticket card, a post in a topic, or a line of a digest) contains both its unique token (for
example `h0042`, at the start of the text so every excerpt keeps it) and its ticket number `#N`
(not followed by another digit), the ticket being the one the database stored the message on.
A message is *lost* if it is not stored in the database or never becomes visible before the
scenario's deadline.

Scenarios and targets:

* light: 10 customers write one message each, 12 s apart (5 a minute): customer → agents p50
  ≤ 50 ms. Then the agent answers each ticket in its forum topic, 12 s apart: agent reply →
  customer's chat p50 ≤ 50 ms.
* heavy: 20 messages/s for 60 s (1,200 messages from 400 customers; every customer writes at
  least once, the other 800 messages go to random customers): every message visible, p99 of the
  visibility latency ≤ 10 s, zero 429 answers, zero lost.
* burst: 1,000 customers send one message each within one second: every message visible within
  90 s, zero 429 answers, zero lost.

With `--separate-process` the service runs in a child process (`bench/service_process.py`), as in
production, where it shares no CPU time with Telegram's servers; by default it shares this
process's event loop with the local server and the scripted people.

Every scenario has a hard timeout; a run that hits it is reported with what it measured so far.
`--timeline` also lists every message the bot sent to the agents' group, timed from the first
customer send. The exit status is 0 whenever the runs completed; the verdicts are in the table.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like python-telegram-bot's `telegram` package, which the service imports. Run
# as a script, its own directory would come first on sys.path and shadow that package: take it off.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
from collections import Counter, deque  # noqa: E402
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence  # noqa: E402
from contextlib import asynccontextmanager  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

from sqlalchemy import select  # noqa: E402

from bench.common import (  # noqa: E402
    DEFAULT_POSTGRES_URL,
    KINDS,
    CpuMeter,
    CpuUse,
    Database,
    Stats,
    database,
    launch,
    machine,
    table,
    verdict,
)
from bench.service_process import LogTally, ServiceProcess  # noqa: E402
from sandbox.service import local_environ, local_settings  # noqa: E402
from sandbox.telegram import LocalBotApi, RateLimits, SentMessage, SimChat, SimUser  # noqa: E402
from supportbot import app  # noqa: E402
from tickets.agents import add_agent  # noqa: E402
from tickets.model import Direction, Role  # noqa: E402
from tickets.ports import utcnow  # noqa: E402
from tickets.tables import Message  # noqa: E402

TOKEN = "123456:LOCAL-BENCH-TOKEN-abcdefghijkl"
SCENARIOS = ("light", "heavy", "burst")

LIGHT_CUSTOMERS = 10
LIGHT_INTERVAL = 12.0  # 5 messages a minute
LIGHT_TARGET = 0.050  # p50, both directions
LIGHT_SETTLE = 30.0  # how long after the last send a message may still show up
HEAVY_CUSTOMERS = 400
HEAVY_MESSAGES = 1_200
HEAVY_RATE = 20.0  # messages per second, for 60 s
HEAVY_TARGET = 10.0  # p99
HEAVY_DRAIN = 180.0  # waited after the last send before the rest counts as lost
BURST_CUSTOMERS = 1_000
BURST_SPREAD = 1.0  # all sends within this many seconds
BURST_TARGET = 90.0  # every message visible within this, from its send
BURST_DRAIN = 180.0  # waited after the first send before the rest counts as lost
HARD_TIMEOUT = {"light": 480.0, "heavy": 360.0, "burst": 300.0}
SCAN_EVERY = 0.1
STARTUP = 30.0
SHUTDOWN = 30.0

LIGHT_TEXT = "{token} Hello, I was charged twice for my March invoice, can you check?"
REPLY_TEXT = "{token} Thanks for writing. We have refunded the second charge."
HEAVY_TEXT = "{token} my order has not arrived yet"
BURST_TEXT = "{token} the app shows an error at login"


def token_pattern(prefix: str) -> re.Pattern[str]:
    """Tokens like `h0042`: the prefix letter, four digits, no letter or digit around them."""
    return re.compile(rf"(?<![0-9A-Za-z]){prefix}\d{{4}}(?![0-9])")


def mentions_ticket(text: str, ticket: int) -> bool:
    return re.search(rf"#{ticket}(?![0-9])", text) is not None


# -- what is measured ----------------------------------------------------------------------------


@dataclass
class Probe:
    """One scripted message and when it was sent, stored and seen by its recipient."""

    token: str
    sender: SimUser
    text: str
    sent_at: float | None = None
    ticket: int | None = None
    stored: bool = False
    seen_at: float | None = None

    @property
    def latency(self) -> float | None:
        if self.sent_at is None or self.seen_at is None:
            return None
        return self.seen_at - self.sent_at


@dataclass
class Pacing:
    """How closely the scripted senders kept to their schedule."""

    first: float | None = None
    last: float | None = None
    late_max: float = 0.0

    def note(self, sent_at: float, late: float) -> None:
        self.first = sent_at if self.first is None else self.first
        self.last = sent_at
        self.late_max = max(self.late_max, late)

    @property
    def span(self) -> float:
        return (self.last - self.first) if self.first is not None and self.last else 0.0


@dataclass
class Plan:
    """A scenario's scripted messages; the driver fills in send times as it goes."""

    scenario: str
    customers: list[Probe]
    replies: list[Probe] = field(default_factory=list)
    pacing: Pacing = field(default_factory=Pacing)
    reply_pacing: Pacing = field(default_factory=Pacing)


@dataclass(frozen=True)
class Series:
    """One measured direction of one run, with its target."""

    name: str
    sent: int
    latencies: list[float]
    not_stored: int
    not_seen: int
    target: str
    met: bool

    @property
    def lost(self) -> int:
        return self.not_seen + self.not_stored

    @property
    def stats(self) -> Stats | None:
        return Stats.of(self.latencies) if self.latencies else None


@dataclass(frozen=True)
class GroupUse:
    """What the bot sent to the agents' group."""

    messages: int
    topics: int
    digests: int
    digest_lines_max: int
    peak_per_minute: int


@dataclass
class RunResult:
    kind: str
    scenario: str
    series: list[Series]
    too_many_requests: int
    group: GroupUse
    pacing: Pacing
    cpu: CpuUse
    receipts: tuple[int, int, float | None]  # customers with a receipt, customers, slowest (s)
    timed_out: bool
    logs: Counter[str]
    timeline: list[str]


# -- the running desk ----------------------------------------------------------------------------


@dataclass
class Bench:
    """The local Telegram server, the agents' group, the agent and the running service."""

    server: LocalBotApi
    group: SimChat
    agent: SimUser
    data: Database
    service: ServiceProcess | asyncio.Task[None]

    def check_alive(self) -> None:
        if self.service.done():
            if isinstance(self.service, asyncio.Task):
                self.service.result()
            raise RuntimeError("the service stopped by itself")

    async def service_cpu(self) -> float:
        """CPU seconds the service has used so far (its own process, or this one)."""
        if isinstance(self.service, ServiceProcess):
            return await self.service.cpu()
        return time.process_time()

    async def sleep_until(self, at: float) -> float:
        """Sleep until monotonic time `at`; return how late we woke up (s)."""
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        return max(time.monotonic() - at, 0.0)


@asynccontextmanager
async def running_service(
    data: Database, *, separate: bool, tally: LogTally
) -> AsyncIterator[Bench]:
    """The whole service on `data`, against a local Bot API server with Telegram's limits.

    With `separate`, the service runs in a process of its own (`bench/service_process.py`), as it
    would in production, and this process holds only the server and the scripted people.
    """
    server = LocalBotApi(TOKEN, bot_username="supportbot_bench", limits=RateLimits.telegram())
    await server.start()
    try:
        group = server.add_group("Support agents", forum=True)
        agent = server.add_user("Sam", username="sam_agent")
        await server.add_member(group, agent)
        async with data.sessions.begin() as session:
            await add_agent(session, agent.id, Role.AGENT, "Sam", at=utcnow(), actor="bench")
        if separate:
            async with separate_service(server, group, data, tally) as process:
                yield Bench(server, group, agent, data, process)
            return
        settings = local_settings(server, group, data.url)
        stop = asyncio.Event()
        service = asyncio.create_task(app.run(settings, stop))
        try:
            await server.wait_for(
                lambda: server.stats.requests.get("getUpdates", 0) > 0 or service.done(), STARTUP
            )
            if service.done():
                service.result()
            yield Bench(server, group, agent, data, service)
        finally:
            stop.set()
            done, _ = await asyncio.wait({service}, timeout=SHUTDOWN)
            if not done:
                print(f"  the service did not stop within {SHUTDOWN:.0f} s; cancelled", flush=True)
                service.cancel()
                await asyncio.gather(service, return_exceptions=True)
            elif not service.cancelled() and service.exception() is not None:
                print(f"  the service ended with {service.exception()!r}", flush=True)
    finally:
        await server.stop()


@asynccontextmanager
async def separate_service(
    server: LocalBotApi, group: SimChat, data: Database, tally: LogTally
) -> AsyncIterator[ServiceProcess]:
    """The service in a child process, ready once it polls the server."""
    process = ServiceProcess(local_environ(server, group, data.url))
    process.start()
    try:
        await server.wait_for(
            lambda: server.stats.requests.get("getUpdates", 0) > 0 or process.done(), STARTUP
        )
        if process.done():
            raise RuntimeError(f"the service did not start: {await process.stop(SHUTDOWN)}")
        yield process
    finally:
        problem = await process.stop(SHUTDOWN)
        if problem:
            print(f"  {problem}", flush=True)
        tally.counts.update(process.logs)


# -- watching what arrives -----------------------------------------------------------------------


class Watch:
    """Finds tokens in what the bot sent to one chat, scanning only messages not seen before."""

    def __init__(self, server: LocalBotApi, chat: SimChat | SimUser, pattern: re.Pattern[str]):
        self._server = server
        self._chat = chat
        self._pattern = pattern
        self._scanned = 0
        self.hits: dict[str, list[SentMessage]] = {}

    def scan(self) -> None:
        messages = self._server.sent_to(self._chat)
        for message in messages[self._scanned :]:
            for token in set(self._pattern.findall(message.text or "")):
                self.hits.setdefault(token, []).append(message)
        self._scanned = len(messages)

    def first(self, token: str, ticket: int | None) -> SentMessage | None:
        """The first message showing `token`, and `#ticket` too when the ticket is known."""
        for message in self.hits.get(token, ()):
            if ticket is None or mentions_ticket(message.text or "", ticket):
                return message
        return None


async def wait_until(bench: Bench, done: Callable[[], bool], deadline: float) -> bool:
    """Poll `done` until it holds or monotonic `deadline` passes; fail fast if the service died."""
    while True:
        bench.check_alive()
        if done():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(SCAN_EVERY)


async def wait_visible(
    bench: Bench, watch: Watch, probes: Sequence[Probe], deadline: float
) -> bool:
    def all_seen() -> bool:
        watch.scan()
        return all(p.token in watch.hits for p in probes if p.sent_at is not None)

    return await wait_until(bench, all_seen, deadline)


async def send_paced(
    bench: Bench, probes: Sequence[Probe], interval: float, pacing: Pacing, chat: SimChat | None
) -> None:
    """Send the probes on an absolute schedule, one every `interval` seconds."""
    start = time.monotonic()
    for index, probe in enumerate(probes):
        late = await bench.sleep_until(start + index * interval)
        probe.sent_at = time.time()
        pacing.note(probe.sent_at, late)
        await bench.server.user_sends(probe.sender, chat=chat, text=probe.text)


# -- scenarios -----------------------------------------------------------------------------------


def customers(server: LocalBotApi, count: int) -> list[SimUser]:
    return [server.add_user("Customer", last_name=f"{n:04d}") for n in range(count)]


def light_plan(server: LocalBotApi) -> Plan:
    people = customers(server, LIGHT_CUSTOMERS)
    probes = [
        Probe(f"l{n:04d}", person, LIGHT_TEXT.format(token=f"l{n:04d}"))
        for n, person in enumerate(people)
    ]
    return Plan("light", probes)


def heavy_plan(server: LocalBotApi) -> Plan:
    people = customers(server, HEAVY_CUSTOMERS)
    rng = random.Random(1_200)
    order = list(range(HEAVY_CUSTOMERS))
    order += [rng.randrange(HEAVY_CUSTOMERS) for _ in range(HEAVY_MESSAGES - HEAVY_CUSTOMERS)]
    rng.shuffle(order)
    probes = [
        Probe(f"h{n:04d}", people[who], HEAVY_TEXT.format(token=f"h{n:04d}"))
        for n, who in enumerate(order)
    ]
    return Plan("heavy", probes)


def burst_plan(server: LocalBotApi) -> Plan:
    people = customers(server, BURST_CUSTOMERS)
    probes = [
        Probe(f"b{n:04d}", person, BURST_TEXT.format(token=f"b{n:04d}"))
        for n, person in enumerate(people)
    ]
    return Plan("burst", probes)


def topic_of(server: LocalBotApi, group: SimChat, ticket: int) -> int | None:
    for topic in server.topics(group):
        if topic.name.startswith(f"#{ticket} "):
            return topic.thread_id
    return None


async def drive_light(bench: Bench, plan: Plan) -> None:
    watch = Watch(bench.server, bench.group, token_pattern("l"))
    await send_paced(bench, plan.customers, LIGHT_INTERVAL, plan.pacing, None)
    await wait_visible(bench, watch, plan.customers, time.monotonic() + LIGHT_SETTLE)
    tickets = await stored_tickets(bench.data, token_pattern("l"))
    # The agent answers each ticket in its topic, 12 s apart, starting 12 s after the last send.
    start = time.monotonic() + LIGHT_INTERVAL
    for index, probe in enumerate(plan.customers):
        ticket = tickets.get(probe.token)
        token = f"r{index:04d}"
        reply = Probe(token, bench.agent, REPLY_TEXT.format(token=token), ticket=ticket)
        plan.replies.append(reply)
        late = await bench.sleep_until(start + index * LIGHT_INTERVAL)
        thread = topic_of(bench.server, bench.group, ticket) if ticket is not None else None
        if thread is None:
            print(f"  #{ticket} ({probe.token}) has no topic to answer in; reply not sent")
            continue
        reply.sent_at = time.time()
        plan.reply_pacing.note(reply.sent_at, late)
        await bench.server.user_sends(
            bench.agent, chat=bench.group, text=reply.text, thread_id=thread
        )
    await wait_until(
        bench, lambda: all_replies_arrived(bench, plan), time.monotonic() + LIGHT_SETTLE
    )


def all_replies_arrived(bench: Bench, plan: Plan) -> bool:
    return all(
        reply_seen(bench, plan, n) is not None
        for n, reply in enumerate(plan.replies)
        if reply.sent_at is not None
    )


def reply_seen(bench: Bench, plan: Plan, index: int) -> SentMessage | None:
    """The first message in the customer's chat that carries the agent's reply."""
    token = plan.replies[index].token
    customer = plan.customers[index].sender
    return next((m for m in bench.server.sent_to(customer) if token in (m.text or "")), None)


async def drive_heavy(bench: Bench, plan: Plan) -> None:
    watch = Watch(bench.server, bench.group, token_pattern("h"))
    await send_paced(bench, plan.customers, 1 / HEAVY_RATE, plan.pacing, None)
    await wait_visible(bench, watch, plan.customers, time.monotonic() + HEAVY_DRAIN)


async def drive_burst(bench: Bench, plan: Plan) -> None:
    watch = Watch(bench.server, bench.group, token_pattern("b"))
    began = time.monotonic()
    await send_paced(bench, plan.customers, BURST_SPREAD / BURST_CUSTOMERS, plan.pacing, None)
    await wait_visible(bench, watch, plan.customers, began + BURST_DRAIN)


PLANS: dict[str, Callable[[LocalBotApi], Plan]] = {
    "light": light_plan,
    "heavy": heavy_plan,
    "burst": burst_plan,
}
DRIVERS: dict[str, Callable[[Bench, Plan], Awaitable[None]]] = {
    "light": drive_light,
    "heavy": drive_heavy,
    "burst": drive_burst,
}
PREFIX = {"light": "l", "heavy": "h", "burst": "b"}


# -- results -------------------------------------------------------------------------------------


async def stored_tickets(data: Database, pattern: re.Pattern[str]) -> dict[str, int]:
    """Token → ticket of every customer message the database holds."""
    async with data.sessions() as session:
        rows = (
            await session.execute(
                select(Message.ticket_id, Message.text).where(
                    Message.direction == Direction.IN.value
                )
            )
        ).all()
    found: dict[str, int] = {}
    for ticket_id, text in rows:
        for token in pattern.findall(text or ""):
            found.setdefault(token, ticket_id)
    return found


def group_use(server: LocalBotApi, group: SimChat) -> GroupUse:
    sent = server.sent_to(group)
    digests = [m for m in sent if (m.text or "").startswith("📥")]
    # A new topic counts against the group's limit like a message (the server counts it too).
    times = sorted([m.time for m in sent] + [t.created_at for t in server.topics(group)])
    window: deque[float] = deque()
    peak = 0
    for at in times:
        window.append(at)
        while window[0] <= at - 60.0:
            window.popleft()
        peak = max(peak, len(window))
    return GroupUse(
        messages=len(sent),
        topics=len(server.topics(group)),
        digests=len(digests),
        digest_lines_max=max(((m.text or "").count("\n") for m in digests), default=0),
        peak_per_minute=peak,
    )


def timeline(server: LocalBotApi, group: SimChat, since: float | None) -> list[str]:
    """One line per message the bot sent to the group (and per topic), from the first send."""
    lines: list[tuple[float, str]] = []
    for topic in server.topics(group):
        at = topic.created_at - (since or topic.created_at)
        lines.append((at, f"{at:8.2f} s  topic created: {topic.name[:60]}"))
    for message in server.sent_to(group):
        text = message.text or ""
        rows = text.splitlines() or [""]
        at = message.time - (since or message.time)
        if text.startswith("📥"):
            what = f"digest, {len(rows) - 1} lines: {rows[1][:36]} … {rows[-1][:36]}"
        else:
            where = "in a topic" if message.thread_id is not None else "in General"
            what = f"{where}: {rows[0][:72]}"
        lines.append((at, f"{at:8.2f} s  {what}"))
    return [line for _, line in sorted(lines, key=lambda pair: pair[0])]


def receipts(bench: Bench, plan: Plan) -> tuple[int, int, float | None]:
    """Customers whose chat got anything from the bot (their receipt), and the slowest, in s."""
    first_sent: dict[int, float] = {}
    who: dict[int, SimUser] = {}
    for probe in plan.customers:
        if probe.sent_at is not None and probe.sender.id not in first_sent:
            first_sent[probe.sender.id] = probe.sent_at
            who[probe.sender.id] = probe.sender
    delays = []
    for user_id, sent_at in first_sent.items():
        answers = [m for m in bench.server.sent_to(who[user_id]) if "#" in (m.text or "")]
        if answers:
            delays.append(answers[0].time - sent_at)
    return len(delays), len(first_sent), max(delays, default=None)


async def customer_series(bench: Bench, plan: Plan, too_many: int) -> Series:
    pattern = token_pattern(PREFIX[plan.scenario])
    stored = await stored_tickets(bench.data, pattern)
    watch = Watch(bench.server, bench.group, pattern)
    watch.scan()
    for probe in plan.customers:
        probe.ticket = stored.get(probe.token)
        probe.stored = probe.ticket is not None
        seen = watch.first(probe.token, probe.ticket) if probe.stored else None
        probe.seen_at = seen.time if seen is not None else None
    sent = [p for p in plan.customers if p.sent_at is not None]
    latencies = [lat for p in sent if (lat := p.latency) is not None]
    not_stored = sum(1 for p in sent if not p.stored)
    not_seen = sum(1 for p in sent if p.stored and p.seen_at is None)
    complete = len(sent) == len(plan.customers) and not_stored == 0 and not_seen == 0
    tally = Stats.of(latencies) if latencies else None
    if plan.scenario == "light":
        target = "p50 ≤ 50 ms"
        met = complete and tally is not None and tally.p50 <= LIGHT_TARGET * 1000
    elif plan.scenario == "heavy":
        target = "all visible, p99 ≤ 10 s, 0 × 429, 0 lost"
        met = complete and tally is not None and tally.p99 <= HEAVY_TARGET * 1000
        met = met and too_many == 0
    else:
        target = "all visible within 90 s, 0 × 429, 0 lost"
        met = complete and tally is not None and tally.max <= BURST_TARGET * 1000
        met = met and too_many == 0
    return Series("customer → agents", len(sent), latencies, not_stored, not_seen, target, met)


def reply_series(bench: Bench, plan: Plan) -> Series:
    latencies: list[float] = []
    not_seen = 0
    for index, reply in enumerate(plan.replies):
        seen = reply_seen(bench, plan, index) if reply.sent_at is not None else None
        if reply.sent_at is None or seen is None:
            not_seen += 1
            continue
        reply.seen_at = seen.time
        latencies.append(seen.time - reply.sent_at)
    missing = LIGHT_CUSTOMERS - len(plan.replies)
    tally = Stats.of(latencies) if latencies else None
    met = not_seen == 0 and missing == 0 and tally is not None
    met = met and tally is not None and tally.p50 <= LIGHT_TARGET * 1000
    sent = sum(1 for r in plan.replies if r.sent_at is not None)
    return Series(
        "agent reply → customer", sent, latencies, 0, not_seen + missing, "p50 ≤ 50 ms", met
    )


async def run(kind: str, scenario: str, postgres_url: str, *, separate: bool) -> RunResult:
    tally = LogTally()
    logging.getLogger().addHandler(tally)
    try:
        async with (
            database(kind, postgres_url) as data,
            running_service(data, separate=separate, tally=tally) as bench,
        ):
            plan = PLANS[scenario](bench.server)
            meter = CpuMeter()
            meter.start()
            service_began = await bench.service_cpu()
            timed_out = False
            try:
                async with asyncio.timeout(HARD_TIMEOUT[scenario]):
                    await DRIVERS[scenario](bench, plan)
            except TimeoutError:
                timed_out = True
            machine_cpu = meter.stop()
            cpu = CpuUse(await bench.service_cpu() - service_began, machine_cpu.machine_busy)
            too_many = bench.server.stats.too_many_requests_total
            series = [await customer_series(bench, plan, too_many)]
            if scenario == "light":
                series.append(reply_series(bench, plan))
            return RunResult(
                kind=kind,
                scenario=scenario,
                series=series,
                too_many_requests=too_many,
                group=group_use(bench.server, bench.group),
                pacing=plan.pacing,
                cpu=cpu,
                receipts=receipts(bench, plan),
                timed_out=timed_out,
                logs=tally.counts,
                timeline=timeline(bench.server, bench.group, plan.pacing.first),
            )
    finally:
        logging.getLogger().removeHandler(tally)


# -- report --------------------------------------------------------------------------------------


def duration(ms: float) -> str:
    return f"{ms:.1f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def report(results: Sequence[RunResult], *, show_timeline: bool) -> None:
    rows = []
    for r in results:
        for s in r.series:
            t = s.stats
            cells = [duration(v) for v in (t.p50, t.p90, t.p99, t.max)] if t else ["—"] * 4
            rows.append(
                [
                    r.kind,
                    r.scenario + (" (TIMED OUT)" if r.timed_out else ""),
                    s.name,
                    f"{len(s.latencies):,}/{s.sent:,}",
                    *cells,
                    f"{r.too_many_requests}",
                    f"{s.lost}",
                    f"{r.group.messages} + {r.group.topics} topics",
                    s.target,
                    verdict(s.met),
                ]
            )
    header = ["database", "scenario", "measured", "seen/sent", "p50", "p90", "p99", "max"]
    header += ["429s", "lost", "group msgs", "target", "verdict"]
    print()
    print(table(header, rows))
    print()
    details = []
    for r in results:
        pacing = r.pacing
        sent = r.series[0].sent
        rate = (sent - 1) / pacing.span if pacing.span and sent > 1 else 0.0
        busy = "n/a" if r.cpu.machine_busy is None else f"{r.cpu.machine_busy:.0%}"
        got, of, slowest = r.receipts
        details.append(
            [
                r.kind,
                r.scenario,
                f"{pacing.span:.2f} s" + (f" ({rate:,.1f}/s)" if rate else ""),
                f"{pacing.late_max * 1000:.0f} ms",
                f"{r.group.digests}",
                f"{r.group.digest_lines_max}",
                f"{r.group.peak_per_minute}",
                f"{got}/{of}" + (f", slowest {slowest:.1f} s" if slowest is not None else ""),
                f"{r.cpu.process_seconds:.1f} s",
                busy,
            ]
        )
    print(
        table(
            [
                "database",
                "scenario",
                "sends spread over",
                "send late max",
                "digests",
                "max lines/digest",
                "group peak/60 s",
                "receipts",
                "CPU (process)",
                "machine busy",
            ],
            details,
        )
    )
    for r in results:
        if show_timeline:
            print(f"\ngroup messages, {r.kind} {r.scenario} (from the first customer send):")
            print("\n".join(r.timeline))
        if r.logs:
            print(f"\nservice warnings/errors, {r.kind} {r.scenario}:")
            for line, count in r.logs.most_common(12):
                print(f"  {count:>5} × {line[:160]}")


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the Telegram channel end to end against the local Bot API server."
    )
    parser.add_argument("--db", choices=[*KINDS, "both"], default="both")
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="also list every message the bot sent to the agents' group, with its time",
    )
    parser.add_argument(
        "--separate-process",
        action="store_true",
        help="run the service in a process of its own instead of sharing this process's event "
        "loop with the local server and the scripted people",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("TEST_DATABASE_URL") or DEFAULT_POSTGRES_URL,
        help="PostgreSQL server; a private schema is created and dropped (default: %(default)s)",
    )
    args = parser.parse_args()
    args.kinds = list(KINDS) if args.db == "both" else [args.db]
    args.scenarios = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    return args


async def main() -> int:
    args = parse_arguments()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    for label, value in await machine(args.kinds, args.postgres_url):
        print(f"{label}: {value}")
    results = []
    for kind in args.kinds:
        for scenario in args.scenarios:
            print(f"running {scenario} on {kind} …", flush=True)
            began = time.monotonic()
            result = await run(kind, scenario, args.postgres_url, separate=args.separate_process)
            print(f"  done in {time.monotonic() - began:.0f} s", flush=True)
            results.append(result)
    report(results, show_timeline=args.timeline)
    return 0


if __name__ == "__main__":
    sys.exit(launch(main))
