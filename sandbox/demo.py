"""`supportbot demo`: the real service on SQLite against built-in local Telegram and mail servers.

Scripted customers write by Telegram and by email, an agent claims, answers and notes, and the
terminal shows both sides of every conversation and the queue: for email, the mails themselves
with their threading headers. No token, no network: everything runs on loopback.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from sandbox.demo_accounts import ledger_and_link, refund, watch_and_report
from sandbox.demo_stage import (
    CAROL,
    SUPPORT_ADDRESS,
    TOKEN,
    Scene,
    Transcript,
    customer_mail,
    mail_text,
    print_queue,
    until,
)
from sandbox.mail import LocalMailServer
from sandbox.service import local_settings, serving
from sandbox.telegram import LocalBotApi, RateLimits, SimChat, SimUser
from supportbot import app
from tickets.agents import add_agent
from tickets.model import Role
from tickets.ports import utcnow


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


async def _script(server: LocalBotApi, mail: LocalMailServer, folder: Path) -> None:
    group = server.add_group("Support agents", forum=True)
    sam = server.add_user("Sam", username="sam_support")
    ann = server.add_user("Ann")
    bob = server.add_user("Bob")
    ada = server.add_user("Ada", username="ada_admin")
    ivan = server.add_user("Ivan", language_code="ru-RU")
    await server.add_member(group, sam)
    await server.add_member(group, ada)
    settings = local_settings(
        server,
        group,
        f"sqlite:///{folder / 'demo.db'}",
        {**mail.environment(SUPPORT_ADDRESS), "SLA_WATCH_INTERVAL_SECONDS": "1"},
    )
    print(f"Local Telegram Bot API server on {server.url}; database {folder / 'demo.db'}")
    print(
        f"Local mail: the mailbox of {SUPPORT_ADDRESS} on IMAP 127.0.0.1:{mail.imap.port}, "
        f"outgoing mail kept by SMTP 127.0.0.1:{mail.smtp.port}"
    )
    print(
        "Sam is an agent, Ada an admin. Ann is on the free Basic plan, Bob bought Pro (the "
        "billing system's export says so), Carol writes by email.\n"
    )
    async with serving(settings, server), app.build(settings) as look:
        async with look.sessions.begin() as session:
            await add_agent(session, sam.id, Role.AGENT, "Sam", at=utcnow(), actor="demo")
            await add_agent(session, ada.id, Role.ADMIN, "Ada", at=utcnow(), actor="demo")
        shown = Transcript(server, group, {ann.id: "Ann", bob.id: "Bob"}, mail)
        scene = Scene(server, look, shown, mail)
        await ledger_and_link(scene, bob, folder)
        await _conversations(scene, group, sam, ann, bob)
        await _email(scene, group, sam)
        await refund(scene, group, sam, ada, bob)
        await watch_and_report(scene, group, sam, ada)
        await _in_russian(scene, ivan)
        print(
            f"\nThe note stayed internal: Ann saw {len(server.sent_to(ann.id))} messages, "
            f"none of them the note. Telegram answered 429 "
            f"{server.stats.too_many_requests_total} times."
        )


async def _conversations(
    scene: Scene, group: SimChat, sam: SimUser, ann: SimUser, bob: SimUser
) -> None:
    await scene.customer_writes(
        ann, "Hi! I topped up 50 USDT two hours ago and my balance still shows 0.", 1
    )
    await scene.customer_writes(bob, "Our API key returns 429 on every call since this morning.", 2)
    ann_ticket, bob_ticket = (t.id for t in await scene.tickets())
    await scene.topic(bob_ticket)
    await scene.settle(0.6)

    print("\n— The queue: Bob is Pro, so he comes first while neither ticket is at risk —")
    await print_queue(scene.look)

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
    await print_queue(scene.look)


async def _email(scene: Scene, group: SimChat, sam: SimUser) -> None:
    """Carol writes by email, Sam answers in the ticket's topic, Carol answers the answer."""
    print("\n— Email: Carol writes to the support address —")

    async def listening() -> bool:
        return scene.mail.imap.idling > 0  # the intake waits in IMAP IDLE for new mail

    await until(listening)
    sent_before = len(scene.mail.received())  # Bob's link code went out before
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

    await until(opened)
    topic = await scene.topic(number)
    await scene.sent_mails(sent_before + 1)  # the receipt
    await scene.settle(0.5)

    await scene.agent_writes(
        sam,
        group,
        number,
        "Hi Carol, done: the corrected invoice INV-2026-1142-R1 with DE987654321 is in your "
        "account under Billing → Invoices.",
    )
    reply = (await scene.sent_mails(sent_before + 2))[-1]
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

    await until(joined)
    await scene.settle(0.8)
    tickets = await scene.tickets()
    print(
        f"\nCarol's answer named our reply ({reply['Message-ID']}) in In-Reply-To, so it joined "
        f"ticket #{number} in topic {topic}; still {len(tickets)} tickets in all."
    )
    print("\n— The queue: Carol's answer waits on us —")
    await print_queue(scene.look)


async def _in_russian(scene: Scene, ivan: SimUser) -> None:
    """Ivan's Telegram is in Russian: every automatic text he gets is too, until he picks
    another language; the agents' group stays in English (AGENT_LANGUAGE)."""
    print("\n— Languages: Ivan's Telegram speaks Russian, so the bot does too —")
    scene.shown.follow(ivan)
    number = len(await scene.tickets()) + 1
    await scene.customer_writes(
        ivan, "Здравствуйте! Пополнил баланс на 30 USDT, но он всё ещё пустой.", number
    )
    for command, answer in (
        ("", "Номер вашего обращения"),  # the receipt
        ("/status", "Ваши открытые обращения"),
        ("/language es", "Hecho"),
        ("/status", "Sus tickets abiertos"),
    ):
        if command:
            scene.shown.person(ivan, "bot", command)
            await scene.server.user_sends(ivan, text=command)

        async def answered(needle: str = answer) -> bool:
            return any(needle in (m.text or "") for m in scene.server.sent_to(ivan.id))

        await until(answered)
        await scene.settle(0.3)
