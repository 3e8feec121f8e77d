"""The demo's stage: the transcript both sides are shown in, and the scene the script plays on."""

from __future__ import annotations

import asyncio
import email.policy
import time
from collections.abc import Awaitable, Callable, Sequence
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from sqlalchemy import func, select

from bot.store import AgentPost
from sandbox.mail import LocalMailServer
from sandbox.telegram import LocalBotApi, SentMessage, SimChat, SimUser
from supportbot import app
from tickets import queue
from tickets.errors import SupportbotError
from tickets.model import Direction, Plan
from tickets.ports import utcnow
from tickets.rendering import when
from tickets.tables import Message, Ticket

TOKEN = "424242:DEMO-LOCAL-TOKEN-not-a-real-one"  # noqa: S105 - the local server only
SUPPORT_ADDRESS = "support@demo.example"
CAROL = "Carol Example <carol@example.com>"
SHOWN_HEADERS = ("From", "To", "Subject", "Message-ID", "In-Reply-To", "References")


class DemoStalled(SupportbotError):
    """The service did not do what the script waits for in time."""


class Transcript:
    """Prints what each side sees, as it happens."""

    def __init__(
        self,
        server: LocalBotApi,
        group: SimChat,
        names: dict[int, str],
        mail: LocalMailServer | None = None,
    ) -> None:
        self._server = server
        self._group = group
        self._names = names
        self._mail = mail
        self._shown: set[tuple[int, int, str]] = set()
        self._mails_shown = 0
        self._start = time.time()

    def follow(self, who: SimUser) -> None:
        """Show what the bot sends this person too."""
        self._names[who.id] = who.first_name

    def person(self, who: SimUser, where: str, text: str) -> None:
        self._line(f"{who.first_name} → {where}", text)

    def bot_to(self, who: SimUser, text: str) -> None:
        self._line(f"bot → {who.first_name}", text)

    def mail_from(self, name: str, mail: EmailMessage) -> None:
        """Show a customer's mail as it goes into the support mailbox."""
        self._line(
            f"{name} → {mail['To']} (email)",
            mail_text(mail, ("From", "Subject", "Message-ID", "In-Reply-To")),
        )

    def flush(self) -> None:
        """Print every bot message and sent mail not shown yet, in the order they happened."""
        chats = [self._group.id, *self._names]
        fresh: list[tuple[float, str, str]] = []
        for chat in chats:
            for message in self._server.sent_to(chat):
                key = (message.chat_id, message.message_id, message.method)
                if key not in self._shown:
                    self._shown.add(key)
                    fresh.append((message.time, *self._telegram(message)))
        if self._mail is not None:
            deliveries = self._mail.smtp.deliveries()
            for delivery in deliveries[self._mails_shown :]:
                where = f"{', '.join(delivery.rcpt_tos)} (email, taken by the local SMTP server)"
                fresh.append((delivery.at, f"bot → {where}", mail_text(delivery.message)))
            self._mails_shown = len(deliveries)
        for at, header, text in sorted(fresh, key=lambda entry: entry[0]):
            self._line(header, text, at)

    def _telegram(self, message: SentMessage) -> tuple[str, str]:
        if message.chat_id == self._group.id:
            where = "agents' group" + (f", topic {message.thread_id}" if message.thread_id else "")
        else:
            where = self._names.get(message.chat_id, str(message.chat_id))
        body = message.text or ""
        if message.media:
            body = f"[{message.media}] {body}".strip()
        buttons = " ".join(f"[{b.get('text')}]" for b in message.buttons())
        return f"bot → {where}", body + (f"\n{buttons}" if buttons else "")

    def _line(self, header: str, text: str, at: float | None = None) -> None:
        stamp = f"{(at or time.time()) - self._start:6.2f}s"
        indented = "\n".join(f"        │ {line}" for line in text.splitlines() or [""])
        print(f"{stamp}  {header}\n{indented}", flush=True)


async def until(check: Callable[[], Awaitable[bool]], within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise DemoStalled(f"the demo waited {within:.0f} s for the service and gave up")
        await asyncio.sleep(0.05)


def mail_text(mail: EmailMessage, headers: Sequence[str] = SHOWN_HEADERS) -> str:
    """A mail as the transcript shows it: some headers, a blank line, the plain text."""
    lines = [f"{name}: {mail[name]}" for name in headers if mail[name] is not None]
    body = mail.get_body(preferencelist=("plain",))
    text = body.get_content() if isinstance(body, EmailMessage) else ""
    return "\n".join([*lines, "", text.strip("\n")])


def customer_mail(
    sender: str, subject: str, text: str, *, answering: EmailMessage | None = None
) -> EmailMessage:
    """A mail as a customer's mail program writes it, answering `answering` if given."""
    mail = EmailMessage(policy=email.policy.SMTP)
    mail["From"] = sender
    mail["To"] = SUPPORT_ADDRESS
    mail["Subject"] = subject
    mail["Date"] = format_datetime(utcnow())
    mail["Message-ID"] = make_msgid(domain="mail.example.com")
    if answering is not None:
        earlier = str(answering["References"] or "").split()
        mail["In-Reply-To"] = str(answering["Message-ID"])
        mail["References"] = " ".join([*earlier, str(answering["Message-ID"])])
    mail.set_content(text)
    return mail


class Scene:
    """The demo's cast and its view of the database."""

    def __init__(
        self, server: LocalBotApi, look: app.Service, shown: Transcript, mail: LocalMailServer
    ) -> None:
        self.server = server
        self.look = look
        self.shown = shown
        self.mail = mail

    async def tickets(self) -> list[Ticket]:
        async with self.look.sessions() as session:
            return list((await session.scalars(select(Ticket).order_by(Ticket.id))).all())

    async def topic(self, number: int) -> int:
        async def placed() -> bool:
            return await self._topic(number) is not None

        await until(placed)
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

        await until(stored)

    async def customer_mails(self, name: str, mail: EmailMessage) -> None:
        self.shown.mail_from(name, mail)
        self.mail.append(mail.as_bytes())

    async def sent_mails(self, count: int) -> list[EmailMessage]:
        async def sent() -> bool:
            return len(self.mail.received()) >= count

        await until(sent)
        return self.mail.received()

    async def customer_messages(self, number: int) -> int:
        async with self.look.sessions() as session:
            found = await session.scalar(
                select(func.count())
                .select_from(Message)
                .where(Message.ticket_id == number, Message.direction == Direction.IN.value)
            )
            return int(found or 0)

    async def agent_writes(self, who: SimUser, group: SimChat, number: int, text: str) -> None:
        self.shown.person(who, f"topic of #{number}", text)
        await self.server.user_sends(who, chat=group, thread_id=await self.topic(number), text=text)

    async def settle(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.shown.flush()


async def print_queue(look: app.Service) -> None:
    async with look.sessions() as session:
        entries = await queue.top(session, look.policy, utcnow(), 20)
    if not entries:
        print("  (empty)")
    for e in entries:
        pro = "PRO  " if e.plan is Plan.PRO else "basic"
        print(
            f"  #{e.ticket}  {pro}  {e.customer:<13} due {when(e.due_at)}  {e.urgency.value}"
            + (f"  claimed by {e.assignee}" if e.assignee else "")
        )
