"""Payouts: money a refund sends back, pending until finance sends it and records the hash.

Finance lists and exports them (`supportbot payouts list|export`), an admin marks one sent
(`/paid ID TXHASH` or `supportbot payouts mark-sent`), and the customer is told with the hash.
A payout pending longer than `OVERDUE` is reported to the agents once (`alerted_at`).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TextIO

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from accounts.money import cents
from accounts.notices import notify_customer
from accounts.tables import Account, Payout, Refund
from tickets import audit
from tickets.agents import active_agent
from tickets.errors import InvalidAction, NotAllowed, NotFound
from tickets.model import Role
from tickets.notices import notify_agents
from tickets.ports import Clock, Renderer, utcnow
from tickets.tables import Agent

OVERDUE = timedelta(days=5)
_TX_HASH = re.compile(r"[A-Za-z0-9:_\-]{8,200}")


@dataclass(frozen=True)
class PayoutView:
    """One payout as finance reads it."""

    id: int
    refund_id: int
    ticket: int | None
    account: str
    amount_usd: Decimal
    currency: str
    chain: str
    wallet: str
    status: str
    tx_hash: str | None
    created_at: datetime
    sent_at: datetime | None


async def payout_list(session: AsyncSession, status: str | None = None) -> list[PayoutView]:
    """Payouts oldest first (pending ones are the work to do), optionally of one status."""
    query = (
        select(Payout, Refund.ticket_id, Account.email)
        .join(Refund, Refund.id == Payout.refund_id)
        .join(Account, Account.id == Refund.account_id)
        .order_by(Payout.created_at, Payout.id)
    )
    if status is not None:
        query = query.where(Payout.status == status)
    return [
        PayoutView(
            id=p.id,
            refund_id=p.refund_id,
            ticket=ticket,
            account=email,
            amount_usd=p.amount_usd,
            currency=p.currency,
            chain=p.chain,
            wallet=p.wallet,
            status=p.status,
            tx_hash=p.tx_hash,
            created_at=p.created_at,
            sent_at=p.sent_at,
        )
        for p, ticket, email in await session.execute(query)
    ]


CSV_COLUMNS = (
    "payout_id",
    "refund_id",
    "ticket",
    "account",
    "amount_usd",
    "currency",
    "chain",
    "wallet",
    "status",
    "tx_hash",
    "created_at",
    "sent_at",
)


def write_csv(payouts: Sequence[PayoutView], out: TextIO) -> None:
    """The payouts as CSV for finance: exact amounts, ISO times, one row each."""
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for p in payouts:
        writer.writerow(
            [
                p.id,
                p.refund_id,
                p.ticket or "",
                p.account,
                f"{p.amount_usd:f}",
                p.currency,
                p.chain,
                p.wallet,
                p.status,
                p.tx_hash or "",
                p.created_at.isoformat(),
                p.sent_at.isoformat() if p.sent_at else "",
            ]
        )


class PayoutDesk:
    """Marking payouts sent and watching for overdue ones; each change audited."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        templates: Renderer,
        *,
        clock: Clock = utcnow,
        mail_domain: str = "supportbot.invalid",
        wakeup: Callable[[], None] | None = None,
    ) -> None:
        self.sessions = sessions
        self._templates = templates
        self._clock = clock
        self._mail_domain = mail_domain
        self._wakeup = wakeup or (lambda: None)

    async def mark_sent(
        self, payout_id: int, tx_hash: str, *, telegram_id: int | None = None, actor: str = "cli"
    ) -> str:
        """Record that finance sent a payout; the customer is told with the hash.

        From Telegram only an admin may do it (`telegram_id`); the CLI is trusted as finance.
        Returns the text agents are shown.
        """
        now = self._clock()
        try:
            return await self._mark_sent(payout_id, tx_hash.strip(), telegram_id, actor, now)
        except (NotAllowed, NotFound, InvalidAction) as error:
            async with self.sessions.begin() as session:
                agent = await _agent_or_none(session, telegram_id)
                audit.record(
                    session,
                    at=now,
                    action="refused:payout_sent",
                    agent=agent,
                    actor=f"telegram:{telegram_id}" if telegram_id is not None else actor,
                    payout_id=payout_id,
                    tx_hash=tx_hash[:200],
                    reason=str(error)[:500],
                )
            raise

    async def _mark_sent(
        self, payout_id: int, tx_hash: str, telegram_id: int | None, actor: str, now: datetime
    ) -> str:
        async with self.sessions.begin() as session:
            agent = await _agent_or_none(session, telegram_id)
            if telegram_id is not None and (agent is None or agent.role != Role.ADMIN.value):
                raise NotAllowed("only an admin can mark a payout sent")
            if not _TX_HASH.fullmatch(tx_hash):
                raise InvalidAction(
                    "that does not look like a transaction hash (8 to 200 letters, digits, - _ :)"
                )
            payout = await session.get(Payout, payout_id, with_for_update=True)
            if payout is None:
                raise NotFound(f"there is no payout {payout_id}")
            if payout.status == "sent":
                raise InvalidAction(
                    f"payout {payout_id} was already marked sent ({payout.tx_hash})"
                )
            refund = await session.get(Refund, payout.refund_id)
            assert refund is not None
            payout.status = "sent"
            payout.tx_hash = tx_hash
            payout.sent_at = now
            facts: dict[str, Any] = {
                "payout_id": payout.id,
                "amount": cents(payout.amount_usd),
                "currency": payout.currency,
                "chain": payout.chain,
                "wallet": payout.wallet,
                "tx_hash": tx_hash,
            }
            told = None
            if refund.ticket_id is not None:
                told = await notify_customer(
                    session,
                    self._templates,
                    refund.ticket_id,
                    "refunds/payout_sent",
                    at=now,
                    mail_domain=self._mail_domain,
                    amount_usd=payout.amount_usd,
                    **facts,
                )
            audit.record(
                session,
                at=now,
                action="payout_sent",
                agent=agent,
                actor=None if agent is not None else actor,
                ticket_id=refund.ticket_id,
                refund_id=refund.id,
                amount=str(payout.amount_usd),
                customer_told=told,
                **{k: v for k, v in facts.items() if k != "amount"},
            )
            text = self._templates.render("agents/payout_sent", customer_told=told, **facts)
        self._wakeup()
        return text

    async def alert_overdue(self, *, days: timedelta = OVERDUE) -> int:
        """Tell the agents once about each payout pending longer than `days`; returns how many."""
        now = self._clock()
        async with self.sessions.begin() as session:
            claimed = (
                await session.execute(
                    update(Payout)
                    .where(
                        Payout.status == "pending",
                        Payout.alerted_at.is_(None),
                        Payout.created_at < now - days,
                    )
                    .values(alerted_at=now)
                    .returning(Payout.id)
                )
            ).scalars()
            ids = sorted(claimed.all())
            for payout_id in ids:
                payout = await session.get(Payout, payout_id)
                assert payout is not None
                refund = await session.get(Refund, payout.refund_id)
                ticket = refund.ticket_id if refund is not None else None
                notify_agents(
                    session,
                    self._templates,
                    "payout_overdue",
                    at=now,
                    ticket_id=ticket,
                    payout_id=payout.id,
                    refund_id=payout.refund_id,
                    amount=cents(payout.amount_usd),
                    currency=payout.currency,
                    chain=payout.chain,
                    wallet=payout.wallet,
                    created_at=payout.created_at.isoformat(),
                    days=days.days,
                )
                audit.record(
                    session,
                    at=now,
                    action="payout_overdue",
                    ticket_id=ticket,
                    payout_id=payout.id,
                    amount=str(payout.amount_usd),
                )
        if ids:
            self._wakeup()
        return len(ids)


async def _agent_or_none(session: AsyncSession, telegram_id: int | None) -> Agent | None:
    if telegram_id is None:
        return None
    return await active_agent(session, telegram_id)
