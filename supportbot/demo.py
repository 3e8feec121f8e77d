"""`supportbot demo`: the real service on SQLite against built-in local Telegram and mail servers.

Scripted customers write by Telegram and by email, an agent claims, answers and notes, and the
terminal shows both sides of every conversation and the queue: for email, the mails themselves
with their threading headers. No token, no network: everything runs on loopback.
"""

from __future__ import annotations

import asyncio
import email.policy
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from decimal import Decimal
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

from sqlalchemy import func, select

from accounts.tables import Account, AccountLink, LedgerEntry, Payment, Payout
from bot.local_api import LocalBotApi, RateLimits, SentMessage, SimChat, SimUser
from mail.local_server import LocalMailServer
from supportbot import app
from supportbot.local import local_settings, serving
from supportbot.templates import when
from tickets import queue
from tickets.agents import add_agent
from tickets.model import Direction, Plan, Role
from tickets.ports import utcnow
from tickets.tables import AgentPost, Customer, Message, Ticket

TOKEN = "424242:DEMO-LOCAL-TOKEN-not-a-real-one"  # noqa: S105 - the local server only
SUPPORT_ADDRESS = "support@demo.example"
CAROL = "Carol Example <carol@example.com>"
SHOWN_HEADERS = ("From", "To", "Subject", "Message-ID", "In-Reply-To", "References")


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
        body = message.text or f"[{message.media}]"
        buttons = " ".join(f"[{b.get('text')}]" for b in message.buttons())
        return f"bot → {where}", body + (f"\n{buttons}" if buttons else "")

    def _line(self, header: str, text: str, at: float | None = None) -> None:
        stamp = f"{(at or time.time()) - self._start:6.2f}s"
        indented = "\n".join(f"        │ {line}" for line in text.splitlines() or [""])
        print(f"{stamp}  {header}\n{indented}", flush=True)


async def _until(check: Callable[[], Awaitable[bool]], within: float = 90) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError("the demo waited too long for the service")
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


async def run_demo(directory: Path | None = None) -> None:
    """Run the scripted demo against a private SQLite file, local Telegram and local mail."""
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's per-connection lines
    with tempfile.TemporaryDirectory(prefix="supportbot-demo-") as scratch:
        folder = directory or Path(scratch)
        server = LocalBotApi(TOKEN, bot_username="supportbot_demo", limits=RateLimits.telegram())
        await server.start()
        try:
            async with LocalMailServer() as mail:
                await _script(server, mail, folder)
        finally:
            await server.stop()


class _Scene:
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

    async def customer_mails(self, name: str, mail: EmailMessage) -> None:
        self.shown.mail_from(name, mail)
        self.mail.append(mail.as_bytes())

    async def sent_mails(self, count: int) -> list[EmailMessage]:
        async def sent() -> bool:
            return len(self.mail.received()) >= count

        await _until(sent)
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


async def _script(server: LocalBotApi, mail: LocalMailServer, folder: Path) -> None:
    group = server.add_group("Support agents", forum=True)
    sam = server.add_user("Sam", username="sam_support")
    ann = server.add_user("Ann")
    bob = server.add_user("Bob")
    ada = server.add_user("Ada", username="ada_admin")
    await server.add_member(group, sam)
    await server.add_member(group, ada)
    settings = local_settings(
        server, group, f"sqlite:///{folder / 'demo.db'}", mail.environment(SUPPORT_ADDRESS)
    )
    print(f"Local Telegram Bot API server on {server.url}; database {folder / 'demo.db'}")
    print(
        f"Local mail: the mailbox of {SUPPORT_ADDRESS} on IMAP 127.0.0.1:{mail.imap.port}, "
        f"outgoing mail kept by SMTP 127.0.0.1:{mail.smtp.port}"
    )
    print(
        "Sam is an agent, Ada an admin. Ann is on the free Basic plan, Bob bought Pro, Carol "
        "writes by email.\n"
    )
    async with serving(settings, server), app.build(settings) as look:
        async with look.sessions.begin() as session:
            await add_agent(session, sam.id, Role.AGENT, "Sam", at=utcnow(), actor="demo")
            await add_agent(session, ada.id, Role.ADMIN, "Ada", at=utcnow(), actor="demo")
            # What the billing import will do: Bob is known as a Pro customer.
            session.add(Customer(telegram_id=bob.id, name="Bob", plan="pro", created_at=utcnow()))
        shown = Transcript(server, group, {ann.id: "Ann", bob.id: "Bob"}, mail)
        scene = _Scene(server, look, shown, mail)
        await _conversations(scene, group, sam, ann, bob)
        await _email(scene, group, sam)
        await _refund(scene, group, sam, ada, bob)
        print(
            f"\nThe note stayed internal: Ann saw {len(server.sent_to(ann.id))} messages, "
            f"none of them the note. Telegram answered 429 "
            f"{server.stats.too_many_requests_total} times."
        )


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


async def _email(scene: _Scene, group: SimChat, sam: SimUser) -> None:
    """Carol writes by email, Sam answers in the ticket's topic, Carol answers the answer."""
    print("\n— Email: Carol writes to the support address —")

    async def listening() -> bool:
        return scene.mail.imap.idling > 0  # the intake waits in IMAP IDLE for new mail

    await _until(listening)
    first = customer_mail(
        CAROL,
        "Invoice INV-2026-1142 shows our old VAT number",
        "Hello,\n\nour November invoice INV-2026-1142 still shows our old VAT number "
        "DE123456789. Could you reissue it with DE987654321?\n\nThanks,\nCarol\n\n-- \n"
        "Carol Example · Finance, Example GmbH\n",
    )
    await scene.customer_mails("Carol", first)
    number = len(await scene.tickets()) + 1

    async def opened() -> bool:
        return len(await scene.tickets()) >= number

    await _until(opened)
    topic = await scene.topic(number)
    await scene.sent_mails(1)  # the receipt
    await scene.settle(0.5)

    await scene.agent_writes(
        sam,
        group,
        number,
        "Hi Carol, done: the corrected invoice INV-2026-1142-R1 with DE987654321 is in your "
        "account under Billing → Invoices.",
    )
    reply = (await scene.sent_mails(2))[-1]
    await scene.settle(1.0)

    answer = customer_mail(
        CAROL,
        f"Re: {reply['Subject']}",
        "Got it, thank you! Could you also send a copy to accounting@example.com?\n\n"
        f"On {reply['Date']}, {reply['From']} wrote:\n"
        + "\n".join(f"> {line}" for line in mail_text(reply, ()).strip().splitlines()),
        answering=reply,
    )
    await scene.customer_mails("Carol", answer)

    async def joined() -> bool:
        return await scene.customer_messages(number) >= 2

    await _until(joined)
    await scene.settle(0.8)
    tickets = await scene.tickets()
    print(
        f"\nCarol's answer named our reply ({reply['Message-ID']}) in In-Reply-To, so it joined "
        f"ticket #{number} in topic {topic}; still {len(tickets)} tickets in all."
    )
    print("\n— The queue: Carol's answer waits on us —")
    await _print_queue(scene.look)


async def _refund(scene: _Scene, group: SimChat, sam: SimUser, ada: SimUser, bob: SimUser) -> None:
    """Bob asks for his money back; Sam confirms the panel; Ada marks the payouts sent."""
    print(
        "\n— Refunds: Bob's account (linked with /link) has a 40 USDT top-up from yesterday, "
        "5 of it used, and his Pro upgrade of two days ago, Pro limits not used yet —"
    )
    now = utcnow()
    async with scene.look.sessions.begin() as session:
        account = Account(
            email="bob@example.com",
            plan="pro",
            pro_since=now - timedelta(days=2),
            created_at=now - timedelta(days=40),
            updated_at=now,
        )
        session.add(account)
        await session.flush()
        for purpose, amount, ago, wallet, currency, chain in (
            ("pro_upgrade", "19", timedelta(days=2), "bc1qbobwallet7x", "BTC", "bitcoin"),
            ("topup", "40", timedelta(days=1), "TBobTronWallet9", "USDT", "tron"),
        ):
            payment = Payment(
                account_id=account.id,
                external_id=f"demo-{purpose}",
                purpose=purpose,
                amount_usd=Decimal(amount),
                crypto_amount=amount,
                currency=currency,
                chain=chain,
                wallet=wallet,
                tx_hash=f"0xdemo{purpose}",
                paid_at=now - ago,
            )
            session.add(payment)
            await session.flush()
            if purpose == "topup":
                session.add(
                    LedgerEntry(
                        account_id=account.id,
                        kind="topup",
                        amount=Decimal(40),
                        at=now - ago,
                        payment_id=payment.id,
                    )
                )
        session.add(LedgerEntry(account_id=account.id, kind="usage", amount=Decimal(-5), at=now))
        customer = await session.scalar(select(Customer.id).where(Customer.telegram_id == bob.id))
        assert customer is not None
        session.add(
            AccountLink(customer_id=customer, account_id=account.id, method="code", linked_at=now)
        )
    number = len(await scene.tickets()) + 1
    await scene.customer_writes(bob, "/refund I no longer need the API, sorry", number)
    await scene.topic(number)
    await scene.settle(1.0)
    card = scene.server.sent_to(group, await scene.topic(number))[0]
    scene.shown.person(sam, "agents' group", f"[presses 💸 Refund on the card of #{number}]")
    await scene.server.press_button(sam, card, card.callback_data()[-1])

    def panel() -> SentMessage | None:
        found = [m for m in scene.server.sent_to(group) if "💸 Refund for" in (m.text or "")]
        return found[-1] if found else None

    shown = await scene.server.wait_for(panel, 10)
    await scene.settle(0.3)
    scene.shown.person(sam, "agents' group", "[presses ✅ Confirm on the panel]")
    await scene.server.press_button(sam, shown, shown.callback_data()[0])

    async def paid_out() -> bool:
        async with scene.look.sessions() as session:
            return bool((await session.scalars(select(Payout.id))).all())

    await _until(paid_out)
    await scene.settle(1.0)
    async with scene.look.sessions() as session:
        payouts = list((await session.scalars(select(Payout).order_by(Payout.id))).all())
    for payout in payouts:
        text = f"/paid {payout.id} 0x{payout.id:02d}c0ffee{payout.wallet[-4:].lower()}"
        scene.shown.person(ada, "agents' group", text)
        await scene.server.user_sends(ada, chat=group, text=text)

    async def told() -> bool:
        sent = [m.text or "" for m in scene.server.sent_to(bob.id)]
        return sum("Transaction hash" in t for t in sent) >= len(payouts)

    await _until(told)
    await scene.settle(0.5)
    print(f"\nBob got his money back to the wallets he paid from; #{number} shows it all.")


async def _print_queue(look: app.Service) -> None:
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
