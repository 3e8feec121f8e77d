"""The demo's later scenes: a refund from request to payout, a breach warning and a report."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import select, update

from accounts.tables import Account, AccountLink, LedgerEntry, Payment, Payout
from bot.local_api import SentMessage, SimChat, SimUser
from supportbot.demo_stage import (
    Scene,
    until,
)
from tickets.ports import utcnow
from tickets.tables import Customer, Ticket


async def refund(scene: Scene, group: SimChat, sam: SimUser, ada: SimUser, bob: SimUser) -> None:
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
