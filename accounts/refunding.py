"""Refunds as agents run them: the panel, confirmation, admin approval and execution.

Execution is one transaction: the account row locked, the plan computed again, the refund row
(unique `key`, derived from the plan), one payout per payment (unique `payment_id`), ledger
debits for the top-up parts, the plan change if the Pro upgrade goes back, the customer's notice
and the audit entry. A second confirmation of the same plan finds the first refund; a plan that
changed since the panel was shown is refused with the new panel instead of paying a different
amount. Every refusal is audited and changes nothing else.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from accounts.ledger import Identity, Owner, balance, owner_of_customer
from accounts.money import cents
from accounts.notices import notify_customer
from accounts.refunds import AccountFacts, PaymentFacts, Purpose, RefundPlan, plan_refund
from accounts.tables import Account, AccountLink, LedgerEntry, Payment, Payout, Refund
from supportbot.templates import Templates
from tickets import audit
from tickets.agents import active_agent
from tickets.errors import NotAllowed, NotFound, SupportbotError
from tickets.model import Role, TicketStatus
from tickets.ports import Clock, Renderer, utcnow
from tickets.tables import Agent, Customer, CustomerEmail, Ticket

log = logging.getLogger(__name__)

# Payments older than this are not even listed as "window ended" on the panel.
LOOKBACK = timedelta(days=14)
DEFAULT_APPROVAL_ABOVE = Decimal(100)
_FINGERPRINT = re.compile(r"[0-9a-f]{12}")


class RefundStatus(StrEnum):
    AWAITING_APPROVAL = "awaiting_approval"
    EXECUTED = "executed"
    REFUSED = "refused"


class RefundRefused(SupportbotError):
    """A refund action that cannot go ahead; nothing was changed."""


class PlanChanged(RefundRefused):
    """What is refundable changed since the panel was shown; `panel` is the new one."""

    def __init__(self, message: str, panel: Panel | None) -> None:
        super().__init__(message)
        self.panel = panel


@dataclass(frozen=True)
class Panel:
    """What an agent sees before confirming: the plan, and what confirming would need."""

    ticket: int
    plan: RefundPlan
    identity: Identity
    verified: bool  # the agent vouched for an unverified identity (`/refund N verified`)
    needs_approval: bool
    can_confirm: bool
    text: str


@dataclass(frozen=True)
class RefundResult:
    """What became of a confirmation or an approval."""

    refund_id: int
    ticket: int | None
    status: RefundStatus
    total: Decimal
    repeated: bool  # the refund existed already (double tap, retry, second agent)
    text: str


async def load_plan(session: AsyncSession, account: Account, now: datetime) -> RefundPlan:
    """The refund plan of an account as the database holds it now."""
    rows = await session.execute(
        select(Payment, Payout.id)
        .outerjoin(Payout, Payout.payment_id == Payment.id)
        .where(
            Payment.account_id == account.id,
            or_(Payment.paid_at > now - LOOKBACK, Payment.purpose == Purpose.PRO_UPGRADE.value),
        )
    )
    payments = [
        PaymentFacts(
            id=p.id,
            purpose=Purpose(p.purpose),
            amount=p.amount_usd,
            currency=p.currency,
            chain=p.chain,
            wallet=p.wallet,
            paid_at=p.paid_at,
            refunded=payout is not None,
        )
        for p, payout in rows
    ]
    facts = AccountFacts(
        id=account.id,
        email=account.email,
        plan=account.plan,
        balance=await balance(session, account.id),
        pro_since=account.pro_since,
        pro_limits_used_at=account.pro_limits_used_at,
    )
    return plan_refund(facts, payments, now)


def plan_context(plan: RefundPlan) -> dict[str, Any]:
    """What the templates need to show a plan."""
    return {"plan": plan, "usd": cents}


async def eligibility_summary(
    session: AsyncSession, account: Account, now: datetime, templates: Renderer | None = None
) -> str:
    """A few lines saying what the account could have refunded now (for /balance and tickets)."""
    renderer = templates or Templates()
    plan = await load_plan(session, account, now)
    return renderer.render("refunds/summary", **plan_context(plan))


class RefundDesk:
    """The refund operations agents trigger, each one transaction, checked and audited."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        templates: Renderer,
        *,
        clock: Clock = utcnow,
        approval_above: Decimal = DEFAULT_APPROVAL_ABOVE,
        mail_domain: str = "supportbot.invalid",
        wakeup: Callable[[], None] | None = None,
    ) -> None:
        self.sessions = sessions
        self._templates = templates
        self._clock = clock
        self.approval_above = approval_above
        self._mail_domain = mail_domain
        self._wakeup = wakeup or (lambda: None)

    # -- the panel ----------------------------------------------------------------------

    async def panel(self, number: int, telegram_id: int, *, verified: bool = False) -> Panel:
        """Show what a refund of the ticket's account would pay back, and why."""
        async with (
            self._refusals(telegram_id, "refund_panel", number),
            self.sessions.begin() as session,
        ):
            agent = await _agent(session, telegram_id)
            ticket, owner = await _ticket_owner(session, number)
            panel = await self._panel(session, ticket, owner, verified)
            audit.record(
                session,
                at=panel.plan.at,
                action="refund_panel",
                agent=agent,
                ticket_id=ticket.id,
                account=owner.account.email,
                identity=owner.identity.value,
                total=str(panel.plan.total),
                key=panel.plan.key,
            )
            return panel

    async def _panel(
        self, session: AsyncSession, ticket: Ticket, owner: Owner, verified: bool
    ) -> Panel:
        plan = await load_plan(session, owner.account, self._clock())
        unverified = owner.identity is Identity.UNVERIFIED
        needs_approval = plan.total > self.approval_above
        can_confirm = plan.total > 0 and (verified or not unverified)
        text = self._templates.render(
            "agents/refund_panel",
            ticket=ticket.id,
            identity=owner.identity.value,
            unverified=unverified,
            verified=verified,
            needs_approval=needs_approval,
            approval_above=cents(self.approval_above),
            can_confirm=can_confirm,
            **plan_context(plan),
        )
        return Panel(ticket.id, plan, owner.identity, verified, needs_approval, can_confirm, text)

    # -- confirming ---------------------------------------------------------------------

    async def confirm(
        self, number: int, telegram_id: int, fingerprint: str, *, verified: bool = False
    ) -> RefundResult:
        """Confirm the plan the agent saw: execute it, or hold it for an admin's approval."""
        tried: dict[str, str] = {}
        async with self._refusals(telegram_id, "refund_confirm", number):
            if not _FINGERPRINT.fullmatch(fingerprint):
                raise RefundRefused("that confirmation does not name a refund plan")
            try:
                return await self._confirm(number, telegram_id, fingerprint, verified, tried)
            except IntegrityError:
                # Another transaction inserted the same refund or a payout of the same payment
                # first (only possible where the account lock is not honoured).
                return await self._existing(tried.get("key"), number)

    async def _confirm(
        self, number: int, telegram_id: int, fingerprint: str, verified: bool, tried: dict[str, str]
    ) -> RefundResult:
        async with self.sessions.begin() as session:
            agent = await _agent(session, telegram_id)
            ticket, owner = await _ticket_owner(session, number)
            account = await _lock_account(session, owner.account.id)
            panel = await self._panel(session, ticket, owner, verified)
            plan = panel.plan
            tried["key"] = plan.key
            earlier = await session.scalar(
                select(Refund).where(
                    Refund.account_id == account.id,
                    Refund.key.startswith(f"refund:{account.id}:{fingerprint}", autoescape=True),
                    Refund.status != RefundStatus.REFUSED.value,
                )
            )
            if earlier is not None:  # a double tap, a retry, a second agent: the same refund
                return self._result(earlier, repeated=True)
            if plan.fingerprint != fingerprint:
                raise PlanChanged(
                    "what is refundable changed since the panel was shown; nothing was "
                    "refunded. Check the new panel.",
                    panel,
                )
            if plan.total <= 0:
                raise RefundRefused(f"nothing is refundable for {owner.account.email} now")
            if owner.identity is Identity.UNVERIFIED and not verified:
                raise RefundRefused(
                    "the customer's identity is not verified: verify it, then use "
                    f"/refund {ticket.id} verified"
                )
            now = plan.at
            refund = Refund(
                account_id=account.id,
                ticket_id=ticket.id,
                key=plan.key,
                status=RefundStatus.AWAITING_APPROVAL.value,
                total=plan.total,
                includes_pro_upgrade=plan.includes_upgrade,
                requested_by=agent.id,
                created_at=now,
            )
            session.add(refund)
            await session.flush()
            audit.record(
                session,
                at=now,
                action="refund_confirm",
                agent=agent,
                ticket_id=ticket.id,
                refund_id=refund.id,
                account=account.email,
                total=str(plan.total),
                identity=owner.identity.value,
                vouched=verified,
                needs_approval=panel.needs_approval,
            )
            if not panel.needs_approval:
                await self._execute(session, refund, plan, account, agent, now)
            result = self._result(refund, repeated=False)
        self._wakeup()
        return result

    # -- approving ----------------------------------------------------------------------

    async def approve(
        self, refund_id: int, telegram_id: int, *, ticket: int | None = None
    ) -> RefundResult:
        """An admin (not the requester) approves a held refund; it executes if still the same.

        `ticket` is the ticket whose button was pressed: a refund of another ticket is refused.
        A refusal is audited on the refund's own ticket.
        """
        tried: dict[str, str] = {}
        try:
            try:
                return await self._approve(refund_id, telegram_id, ticket, tried)
            except IntegrityError:
                return await self._existing(tried.get("key"), None)
        except SupportbotError as error:
            number = ticket if ticket is not None else await self._ticket_of(refund_id)
            await self.record_refusal(
                telegram_id, "refund_approve", str(error), number, refund_id=refund_id
            )
            raise

    async def _ticket_of(self, refund_id: int) -> int | None:
        async with self.sessions() as session:
            return await session.scalar(select(Refund.ticket_id).where(Refund.id == refund_id))

    async def _approve(
        self, refund_id: int, telegram_id: int, ticket: int | None, tried: dict[str, str]
    ) -> RefundResult:
        async with self.sessions.begin() as session:
            agent = await _agent(session, telegram_id)
            if agent.role != Role.ADMIN.value:
                raise NotAllowed("only an admin can approve a refund")
            refund = await session.get(Refund, refund_id)
            if refund is None:
                raise NotFound(f"there is no refund {refund_id}")
            if ticket is not None and refund.ticket_id != ticket:
                raise RefundRefused(f"refund {refund_id} is not a refund of #{ticket}")
            tried["key"] = refund.key
            account = await _lock_account(session, refund.account_id)
            await session.refresh(refund, with_for_update=True)
            if refund.status == RefundStatus.EXECUTED.value:
                return self._result(refund, repeated=True)
            if refund.status != RefundStatus.AWAITING_APPROVAL.value:
                raise RefundRefused(f"refund {refund_id} was refused and cannot be approved")
            if refund.requested_by == agent.id:
                raise NotAllowed("a second admin must approve: you confirmed this refund")
            plan = await load_plan(session, account, self._clock())
            now = plan.at
            if plan.key != refund.key:
                refund.status = RefundStatus.REFUSED.value
                refund.key = f"{refund.key}:void:{refund.id}"  # the same plan may come back
                audit.record(
                    session,
                    at=now,
                    action="refund_void",
                    agent=agent,
                    ticket_id=refund.ticket_id,
                    refund_id=refund.id,
                    reason="the plan changed before approval",
                )
                result = self._result(refund, repeated=False)
            else:
                refund.approved_by = agent.id
                audit.record(
                    session,
                    at=now,
                    action="refund_approve",
                    agent=agent,
                    ticket_id=refund.ticket_id,
                    refund_id=refund.id,
                    total=str(refund.total),
                )
                await self._execute(session, refund, plan, account, agent, now)
                result = self._result(refund, repeated=False)
        self._wakeup()
        if result.status is RefundStatus.REFUSED:
            raise PlanChanged(
                f"refund {refund_id} no longer matches what is refundable, so it was voided; "
                "open the panel again",
                None,
            )
        return result

    # -- executing ----------------------------------------------------------------------

    async def _execute(
        self,
        session: AsyncSession,
        refund: Refund,
        plan: RefundPlan,
        account: Account,
        agent: Agent,
        now: datetime,
    ) -> None:
        for part in plan.payouts:
            session.add(
                Payout(
                    refund_id=refund.id,
                    payment_id=part.payment_id,
                    amount_usd=part.amount,
                    currency=part.currency,
                    chain=part.chain,
                    wallet=part.wallet,
                    status="pending",
                    created_at=now,
                )
            )
        for part in plan.parts:
            session.add(
                LedgerEntry(
                    account_id=account.id,
                    kind="refund",
                    amount=-part.amount,
                    at=now,
                    payment_id=part.payment_id,
                    refund_id=refund.id,
                    note=f"refund {refund.id} to {part.wallet}"[:500],
                )
            )
        if plan.includes_upgrade:
            account.plan = "basic"
            account.updated_at = now
            await _back_on_basic(session, account)
        refund.status = RefundStatus.EXECUTED.value
        refund.executed_at = now
        await session.flush()  # a payout of an already-refunded payment fails here
        where = None
        if refund.ticket_id is not None:
            where = await notify_customer(
                session,
                self._templates,
                refund.ticket_id,
                "refunds/customer_refund",
                at=now,
                mail_domain=self._mail_domain,
                refund_id=refund.id,
                **plan_context(plan),
            )
        audit.record(
            session,
            at=now,
            action="refund_execute",
            agent=agent,
            ticket_id=refund.ticket_id,
            refund_id=refund.id,
            account=account.email,
            total=str(plan.total),
            debited=str(plan.balance_part),
            pro_upgrade=plan.includes_upgrade,
            payouts=[
                {"payment": p.payment_id, "amount": str(p.amount), "wallet": p.wallet}
                for p in plan.payouts
            ],
            customer_told=where,
        )

    def _result(self, refund: Refund, *, repeated: bool) -> RefundResult:
        status = RefundStatus(refund.status)
        text = self._templates.render(
            "agents/refund_result",
            refund_id=refund.id,
            status=status.value,
            total=cents(refund.total),
            repeated=repeated,
            upgrade=refund.includes_pro_upgrade,
        )
        return RefundResult(refund.id, refund.ticket_id, status, refund.total, repeated, text)

    async def _existing(self, key: str | None, number: int | None) -> RefundResult:
        async with self.sessions() as session:
            refund = await session.scalar(select(Refund).where(Refund.key == key)) if key else None
        if refund is None:
            target = f" /refund {number}" if number is not None else ""
            raise RefundRefused(
                "a payment of this refund was refunded at the same moment by someone else; "
                f"nothing more was refunded. Open the panel again{target}."
            )
        return self._result(refund, repeated=True)

    # -- refusals -----------------------------------------------------------------------

    @asynccontextmanager
    async def _refusals(
        self, telegram_id: int, action: str, number: int | None, **details: Any
    ) -> AsyncIterator[None]:
        """Audit a refusal leaving the block (in its own transaction), then let it go on."""
        try:
            yield
        except SupportbotError as error:
            await self.record_refusal(telegram_id, action, str(error), number, **details)
            raise

    async def record_refusal(
        self, telegram_id: int, action: str, reason: str, number: int | None, **details: Any
    ) -> None:
        """Audit a refused refund action; the refused transaction itself rolled back."""
        async with self.sessions.begin() as session:
            agent = await session.scalar(select(Agent).where(Agent.telegram_id == telegram_id))
            exists = number is not None and await session.get(Ticket, number) is not None
            audit.record(
                session,
                at=self._clock(),
                action=f"refused:{action}",
                agent=agent,
                actor=f"telegram:{telegram_id}",
                ticket_id=number if exists else None,
                reason=reason[:500],
                **details,
            )


async def _agent(session: AsyncSession, telegram_id: int) -> Agent:
    agent = await active_agent(session, telegram_id)
    if agent is None:
        raise NotAllowed("only agents can refund")
    return agent


async def _ticket_owner(session: AsyncSession, number: int) -> tuple[Ticket, Owner]:
    ticket = await session.get(Ticket, number)
    if ticket is None:
        raise NotFound(f"there is no ticket #{number}")
    owner = await owner_of_customer(session, ticket.customer_id)
    if owner is None:
        addresses = (
            await session.scalars(
                select(CustomerEmail.address).where(CustomerEmail.customer_id == ticket.customer_id)
            )
        ).all()
        known = f" ({', '.join(addresses)})" if addresses else ""
        raise RefundRefused(
            f"no account matches the customer of #{number}{known}: ask them to /link it "
            "or to write from the account's email"
        )
    return ticket, owner


async def _lock_account(session: AsyncSession, account_id: int) -> Account:
    """The account row, locked for this transaction (PostgreSQL; SQLite writes one at a time)."""
    account = await session.get(Account, account_id, with_for_update=True, populate_existing=True)
    assert account is not None
    return account


async def _back_on_basic(session: AsyncSession, account: Account) -> None:
    """The account's customers and their open tickets move to the Basic tier."""
    linked = select(AccountLink.customer_id).where(AccountLink.account_id == account.id)
    by_mail = select(CustomerEmail.customer_id).where(CustomerEmail.address == account.email)
    customers = or_(Customer.id.in_(linked), Customer.id.in_(by_mail))
    await session.execute(update(Customer).where(customers).values(plan="basic"))
    await session.execute(
        update(Ticket)
        .where(
            Ticket.status == TicketStatus.OPEN.value,
            or_(Ticket.customer_id.in_(linked), Ticket.customer_id.in_(by_mail)),
        )
        .values(plan="basic")
    )
