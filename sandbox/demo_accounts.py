"""The demo's account scenes: the ledger import and /link, a refund from request to payout, a
breach warning and a report."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select, update

from accounts.importer import import_file
from accounts.tables import Payout
from sandbox.demo_stage import (
    Scene,
    until,
)
from sandbox.telegram import SentMessage, SimChat, SimUser
from tickets.ports import utcnow
from tickets.tables import Ticket

LEDGER_COLUMNS = (
    "type,id,email,plan,pro_since,account,purpose,amount_usd,crypto_amount,currency,chain,"
    "wallet,tx_hash,paid_at,at,note"
)


def ledger_export(now: datetime) -> str:
    """The billing system's export the demo imports: Bob bought Pro two days ago, topped up 40
    USDT yesterday and used 5 of it; Ann's account is on the free Basic plan."""

    def at(ago: timedelta) -> str:
        return (now - ago).strftime("%Y-%m-%dT%H:%M:%SZ")

    return "\n".join(
        [
            LEDGER_COLUMNS,
            f"account,ACC-1001,bob@example.com,pro,{at(timedelta(days=2))},,,,,,,,,,,",
            "account,ACC-1002,ann@example.com,basic,,,,,,,,,,,,",
            f"payment,PAY-1,,,,ACC-1001,pro_upgrade,19,19,BTC,bitcoin,bc1qbobwallet7x,"
            f"0xdemopro,{at(timedelta(days=2))},,",
            f"payment,PAY-2,,,,ACC-1001,topup,40,40,USDT,tron,TBobTronWallet9,0xdemotopup,"
            f"{at(timedelta(days=1))},,",
            f"usage,USE-1,,,,ACC-1001,,5,,,,,,,{at(timedelta(hours=3))},API calls",
            "",
        ]
    )


async def ledger_and_link(scene: Scene, bob: SimUser, folder: Path) -> None:
    """The business's billing export is imported; Bob links his chat to his account by code,
    and his plan, Pro, comes from the ledger from then on."""
    export = folder / "billing-export.csv"
    export.write_text(ledger_export(utcnow()), encoding="utf-8")
    print("— The billing system's export, imported as `supportbot accounts import` does —")
    print("\n".join(f"        │ {line}" for line in export.read_text().splitlines()))
    report = await import_file(
        scene.look.sessions, export, at=utcnow(), templates=scene.look.templates
    )
    print(f"        imported: {report.summary()}")
    print("\n— Bob links his Telegram chat to his account (a code goes to its address) —")
    sent_before = len(scene.mail.received())
    scene.shown.person(bob, "bot", "/link bob@example.com")
    await scene.server.user_sends(bob, text="/link bob@example.com")
    mail = (await scene.sent_mails(sent_before + 1))[-1]
    body = mail.get_body(("plain",))
    found = re.search(r"account: (\d{6})", body.get_content() if body is not None else "")
    assert found is not None, "the code mail carries a code"
    await scene.settle(0.3)
    scene.shown.person(bob, "bot", f"/link {found.group(1)}")
    await scene.server.user_sends(bob, text=f"/link {found.group(1)}")

    def linked() -> bool:
        return any("linked to the account" in (m.text or "") for m in scene.server.sent_to(bob))

    await until(_async(linked))
    await scene.settle(0.3)
    print("\nBob's plan is Pro because the imported ledger says so; nobody set it by hand.")


def _async(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def run() -> bool:
        return check()

    return run


async def refund(scene: Scene, group: SimChat, sam: SimUser, ada: SimUser, bob: SimUser) -> None:
    """Bob asks for his money back; Sam confirms the panel; Ada marks the payouts sent."""
    print(
        "\n— Refunds: Bob's account (linked with /link) has the 40 USDT top-up from yesterday, "
        "5 of it used, and his Pro upgrade of two days ago, Pro limits not used yet — all from "
        "the imported ledger —"
    )
    number = len(await scene.tickets()) + 1
    await scene.customer_writes(bob, "/refund I no longer need the API, sorry", number)

    async def seen() -> bool:
        return any(f"#{number}" in (m.text or "") for m in scene.server.sent_to(group))

    await until(seen)
    await scene.settle(0.5)
    print(
        f"\n(The group has had many messages this minute, so #{number} may first show in a "
        "digest and get its topic a little later; /refund N works from anywhere in the group.)"
    )
    scene.shown.person(sam, "agents' group", f"/refund {number}")
    await scene.server.user_sends(sam, chat=group, text=f"/refund {number}")

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

    await until(paid_out)
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

    await until(told)
    await scene.settle(0.5)
    print(f"\nBob got his money back to the wallets he paid from; #{number} shows it all.")


async def watch_and_report(scene: Scene, group: SimChat, sam: SimUser, ada: SimUser) -> None:
    """Dan's question went unanswered for days: the watch warns the group and calls the admins
    (his wait is moved back in time, the one trick of the demo); then Sam asks for the report."""
    print(
        "\n— The SLA watch: Dan's question has waited four days (the demo moves his wait back "
        "in time); the watch looks every second here, every minute by default —"
    )
    dan = scene.server.add_user("Dan")
    scene.shown.follow(dan)
    number = len(await scene.tickets()) + 1
    await scene.customer_writes(dan, "Is the EU endpoint down? Timeouts since Monday.", number)
    since = utcnow() - timedelta(days=4)
    async with scene.look.sessions.begin() as session:
        await session.execute(
            update(Ticket)
            .where(Ticket.id == number)
            .values(waiting_since=since, due_at=scene.look.policy.due_at(since))
        )

    def told(needle: str) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return any(needle in (m.text or "") for m in scene.server.sent_to(group))

        return check

    await until(told(f"#{number} · BASIC BREACHED the 24-hour SLA"))
    await until(told(f"Admins: {ada.first_name}"))
    await scene.settle(1.0)

    print("\n— The month's SLA report, asked for in the group —")
    scene.shown.person(sam, "agents' group", "/report")
    await scene.server.user_sends(sam, chat=group, text="/report")

    async def charted() -> bool:
        return any(m.media == "photo" for m in scene.server.sent_to(group))

    await until(charted)
    await scene.settle(0.5)
