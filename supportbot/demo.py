"""`supportbot demo`: the real service on SQLite against the built-in local Telegram server.

Scripted customers write, an agent claims, answers and notes, and the terminal shows both sides
of every conversation and the queue. No token, no network: everything runs on loopback.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from sqlalchemy import select

from bot.local_api import LocalBotApi, RateLimits, SentMessage, SimChat, SimUser
from supportbot import app
from supportbot.settings import load_settings
from supportbot.templates import when
from tickets import queue
from tickets.agents import add_agent
from tickets.model import Plan, Role
from tickets.ports import utcnow
from tickets.tables import AgentPost, Customer, Ticket

TOKEN = "424242:DEMO-LOCAL-TOKEN-not-a-real-one"  # noqa: S105 - the local server only


class Transcript:
    """Prints what each side sees, as it happens."""

    def __init__(self, server: LocalBotApi, group: SimChat, names: dict[int, str]) -> None:
        self._server = server
        self._group = group
        self._names = names
        self._shown: set[tuple[int, int, str]] = set()
        self._start = time.time()

    def person(self, who: SimUser, where: str, text: str) -> None:
        self._line(f"{who.first_name} → {where}", text)

    def bot_to(self, who: SimUser, text: str) -> None:
        self._line(f"bot → {who.first_name}", text)

    def flush(self) -> None:
        """Print every bot message not shown yet, in the order the server recorded them."""
        chats = [self._group.id, *self._names]
        fresh: list[SentMessage] = []
        for chat in chats:
            for message in self._server.sent_to(chat):
                key = (message.chat_id, message.message_id, message.method)
                if key not in self._shown:
                    self._shown.add(key)
                    fresh.append(message)
        for message in sorted(fresh, key=lambda m: m.time):
            if message.chat_id == self._group.id:
                where = "agents' group" + (
                    f", topic {message.thread_id}" if message.thread_id else ""
                )
            else:
                where = self._names.get(message.chat_id, str(message.chat_id))
            body = message.text or f"[{message.media}]"
            buttons = " ".join(f"[{b.get('text')}]" for b in message.buttons())
            self._line(f"bot → {where}", body + (f"\n{buttons}" if buttons else ""), message.time)

    def _line(self, header: str, text: str, at: float | None = None) -> None:
        stamp = f"{(at or time.time()) - self._start:6.2f}s"
        indented = "\n".join(f"        │ {line}" for line in text.splitlines() or [""])
        print(f"{stamp}  {header}\n{indented}", flush=True)


async def _until(check: Callable[[], Awaitable[bool]], within: float = 15) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError("the demo waited too long for the service")
        await asyncio.sleep(0.05)


async def run_demo(directory: Path | None = None) -> None:
    """Run the scripted demo against a private SQLite file and a private local Telegram."""
    logging.getLogger("httpx").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="supportbot-demo-") as scratch:
        folder = directory or Path(scratch)
        server = LocalBotApi(TOKEN, bot_username="supportbot_demo", limits=RateLimits.telegram())
        await server.start()
        try:
            await _script(server, folder)
        finally:
            await server.stop()


class _Scene:
    """The demo's cast and its view of the database."""

    def __init__(self, server: LocalBotApi, look: app.Service, shown: Transcript) -> None:
        self.server = server
        self.look = look
        self.shown = shown

    async def tickets(self) -> list[Ticket]:
        async with self.look.sessions() as session:
            return list((await session.scalars(select(Ticket).order_by(Ticket.id))).all())

    async def topic(self, number: int) -> int:
        async def placed() -> bool:
            return await self._topic(number) is not None

        await _until(placed)
        found = await self._topic(number)
        assert found is not None
        return found

    async def _topic(self, number: int) -> int | None:
        async with self.look.sessions() as session:
            return await session.scalar(
                select(AgentPost.thread_id).where(
                    AgentPost.ticket_id == number, AgentPost.kind == "topic"
                )
            )

    async def customer_writes(self, who: SimUser, text: str, tickets_after: int) -> None:
        self.shown.person(who, "bot", text)
        await self.server.user_sends(who, text=text)

        async def stored() -> bool:
            return len(await self.tickets()) >= tickets_after

        await _until(stored)

    async def agent_writes(self, who: SimUser, group: SimChat, number: int, text: str) -> None:
        self.shown.person(who, f"topic of #{number}", text)
        await self.server.user_sends(who, chat=group, thread_id=await self.topic(number), text=text)

    async def settle(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.shown.flush()


async def _script(server: LocalBotApi, folder: Path) -> None:
    group = server.add_group("Support agents", forum=True)
    sam = server.add_user("Sam", username="sam_support")
    ann = server.add_user("Ann")
    bob = server.add_user("Bob")
    await server.add_member(group, sam)
    settings = load_settings(
        {
            "DATABASE_URL": f"sqlite:///{folder / 'demo.db'}",
            "TELEGRAM_TOKEN": TOKEN,
            "TELEGRAM_API_URL": server.url,
            "AGENT_CHAT_ID": str(group.id),
        },
        env_file=None,
    )
    print(f"Local Telegram Bot API server on {server.url}; database {folder / 'demo.db'}")
    print("Sam is an agent. Ann is on the free Basic plan, Bob bought Pro.\n")
    stop = asyncio.Event()
    service = asyncio.create_task(app.run(settings, stop))
    try:
        async with app.build(settings) as look:
            async with look.sessions.begin() as session:
                await add_agent(session, sam.id, Role.AGENT, "Sam", at=utcnow(), actor="demo")
                # What the billing import will do: Bob is known as a Pro customer.
                session.add(
                    Customer(telegram_id=bob.id, name="Bob", plan="pro", created_at=utcnow())
                )
            scene = _Scene(server, look, Transcript(server, group, {ann.id: "Ann", bob.id: "Bob"}))
            await server.wait_for(lambda: server.stats.requests.get("getUpdates", 0) > 0, 10)
            await _conversations(scene, group, sam, ann, bob)
            print(
                f"\nThe note stayed internal: Ann saw {len(server.sent_to(ann.id))} messages, "
                f"none of them the note. Telegram answered 429 "
                f"{server.stats.too_many_requests_total} times."
            )
    finally:
        stop.set()
        await asyncio.wait_for(service, 30)


async def _conversations(
    scene: _Scene, group: SimChat, sam: SimUser, ann: SimUser, bob: SimUser
) -> None:
    await scene.customer_writes(
        ann, "Hi! I topped up 50 USDT two hours ago and my balance still shows 0.", 1
    )
    await scene.customer_writes(bob, "Our API key returns 429 on every call since this morning.", 2)
    ann_ticket, bob_ticket = (t.id for t in await scene.tickets())
    await scene.topic(bob_ticket)
    await scene.settle(0.6)

    print("\n— The queue: Bob is Pro, so he comes first while neither ticket is at risk —")
    await _print_queue(scene.look)

    card = scene.server.sent_to(group, await scene.topic(bob_ticket))[0]
    scene.shown.person(sam, "agents' group", f"[presses 🙋 Claim on the card of #{bob_ticket}]")
    press = await scene.server.press_button(sam, card, card.callback_data()[0])
    toast = await scene.server.wait_for(lambda: scene.server.callback_answer(press), 10)
    scene.shown.bot_to(sam, f"(answer to the button press) {toast.text}")
    await scene.agent_writes(
        sam,
        group,
        bob_ticket,
        "Sorry about that! A plan sync put your key on Basic limits; it is fixed now.",
    )
    await scene.settle(1.5)
    await scene.agent_writes(
        sam, group, ann_ticket, "/note deposit tx found on-chain, waiting for 12 confirmations"
    )
    await scene.agent_writes(
        sam, group, ann_ticket, "Your top-up needed 12 confirmations; it is on your balance now."
    )
    await scene.settle(2.5)
    print("\n— The queue after the answers: nobody is waiting on us —")
    await _print_queue(scene.look)


async def _print_queue(look: app.Service) -> None:
    async with look.sessions() as session:
        entries = await queue.top(session, look.policy, utcnow(), 20)
    if not entries:
        print("  (empty)")
    for e in entries:
        pro = "PRO  " if e.plan is Plan.PRO else "basic"
        print(
            f"  #{e.ticket}  {pro}  {e.customer:<6} due {when(e.due_at)}  {e.urgency.value}"
            + (f"  claimed by {e.assignee}" if e.assignee else "")
        )
